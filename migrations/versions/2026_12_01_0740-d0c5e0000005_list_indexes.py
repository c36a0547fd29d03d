"""every list's order has an index: the lists walk (created_at, id) - credit lines (opened_at, id) - in
either direction and stop after a page, where a table without one was read whole and sorted

Revision ID: d0c5e0000005
Revises: d0c5e0000004
Create Date: 2026-12-01 07:40:00+00:00

Found by tests/platform/test_query_plans.py, which plans every list query with sequential scans disabled.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "d0c5e0000005"
down_revision: str | None = "d0c5e0000004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "applications": ("created_at", "id"),
    "recognitions": ("created_at", "id"),
    "credit_lines": ("opened_at", "id"),
    "disbursements": ("created_at", "id"),
    "drawdowns": ("created_at", "id"),
    "bridge_loans": ("created_at", "id"),
    "listing_rewards": ("created_at", "id"),
}


def upgrade() -> None:
    for table, columns in INDEXES.items():
        op.create_index(f"ix_{table}_{'_'.join(columns)}", table, list(columns))


def downgrade() -> None:
    for table, columns in INDEXES.items():
        op.drop_index(f"ix_{table}_{'_'.join(columns)}", table_name=table)
