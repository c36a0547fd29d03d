"""Tables of the bank reconciliation (services/credit/reconciliation.py): one run per statement day, and the
mismatches it found between the bank's statement and the ledger's bank postings."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, Numeric, String, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, Money

RUN_STATUSES = ("clean", "mismatches")
MISMATCH_KINDS = ("paid_not_posted", "posted_not_paid", "amount_differs")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class ReconciliationRun(Base):
    """The reconciliation of one statement day (China Standard Time): what each side counted and totalled,
    and how many mismatches of each kind it found. Running a day again updates its one row."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    day: Mapped[date] = mapped_column(Date, unique=True)
    starts_at: Mapped[datetime]  # the day's first instant (00:00 UTC+8): the lists' order
    status: Mapped[str] = mapped_column(String(20))
    statement_count: Mapped[int]
    statement_total: Mapped[Money]
    posted_count: Mapped[int]
    posted_total: Mapped[Money]
    paid_not_posted: Mapped[int]
    posted_not_paid: Mapped[int]
    amount_differs: Mapped[int]
    runs: Mapped[int] = mapped_column(server_default="1")
    workflow_id: Mapped[str] = mapped_column(String(200))
    first_run_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_run_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        CheckConstraint(_one_of("status", RUN_STATUSES), name="status_known"),
        CheckConstraint(
            "statement_count >= 0 AND posted_count >= 0 AND paid_not_posted >= 0 AND posted_not_paid >= 0 "
            "AND amount_differs >= 0",
            name="counts_not_negative",
        ),
        CheckConstraint(
            "(status = 'clean') = (paid_not_posted + posted_not_paid + amount_differs = 0)",
            name="status_fits_counts",
        ),
        Index("ix_reconciliation_runs_starts_at_id", "starts_at", "id"),
    )

    @property
    def mismatch_count(self) -> int:
        return self.paid_not_posted + self.posted_not_paid + self.amount_differs


class ReconciliationMismatch(Base):
    """A payment key on which the statement and the ledger disagree, once per run: paid but not posted (on
    the statement, no ledger posting), posted but not paid (a posting, no payment at the bank), or the
    amounts differ. A key whose disagreement is gone when the day is run again loses its row."""

    __tablename__ = "reconciliation_mismatches"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reconciliation_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    key: Mapped[str] = mapped_column(String(200))
    statement_amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    ledger_amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    beneficiary: Mapped[str | None] = mapped_column(String(18))
    bank_reference: Mapped[str | None] = mapped_column(String(100))
    disbursement_id: Mapped[uuid.UUID | None]
    detected_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        UniqueConstraint("run_id", "key"),
        CheckConstraint(_one_of("kind", MISMATCH_KINDS), name="kind_known"),
        CheckConstraint(
            "(kind = 'paid_not_posted' AND statement_amount IS NOT NULL AND ledger_amount IS NULL)"
            " OR (kind = 'posted_not_paid' AND statement_amount IS NULL AND ledger_amount IS NOT NULL)"
            " OR (kind = 'amount_differs' AND statement_amount <> ledger_amount)",
            name="amounts_fit_kind",
        ),
    )
