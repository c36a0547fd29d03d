"""money that comes back: drawdown repayments and revolving lines, bank reconciliation (issue 18)

Revision ID: f18000000001
Revises: f17000000001
Create Date: 2026-12-01 18:00:00+00:00

A credit line revolves: ``credit_lines.repaid`` is what its drawdowns paid back in all, so what is held and
outstanding (``reserved + drawn - repaid``) is what the limit bounds. A drawdown carries its term (the
program's ``durations.drawdown_term`` when it was requested), the moment it falls due (set when the bank paid
it), what was repaid of it and when the worker's sweep flagged it overdue; it is ``repaid`` once nothing is
outstanding. ``drawdown_repayments`` holds each repayment with its ledger entry
(services/credit/repayments.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f18000000001"
down_revision: str | None = "f17000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = (
    "status IN ('pending_approval', 'approved', 'disbursed', 'repaid', 'rejected', 'expired', 'failed')"
)
OLD_STATUSES = "status IN ('pending_approval', 'approved', 'disbursed', 'rejected', 'expired', 'failed')"
WITHIN_LIMIT = (
    "reserved >= 0 AND repaid >= 0 AND repaid <= drawn AND reserved + drawn - repaid <= credit_limit"
)
OLD_WITHIN_LIMIT = "reserved >= 0 AND drawn >= 0 AND reserved + drawn <= credit_limit"


def upgrade() -> None:
    op.add_column(
        "credit_lines",
        sa.Column("repaid", sa.Numeric(precision=18, scale=2), server_default=sa.text("0"), nullable=False),
    )
    op.drop_constraint(op.f("ck_credit_lines_within_limit"), "credit_lines", type_="check")
    op.create_check_constraint(op.f("ck_credit_lines_within_limit"), "credit_lines", WITHIN_LIMIT)

    op.add_column("drawdowns", sa.Column("term", sa.String(length=32), nullable=True))
    op.add_column("drawdowns", sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "drawdowns",
        sa.Column("repaid", sa.Numeric(precision=18, scale=2), server_default=sa.text("0"), nullable=False),
    )
    op.add_column("drawdowns", sa.Column("overdue_since", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint(op.f("ck_drawdowns_status_known"), "drawdowns", type_="check")
    op.create_check_constraint(op.f("ck_drawdowns_status_known"), "drawdowns", STATUSES)
    op.create_check_constraint(
        op.f("ck_drawdowns_repaid_within_amount"), "drawdowns", "repaid >= 0 AND repaid <= amount"
    )
    op.create_index(
        "ix_drawdowns_outstanding_due_at",
        "drawdowns",
        ["due_at"],
        unique=False,
        postgresql_where=sa.text("status = 'disbursed'"),
    )

    op.create_table(
        "drawdown_repayments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("drawdown_id", sa.Uuid(), nullable=False),
        sa.Column("credit_line_id", sa.Uuid(), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=2), nullable=False),
        sa.Column("paid_on", sa.Date(), nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("ledger_entry_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_drawdown_repayments_amount_positive")),
        sa.ForeignKeyConstraint(
            ["credit_line_id"],
            ["credit_lines.id"],
            name=op.f("fk_drawdown_repayments_credit_line_id_credit_lines"),
        ),
        sa.ForeignKeyConstraint(
            ["drawdown_id"], ["drawdowns.id"], name=op.f("fk_drawdown_repayments_drawdown_id_drawdowns")
        ),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_drawdown_repayments_ledger_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drawdown_repayments")),
        sa.UniqueConstraint("ledger_entry_id", name=op.f("uq_drawdown_repayments_ledger_entry_id")),
    )
    op.create_index(
        op.f("ix_drawdown_repayments_credit_line_id"), "drawdown_repayments", ["credit_line_id"], unique=False
    )
    op.create_index(
        "ix_drawdown_repayments_drawdown_id_created_at",
        "drawdown_repayments",
        ["drawdown_id", "created_at", "id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_drawdown_repayments_drawdown_id_created_at", table_name="drawdown_repayments")
    op.drop_index(op.f("ix_drawdown_repayments_credit_line_id"), table_name="drawdown_repayments")
    op.drop_table("drawdown_repayments")

    op.drop_index(
        "ix_drawdowns_outstanding_due_at",
        table_name="drawdowns",
        postgresql_where=sa.text("status = 'disbursed'"),
    )
    op.drop_constraint(op.f("ck_drawdowns_repaid_within_amount"), "drawdowns", type_="check")
    op.drop_constraint(op.f("ck_drawdowns_status_known"), "drawdowns", type_="check")
    # A drawdown repaid in full was paid out: that is what it was before repayments existed.
    op.execute("UPDATE drawdowns SET status = 'disbursed' WHERE status = 'repaid'")
    op.create_check_constraint(op.f("ck_drawdowns_status_known"), "drawdowns", OLD_STATUSES)
    op.drop_column("drawdowns", "overdue_since")
    op.drop_column("drawdowns", "repaid")
    op.drop_column("drawdowns", "due_at")
    op.drop_column("drawdowns", "term")

    # Before repayments, ``drawn`` was what is outstanding.
    op.drop_constraint(op.f("ck_credit_lines_within_limit"), "credit_lines", type_="check")
    op.execute("UPDATE credit_lines SET drawn = drawn - repaid")
    op.create_check_constraint(op.f("ck_credit_lines_within_limit"), "credit_lines", OLD_WITHIN_LIMIT)
    op.drop_column("credit_lines", "repaid")
