"""bridge loans qualified by a cultivation-pool membership (issue 19, item 2)

A program's bridge fund may be open to its cultivation pool (``bridge_pool.open_to_pool_members``): such a
loan has no recognition. ``bridge_loans.recognition_id`` becomes nullable and ``qualified_by`` says what
qualified each loan - ``recognition`` (every loan before this revision) or ``pool`` - with a CHECK that a
loan has a recognition exactly when one qualified it.

Revision ID: f19020000001
Revises: f19000000003
Create Date: 2026-12-01 19:30:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f19020000001"
down_revision: str | None = "f19000000003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "bridge_loans",
        sa.Column("qualified_by", sa.String(length=16), server_default="recognition", nullable=False),
    )
    op.alter_column("bridge_loans", "recognition_id", existing_type=sa.Uuid(), nullable=True)
    op.create_check_constraint(
        op.f("ck_bridge_loans_qualification_known"),
        "bridge_loans",
        "(qualified_by = 'recognition' AND recognition_id IS NOT NULL)"
        " OR (qualified_by = 'pool' AND recognition_id IS NULL)",
    )


def downgrade() -> None:
    # Fails (NOT NULL) while a loan a pool membership qualified exists: it has no recognition to go back to.
    op.drop_constraint(op.f("ck_bridge_loans_qualification_known"), "bridge_loans", type_="check")
    op.alter_column("bridge_loans", "recognition_id", existing_type=sa.Uuid(), nullable=False)
    op.drop_column("bridge_loans", "qualified_by")
