"""enterprises barred from the cultivation pools' benefits after a revocation for fraud

A revocation for fraud bars the enterprise from applying for ``durations.fraud_bar``; ``pool_bars`` bars it,
for each program's ``durations.fraud_bar`` from the same moment, from what a pool membership gives (a bridge
loan from a fund open to the pool): one row per enterprise, written in the revocation's transaction, never
by a pool import.

Revision ID: f19030000001
Revises: f19020000001
Create Date: 2026-12-01 20:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f19030000001"
down_revision: str | None = "f19020000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pool_bars",
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=1000), nullable=False),
        sa.Column("recognition_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("uscc", name=op.f("pk_pool_bars")),
    )
    op.create_index(op.f("ix_pool_bars_recognition_id"), "pool_bars", ["recognition_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_pool_bars_recognition_id"), table_name="pool_bars")
    op.drop_table("pool_bars")
