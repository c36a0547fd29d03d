"""limits shared across API replicas (issue 16)

Revision ID: f16000000001
Revises: e0a1b0c0a001
Create Date: 2026-12-01 16:00:00+00:00

``rate_limits`` holds the rate limits' state (services/ratelimit.py): one row per caller or client address
being limited, with its GCRA theoretical arrival time. UNLOGGED: a crash empties it, which only forgets the
limits (services/ratelimit_models.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f16000000001"
down_revision: str | None = "e0a1b0c0a001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("rate_limits")
