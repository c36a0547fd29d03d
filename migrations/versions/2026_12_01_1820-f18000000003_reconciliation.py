"""bank reconciliation: daily statements compared with the ledger, and their mismatches (issue 18)

Revision ID: f18000000003
Revises: f18000000002
Create Date: 2026-12-01 18:20:00+00:00

- ``reconciliation_runs``: one row per statement day (China Standard Time), updated when the day is run
  again: what the statement and the ledger's bank postings counted and totalled, mismatches per kind.
- ``reconciliation_mismatches``: the keys the two sides disagree on, once per run and key.

The downgrade drops both (they are derived: running the days again rebuilds them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f18000000003"
down_revision: str | None = "f18000000002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 2)


def upgrade() -> None:
    op.create_index(
        "ix_disbursements_completed_at",
        "disbursements",
        ["completed_at"],
        postgresql_where=sa.text("completed_at IS NOT NULL"),
    )
    op.create_table(
        "reconciliation_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("statement_count", sa.Integer(), nullable=False),
        sa.Column("statement_total", MONEY, nullable=False),
        sa.Column("posted_count", sa.Integer(), nullable=False),
        sa.Column("posted_total", MONEY, nullable=False),
        sa.Column("paid_not_posted", sa.Integer(), nullable=False),
        sa.Column("posted_not_paid", sa.Integer(), nullable=False),
        sa.Column("amount_differs", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), server_default="1", nullable=False),
        sa.Column("workflow_id", sa.String(length=200), nullable=False),
        sa.Column("first_run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('clean', 'mismatches')", name=op.f("ck_reconciliation_runs_status_known")
        ),
        sa.CheckConstraint(
            "statement_count >= 0 AND posted_count >= 0 AND paid_not_posted >= 0 AND posted_not_paid >= 0 "
            "AND amount_differs >= 0",
            name=op.f("ck_reconciliation_runs_counts_not_negative"),
        ),
        sa.CheckConstraint(
            "(status = 'clean') = (paid_not_posted + posted_not_paid + amount_differs = 0)",
            name=op.f("ck_reconciliation_runs_status_fits_counts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_runs")),
        sa.UniqueConstraint("day", name=op.f("uq_reconciliation_runs_day")),
    )
    op.create_index("ix_reconciliation_runs_starts_at_id", "reconciliation_runs", ["starts_at", "id"])
    op.create_table(
        "reconciliation_mismatches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("statement_amount", MONEY, nullable=True),
        sa.Column("ledger_amount", MONEY, nullable=True),
        sa.Column("beneficiary", sa.String(length=18), nullable=True),
        sa.Column("bank_reference", sa.String(length=100), nullable=True),
        sa.Column("disbursement_id", sa.Uuid(), nullable=True),
        sa.Column("detected_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('paid_not_posted', 'posted_not_paid', 'amount_differs')",
            name=op.f("ck_reconciliation_mismatches_kind_known"),
        ),
        sa.CheckConstraint(
            "(kind = 'paid_not_posted' AND statement_amount IS NOT NULL AND ledger_amount IS NULL)"
            " OR (kind = 'posted_not_paid' AND statement_amount IS NULL AND ledger_amount IS NOT NULL)"
            " OR (kind = 'amount_differs' AND statement_amount <> ledger_amount)",
            name=op.f("ck_reconciliation_mismatches_amounts_fit_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconciliation_runs.id"],
            name=op.f("fk_reconciliation_mismatches_run_id_reconciliation_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_mismatches")),
        sa.UniqueConstraint("run_id", "key", name=op.f("uq_reconciliation_mismatches_run_id_key")),
    )


def downgrade() -> None:
    op.drop_index("ix_disbursements_completed_at", table_name="disbursements")
    op.drop_table("reconciliation_mismatches")
    op.drop_index("ix_reconciliation_runs_starts_at_id", table_name="reconciliation_runs")
    op.drop_table("reconciliation_runs")
