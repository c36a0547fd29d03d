"""bridge-loan terms and part repayments, reward budgets, fund administration (issue 18)

Revision ID: f18000000002
Revises: f18000000001
Create Date: 2026-12-01 18:10:00+00:00

- ``bridge_loans.repaid``: what was paid back so far (a loan is repaid in parts); loans repaid whole before
  this revision count as repaid in full. ``bridge_loan_repayments``: one row per part, with its ledger entry.
- ``fund_capacity_changes``: an admin's raise or cut of a fund's capacity, who, why, and its ledger entry.
- ``reward_budgets`` and ``listing_rewards.budget_year``: a program's yearly listing-reward budget and the
  year a reward holds its amount in (NULL for rewards from before: they hold nothing).

The downgrade drops what the older schema cannot say: the part repayments (their ledger entries stay, the
ledger is append-only), the capacity history and the budgets.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f18000000002"
down_revision: str | None = "f18000000001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(18, 2)


def upgrade() -> None:
    op.add_column("bridge_loans", sa.Column("repaid", MONEY, server_default=sa.text("0"), nullable=False))
    op.execute("UPDATE bridge_loans SET repaid = amount WHERE status = 'repaid'")
    op.create_check_constraint(
        op.f("ck_bridge_loans_repaid_within_amount"), "bridge_loans", "repaid >= 0 AND repaid <= amount"
    )
    op.create_table(
        "bridge_loan_repayments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("bridge_loan_id", sa.Uuid(), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("uscc", sa.String(length=18), nullable=False),
        sa.Column("amount", MONEY, nullable=False),
        sa.Column("outstanding_after", MONEY, nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=True),
        sa.Column("recorded_by", sa.String(length=200), nullable=False),
        sa.Column("ledger_entry_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_bridge_loan_repayments_amount_positive")),
        sa.CheckConstraint(
            "outstanding_after >= 0", name=op.f("ck_bridge_loan_repayments_outstanding_after_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["bridge_loan_id"],
            ["bridge_loans.id"],
            name=op.f("fk_bridge_loan_repayments_bridge_loan_id_bridge_loans"),
        ),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_bridge_loan_repayments_ledger_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bridge_loan_repayments")),
        sa.UniqueConstraint("ledger_entry_id", name=op.f("uq_bridge_loan_repayments_ledger_entry_id")),
    )
    op.create_index(
        "ix_bridge_loan_repayments_loan_created_at",
        "bridge_loan_repayments",
        ["bridge_loan_id", "created_at", "id"],
    )
    op.create_table(
        "fund_capacity_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("previous_capacity", MONEY, nullable=False),
        sa.Column("new_capacity", MONEY, nullable=False),
        sa.Column("committed_then", MONEY, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("changed_by", sa.String(length=200), nullable=False),
        sa.Column("ledger_entry_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "new_capacity <> previous_capacity", name=op.f("ck_fund_capacity_changes_changes_capacity")
        ),
        sa.CheckConstraint(
            "new_capacity >= committed_then", name=op.f("ck_fund_capacity_changes_not_below_committed")
        ),
        sa.ForeignKeyConstraint(
            ["program"], ["fund_pools.program"], name=op.f("fk_fund_capacity_changes_program_fund_pools")
        ),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"],
            ["ledger_entries.id"],
            name=op.f("fk_fund_capacity_changes_ledger_entry_id_ledger_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fund_capacity_changes")),
        sa.UniqueConstraint("ledger_entry_id", name=op.f("uq_fund_capacity_changes_ledger_entry_id")),
    )
    op.create_index(
        "ix_fund_capacity_changes_program_created_at",
        "fund_capacity_changes",
        ["program", "created_at", "id"],
    )
    op.create_table(
        "reward_budgets",
        sa.Column("program", sa.String(length=64), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("budget", MONEY, nullable=False),
        sa.Column("committed", MONEY, nullable=False),
        sa.CheckConstraint(
            "committed >= 0 AND committed <= budget", name=op.f("ck_reward_budgets_within_budget")
        ),
        sa.PrimaryKeyConstraint("program", "year", name=op.f("pk_reward_budgets")),
    )
    op.add_column("listing_rewards", sa.Column("budget_year", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("listing_rewards", "budget_year")
    op.drop_table("reward_budgets")
    op.drop_index("ix_fund_capacity_changes_program_created_at", table_name="fund_capacity_changes")
    op.drop_table("fund_capacity_changes")
    op.drop_index("ix_bridge_loan_repayments_loan_created_at", table_name="bridge_loan_repayments")
    op.drop_table("bridge_loan_repayments")
    op.drop_constraint(op.f("ck_bridge_loans_repaid_within_amount"), "bridge_loans", type_="check")
    op.drop_column("bridge_loans", "repaid")
