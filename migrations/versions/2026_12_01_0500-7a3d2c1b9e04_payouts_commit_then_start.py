"""payouts are committed before their workflow starts: drawdowns, bridge loans and listing rewards get
``workflow_started`` as applications have, and every such table a partial index for the reconciler

Revision ID: 7a3d2c1b9e04
Revises: 5e1f0a7c3b21
Create Date: 2026-12-01 05:00:00+00:00

One write-then-start protocol for both domains (services/temporal.py): the row is committed with
``workflow_started`` false, its workflow is started after the commit, and the worker's reconciler starts the
workflow of any row still unstarted after its period. Payouts from before this revision were started before
their request committed, so they are marked started.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7a3d2c1b9e04"
down_revision: str | None = "5e1f0a7c3b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAYOUT_TABLES = ("drawdowns", "bridge_loans", "listing_rewards")


def upgrade() -> None:
    for table in PAYOUT_TABLES:
        op.add_column(
            table, sa.Column("workflow_started", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        op.execute(f"UPDATE {table} SET workflow_started = true")
    for table in ("applications", *PAYOUT_TABLES):
        op.create_index(
            f"ix_{table}_unstarted",
            table,
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("NOT workflow_started"),
        )


def downgrade() -> None:
    for table in ("applications", *PAYOUT_TABLES):
        op.drop_index(f"ix_{table}_unstarted", table_name=table, postgresql_where=sa.text("NOT workflow_started"))
    for table in PAYOUT_TABLES:
        op.drop_column(table, "workflow_started")
