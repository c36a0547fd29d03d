"""finance inbox: indexes for GET /payouts and GET /drawdowns (issue 13)

Revision ID: d0c5e0000003
Revises: d0c5e0000002
Create Date: 2026-12-01 07:00:00+00:00

The inbox lists the payouts awaiting approval first, oldest first, then the rest: each payout table gets a
partial index of (created_at, id) over the few rows awaiting approval, so that segment is walked in order
and stops after a page however many payouts were decided before. GET /drawdowns filters by status like the
other payout lists (bridge loans and listing rewards have their (status, created_at) index already).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d0c5e0000003"
down_revision: str | None = "d0c5e0000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAYOUT_TABLES = ("drawdowns", "bridge_loans", "listing_rewards")


def upgrade() -> None:
    for table in PAYOUT_TABLES:
        op.create_index(
            f"ix_{table}_awaiting",
            table,
            ["created_at", "id"],
            postgresql_where=sa.text("status = 'pending_approval'"),
        )
    op.create_index("ix_drawdowns_status_created_at", "drawdowns", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_drawdowns_status_created_at", table_name="drawdowns")
    for table in PAYOUT_TABLES:
        op.drop_index(f"ix_{table}_awaiting", table_name=table)
