"""ORM models of the credit domain: the double-entry ledger, benefits, credit lines, the payouts (drawdowns,
bridge loans, listing rewards) with their approvals and disbursements.

The ledger is append-only and balanced by the database itself (triggers in the credit-schema migration):
an entry whose debits differ from its credits cannot be committed, and no ledger row can be updated or
deleted; a correction is a reversing entry.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Constraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from services.contracts import disbursement_workflow_id
from services.db import Base, Money
from services.vocabulary import (
    PAYOUT_KINDS,
    PAYOUT_STATUSES,
    BenefitStatus,
    DisbursementStatus,
    PayoutKind,
    PayoutStatus,
)

ZERO = Decimal("0.00")

BENEFIT_KINDS = ("credit_line", "bridge_loan", "listing_reward")
BENEFIT_STATUSES = get_args(BenefitStatus)
LINE_STATUSES = get_args(BenefitStatus)
# A payout is money paid out through the bank once finance approves it; every kind has a table of its own
# with the same approval columns, and shares the approvals and disbursements tables (one foreign key column
# per kind, named ``<kind>_id``).
# A drawdown and a bridge loan are repaid; a listing reward's CHECK constraint leaves `repaid` out.
DRAWDOWN_STATUSES = PAYOUT_STATUSES
BRIDGE_LOAN_STATUSES = PAYOUT_STATUSES
LISTING_REWARD_STATUSES = tuple(s for s in PAYOUT_STATUSES if s != "repaid")
AWAITING: PayoutStatus = "pending_approval"  # requested, waiting for finance's decisions
# What qualified a bridge loan: a recognition's benefit, or a membership of the program's cultivation pool
# when its fund is open to the pool (``bridge_pool.open_to_pool_members``; such a loan has no recognition).
BridgeLoanQualification = Literal["recognition", "pool"]
DISBURSEMENT_STATUSES = get_args(DisbursementStatus)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def column_values(row: Base) -> dict[str, object]:
    """A row's column values by attribute name (to build a read model with a few fields added)."""
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def payout_column(kind: PayoutKind) -> str:
    """The column of ``payout_approvals`` and ``disbursements`` that points at a payout of ``kind``."""
    return f"{kind}_id"


_ONE_PAYOUT = f"num_nonnulls({', '.join(payout_column(kind) for kind in PAYOUT_KINDS)}) = 1"


# --- ledger ------------------------------------------------------------------------------------------------


class LedgerAccount(Base):
    """An account, named by a code such as ``credit_receivable:<uscc>`` or ``bank_settlement``."""

    __tablename__ = "ledger_accounts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class LedgerEntry(Base):
    """One balanced posting; its lines are in ``ledger_lines``."""

    __tablename__ = "ledger_entries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    memo: Mapped[str] = mapped_column(Text)
    reverses_entry_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class LedgerLine(Base):
    __tablename__ = "ledger_lines"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    debit: Mapped[Money]
    credit: Mapped[Money]

    __table_args__ = (
        CheckConstraint("(debit > 0 AND credit = 0) OR (debit = 0 AND credit > 0)", name="one_side_positive"),
    )


# --- benefits and credit -----------------------------------------------------------------------------------


class Benefit(Base):
    """What one recognition triggered: at most one benefit of each kind per recognition."""

    __tablename__ = "benefits"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    recognition_id: Mapped[uuid.UUID]
    uscc: Mapped[str] = mapped_column(String(18), index=True)
    program: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    granted_at: Mapped[datetime] = mapped_column(server_default=func.now())
    frozen_at: Mapped[datetime | None]
    freeze_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("recognition_id", "kind"),
        CheckConstraint(_one_of("kind", BENEFIT_KINDS), name="kind_known"),
        CheckConstraint(_one_of("status", BENEFIT_STATUSES), name="status_known"),
    )


class CreditLine(Base):
    """An unsecured, revolving credit line opened on recognition. ``reserved`` is held by drawdowns awaiting
    approval or payment, ``drawn`` has been paid out in all and ``repaid`` paid back in all (repayments,
    services/credit/repayments.py); what is held and outstanding (``drawn - repaid``) never passes the
    limit, which the database refuses."""

    __tablename__ = "credit_lines"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    recognition_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    uscc: Mapped[str] = mapped_column(String(18), index=True)
    program: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    credit_limit: Mapped[Money]
    reserved: Mapped[Money]
    drawn: Mapped[Money]
    status: Mapped[str] = mapped_column(String(20))
    opened_at: Mapped[datetime] = mapped_column(server_default=func.now())
    frozen_at: Mapped[datetime | None]
    freeze_reason: Mapped[str | None] = mapped_column(Text)
    repaid: Mapped[Money] = mapped_column(server_default=text("0"))

    __table_args__ = (
        CheckConstraint(
            "reserved >= 0 AND repaid >= 0 AND repaid <= drawn AND reserved + drawn - repaid <= credit_limit",
            name="within_limit",
        ),
        CheckConstraint(_one_of("status", LINE_STATUSES), name="status_known"),
        Index("ix_credit_lines_opened_at_id", "opened_at", "id"),
    )

    @property
    def outstanding(self) -> Decimal:
        """Paid out and not repaid yet."""
        return self.drawn - self.repaid

    @property
    def available(self) -> Decimal:
        return self.credit_limit - self.reserved - self.outstanding


# Where columns go in a payout's table (``mapped_column(sort_order=...)``; the kind's own columns are 0).
_AFTER_APPROVAL, _LAST = 1, 2


class PayoutColumns:
    """The columns every payout table has besides its own: the maker-checker approval and the write-then-start
    flag. They follow the kind's own columns; ``created_at`` and ``workflow_started`` end the table
    (``sort_order``), after a bridge loan's repayment columns."""

    status: Mapped[str] = mapped_column(String(20))
    requested_by: Mapped[str] = mapped_column(String(200))
    required_approvals: Mapped[int] = mapped_column(Integer)
    approval_deadline: Mapped[datetime]
    reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), sort_order=_LAST)
    # False from the request's commit until its DisbursementWorkflow is known to run (services/temporal.py:
    # write, commit, then start; the worker's reconciler starts what an API that died in between left).
    workflow_started: Mapped[bool] = mapped_column(server_default=text("false"), sort_order=_LAST)


def _payout_table_args(table: str, statuses: tuple[str, ...], *more: Index | Constraint) -> tuple[Any, ...]:
    """The ``__table_args__`` of a payout table: what ``PayoutColumns`` needs, then ``more`` of its own."""
    return (
        Index(f"ix_{table}_unstarted", "created_at", postgresql_where=text("NOT workflow_started")),
        Index(f"ix_{table}_created_at_id", "created_at", "id"),  # the lists' order
        # The finance inbox (GET /payouts) walks the few payouts awaiting approval first, oldest first.
        Index(f"ix_{table}_awaiting", "created_at", "id", postgresql_where=text(f"status = '{AWAITING}'")),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("required_approvals IN (1, 2)", name="required_approvals_known"),
        CheckConstraint(_one_of("status", statuses), name="status_known"),
        *more,
    )


class Drawdown(PayoutColumns, Base):
    __tablename__ = "drawdowns"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    credit_line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("credit_lines.id"), index=True)
    uscc: Mapped[str] = mapped_column(String(18), index=True)
    program: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Money]
    # Repayments (services/credit/repayments.py), after the approval columns of PayoutColumns: the term is
    # the program's ``durations.drawdown_term`` when requested, the due time is set when the bank pays it.
    term: Mapped[str | None] = mapped_column(String(32), sort_order=_AFTER_APPROVAL)
    due_at: Mapped[datetime | None] = mapped_column(sort_order=_AFTER_APPROVAL)
    repaid: Mapped[Money] = mapped_column(server_default=text("0"), sort_order=_AFTER_APPROVAL)
    overdue_since: Mapped[datetime | None] = mapped_column(sort_order=_AFTER_APPROVAL)

    __table_args__ = _payout_table_args(
        "drawdowns",
        DRAWDOWN_STATUSES,
        Index("ix_drawdowns_status_created_at", "status", "created_at"),
        CheckConstraint("repaid >= 0 AND repaid <= amount", name="repaid_within_amount"),
        # The worker's overdue sweep walks the drawdowns paid out and not repaid, by due time.
        Index("ix_drawdowns_outstanding_due_at", "due_at", postgresql_where=text("status = 'disbursed'")),
    )

    @property
    def outstanding(self) -> Decimal:
        return self.amount - self.repaid

    @property
    def workflow_id(self) -> str:
        return disbursement_workflow_id("drawdown", self.id)


class PayoutApproval(Base):
    """One finance officer's decision on a payout (maker-checker: never the requester, once each)."""

    __tablename__ = "payout_approvals"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    drawdown_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("drawdowns.id"), index=True)
    bridge_loan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("bridge_loans.id"))
    listing_reward_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("listing_rewards.id"))
    approver: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        UniqueConstraint("drawdown_id", "approver"),
        UniqueConstraint("bridge_loan_id", "approver"),
        UniqueConstraint("listing_reward_id", "approver"),
        CheckConstraint("decision IN ('approve', 'reject')", name="decision_known"),
        CheckConstraint(_ONE_PAYOUT, name="one_payout"),
    )


class PayoutInboxVersion(Base):
    """One row whose ``version`` grows with every committed change to a payout or a decision on one (a
    deferred constraint trigger on each of their tables): what the finance inbox checks before reading its
    page again (services/credit/inbox.py)."""

    __tablename__ = "payout_inbox_version"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)


class Disbursement(Base):
    """The payment of a fully approved payout through the partner bank, under one bank idempotency key."""

    __tablename__ = "disbursements"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(20))
    drawdown_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("drawdowns.id"), unique=True)
    bridge_loan_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("bridge_loans.id"), unique=True)
    listing_reward_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("listing_rewards.id"), unique=True)
    uscc: Mapped[str] = mapped_column(String(18))
    program: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    amount: Mapped[Money]
    status: Mapped[str] = mapped_column(String(20))
    bank_key: Mapped[str] = mapped_column(String(100), unique=True)
    bank_reference: Mapped[str | None] = mapped_column(String(100))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    ledger_entry_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("ledger_entries.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    completed_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(_one_of("status", DISBURSEMENT_STATUSES), name="status_known"),
        CheckConstraint(_one_of("kind", PAYOUT_KINDS), name="kind_known"),
        CheckConstraint(
            " AND ".join(f"({payout_column(k)} IS NOT NULL) = (kind = '{k}')" for k in PAYOUT_KINDS),
            name="payout_of_kind",
        ),
        Index("ix_disbursements_status_created_at", "status", "created_at"),
        Index("ix_disbursements_uscc_created_at", "uscc", "created_at"),
        Index("ix_disbursements_created_at_id", "created_at", "id"),
        # The day's payments a reconciliation compares with the bank's statement (reconciliation_repository).
        Index(
            "ix_disbursements_completed_at", "completed_at", postgresql_where=text("completed_at IS NOT NULL")
        ),
    )

    @property
    def payout_id(self) -> uuid.UUID:
        found = self.drawdown_id or self.bridge_loan_id or self.listing_reward_id
        assert found is not None
        return found


class RepaymentColumns:
    """The columns every repayment table ends with (``sort_order``), after the repayment's own: the incoming
    transfer's reference, who recorded it, the ledger entry that books it (one per repayment) and when."""

    reference: Mapped[str | None] = mapped_column(String(100), sort_order=_LAST)
    recorded_by: Mapped[str] = mapped_column(String(200), sort_order=_LAST)
    ledger_entry_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("ledger_entries.id"), unique=True, sort_order=_LAST
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now(), sort_order=_LAST)


class DrawdownRepayment(RepaymentColumns, Base):
    """Money the enterprise paid back on a drawdown paid out: recorded by the enterprise or finance, posted to
    the ledger in the same transaction (debit ``bank_settlement``, credit the enterprise's credit
    receivable), and restored to the line's available amount."""

    __tablename__ = "drawdown_repayments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    drawdown_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("drawdowns.id"))
    credit_line_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("credit_lines.id"), index=True)
    uscc: Mapped[str] = mapped_column(String(18))
    program: Mapped[str] = mapped_column(String(64))
    amount: Mapped[Money]
    paid_on: Mapped[date] = mapped_column(Date)

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_drawdown_repayments_drawdown_id_created_at", "drawdown_id", "created_at", "id"),
    )


# --- bridge-loan pools and listing rewards ------------------------------------------------------------


class FundPool(Base):
    """A program's bridge ("转贷") fund: ``committed`` can never pass ``capacity`` (checked by the database;
    commitments are conditional UPDATEs). Created from the program's policy on first use; an admin changes
    its capacity after that (``FundCapacityChange``)."""

    __tablename__ = "fund_pools"

    program: Mapped[str] = mapped_column(String(64), primary_key=True)
    capacity: Mapped[Money]
    committed: Mapped[Money]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (CheckConstraint("committed >= 0 AND committed <= capacity", name="within_capacity"),)


class BridgeLoan(PayoutColumns, Base):
    """A bridge loan from a program's fund. Requested: its amount is reserved in the pool at once
    (``pending_approval``); finance approves (due date: ``term_days`` working days after approval) and the
    bank pays (``disbursed``); finance records repayments, in parts or whole, each freeing its amount of the
    capacity (``repaid`` once nothing is outstanding). A rejection, the approval deadline or a bank refusal
    frees it as well."""

    __tablename__ = "bridge_loans"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    program: Mapped[str] = mapped_column(ForeignKey("fund_pools.program"), index=True)
    uscc: Mapped[str] = mapped_column(String(18), index=True)
    tier: Mapped[str] = mapped_column(String(32))
    # The recognition whose benefit qualified; None when a pool membership did (``qualified_by``).
    recognition_id: Mapped[uuid.UUID | None]
    amount: Mapped[Money]
    term_days: Mapped[int] = mapped_column(Integer)  # working days from approval (policy.is_working_day)
    purpose: Mapped[str] = mapped_column(Text)
    # After the approval columns of PayoutColumns:
    due_on: Mapped[date | None] = mapped_column(Date, sort_order=_AFTER_APPROVAL)
    overdue_since: Mapped[datetime | None] = mapped_column(sort_order=_AFTER_APPROVAL)
    repaid_at: Mapped[datetime | None] = mapped_column(sort_order=_AFTER_APPROVAL)
    repaid_by: Mapped[str | None] = mapped_column(String(200), sort_order=_AFTER_APPROVAL)
    repayment_reference: Mapped[str | None] = mapped_column(String(100), sort_order=_AFTER_APPROVAL)
    repayment_entry_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ledger_entries.id"), sort_order=_AFTER_APPROVAL
    )
    # Repaid so far, in parts (``BridgeLoanRepayment``); the ``repaid_*`` columns above are the last part's.
    repaid: Mapped[Money] = mapped_column(server_default=text("0"), sort_order=_AFTER_APPROVAL)
    # ``recognition``: ``recognition_id``'s benefit; ``pool``: the enterprise's membership of the program's
    # cultivation pool (``pool_members``, one per program and USCC; ``tier`` is the tier it aims at).
    qualified_by: Mapped[BridgeLoanQualification] = mapped_column(
        String(16), default="recognition", server_default="recognition", sort_order=_AFTER_APPROVAL
    )

    __table_args__ = _payout_table_args(
        "bridge_loans",
        BRIDGE_LOAN_STATUSES,
        CheckConstraint("term_days > 0", name="term_positive"),
        Index("ix_bridge_loans_status_created_at", "status", "created_at"),
        Index("ix_bridge_loans_recognition_id", "recognition_id"),  # the cohort report's join
        CheckConstraint("repaid >= 0 AND repaid <= amount", name="repaid_within_amount"),
        CheckConstraint(
            "(qualified_by = 'recognition' AND recognition_id IS NOT NULL)"
            " OR (qualified_by = 'pool' AND recognition_id IS NULL)",
            name="qualification_known",
        ),
    )

    @property
    def outstanding(self) -> Decimal:
        """Lent and not repaid yet (the part of the fund it still holds once paid out)."""
        return self.amount - self.repaid


class BridgeLoanRepayment(RepaymentColumns, Base):
    """A part (or the whole) of a bridge loan paid back into the fund, recorded by finance: posted to the
    ledger in the same transaction (debit ``bank_settlement``, credit the enterprise's bridge receivable) and
    released from the fund's committed amount (services/credit/funds.py)."""

    __tablename__ = "bridge_loan_repayments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    bridge_loan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("bridge_loans.id"))
    program: Mapped[str] = mapped_column(String(64))
    uscc: Mapped[str] = mapped_column(String(18))
    amount: Mapped[Money]
    outstanding_after: Mapped[Money]

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("outstanding_after >= 0", name="outstanding_after_non_negative"),
        Index("ix_bridge_loan_repayments_loan_created_at", "bridge_loan_id", "created_at", "id"),
    )


class FundCapacityChange(Base):
    """An admin raised or lowered a fund's capacity (never below what it has committed): who, why, from what
    to what, and the ledger entry that books it between the fund's capacity accounts
    (``ledger.fund_capacity`` and ``ledger.fund_appropriation``)."""

    __tablename__ = "fund_capacity_changes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    program: Mapped[str] = mapped_column(ForeignKey("fund_pools.program"))
    previous_capacity: Mapped[Money]
    new_capacity: Mapped[Money]
    committed_then: Mapped[Money]
    reason: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(200))
    ledger_entry_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint("new_capacity <> previous_capacity", name="changes_capacity"),
        CheckConstraint("new_capacity >= committed_then", name="not_below_committed"),
        Index("ix_fund_capacity_changes_program_created_at", "program", "created_at", "id"),
    )


class RewardBudget(Base):
    """A program's listing-reward budget for a year (China Standard Time): ``committed`` is held by the
    rewards requested that year and not rejected, expired or refused by the bank. Reservations are one
    conditional UPDATE against the program's ``listing_reward_budget_per_year`` (policy data, copied into
    ``budget`` as it stood at the last reservation), so the database never lets ``committed`` pass it."""

    __tablename__ = "reward_budgets"

    program: Mapped[str] = mapped_column(String(64), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    budget: Mapped[Money]
    committed: Mapped[Money]

    __table_args__ = (CheckConstraint("committed >= 0 AND committed <= budget", name="within_budget"),)


class ListingReward(PayoutColumns, Base):
    """The one-time reward for listing on a board of the regional equity market: once per enterprise and
    board, however often or concurrently the listing is reported (a rejected or expired reward stays the
    board's one). Paid through the bank once finance approves it."""

    __tablename__ = "listing_rewards"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    uscc: Mapped[str] = mapped_column(String(18))
    board: Mapped[str] = mapped_column(String(64))
    program: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(32))
    recognition_id: Mapped[uuid.UUID]  # the recognition whose benefit qualified
    amount: Mapped[Money]
    listed_on: Mapped[date] = mapped_column(Date)
    security_code: Mapped[str] = mapped_column(String(20))
    # ``requested_by`` (PayoutColumns) is who reported the listing.
    # The year of the program's budget (``RewardBudget``) the reward holds its amount in; None: no budget.
    budget_year: Mapped[int | None] = mapped_column(Integer, sort_order=_AFTER_APPROVAL)

    __table_args__ = _payout_table_args(
        "listing_rewards",
        LISTING_REWARD_STATUSES,
        UniqueConstraint("uscc", "board"),
        Index("ix_listing_rewards_status_created_at", "status", "created_at"),
        Index("ix_listing_rewards_recognition_id", "recognition_id"),  # the cohort report's join
    )


Payout = Drawdown | BridgeLoan | ListingReward
PAYOUT_MODELS: dict[PayoutKind, type[Payout]] = {
    "drawdown": Drawdown,
    "bridge_loan": BridgeLoan,
    "listing_reward": ListingReward,
}
