"""three-year cultivation plans and report read models (issue 19)

Revision ID: f19000000003
Revises: f19000000002
Create Date: 2026-12-01 19:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f19000000003"
down_revision: str | None = "f19000000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A program's cultivation plan as an admin set it (PUT /programs/{key}/plan), replacing the file's.
    op.create_table(
        "cultivation_plans",
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("tier", sa.String(length=32), nullable=False),
        sa.Column("target", sa.Integer(), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("target >= 0", name=op.f("ck_cultivation_plans_target_not_negative")),
        sa.CheckConstraint("year BETWEEN 2000 AND 2100", name=op.f("ck_cultivation_plans_year_plausible")),
        sa.PrimaryKeyConstraint("program", "year", "tier", name=op.f("pk_cultivation_plans")),
    )
    # The cohort report (services/reports) reaches everything from a program's (and batch's) applications,
    # and the payouts from their recognitions.
    op.create_index(
        "ix_applications_program_batch_tier", "applications", ["program", "batch", "tier"], unique=False
    )
    op.create_index("ix_bridge_loans_recognition_id", "bridge_loans", ["recognition_id"], unique=False)
    op.create_index("ix_listing_rewards_recognition_id", "listing_rewards", ["recognition_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_listing_rewards_recognition_id", table_name="listing_rewards")
    op.drop_index("ix_bridge_loans_recognition_id", table_name="bridge_loans")
    op.drop_index("ix_applications_program_batch_tier", table_name="applications")
    op.drop_table("cultivation_plans")
