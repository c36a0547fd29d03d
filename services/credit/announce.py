"""What the credit domain tells the outbox (services/events.py), written by the functions that change a
payout, in their transaction. The enterprise and finance hear of every payout's steps."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.credit.models import Payout
from services.events import (
    Audience,
    BridgeLoanDueSoon,
    BridgeLoanOverdue,
    DisbursementPaid,
    DisbursementRefused,
    DrawdownOverdue,
    DrawdownRepaid,
    PayoutApproved,
    PayoutAwaitingApproval,
    PayoutRejected,
    ReconciliationMismatchFound,
    emit,
)
from services.vocabulary import PayoutKind


def _about(kind: PayoutKind, row: Payout) -> dict[str, Any]:
    return {
        "payout_id": row.id,
        "kind": kind,
        "uscc": row.uscc,
        "program": row.program,
        "amount": row.amount,
        "status": row.status,
    }


def _audience(row: Payout) -> Audience:
    return Audience(uscc=row.uscc, finance=True)


async def awaiting_approval(
    session: AsyncSession, kind: PayoutKind, row: Payout, *, approvals_needed: int
) -> None:
    """Requested, or approved once with more approvals needed: finance has a decision to make."""
    await emit(
        session,
        PayoutAwaitingApproval(**_about(kind, row), approvals_needed=approvals_needed),
        _audience(row),
    )


async def approved(session: AsyncSession, kind: PayoutKind, row: Payout) -> None:
    await emit(session, PayoutApproved(**_about(kind, row)), _audience(row))


async def rejected(session: AsyncSession, kind: PayoutKind, row: Payout) -> None:
    """Rejected by finance, or expired at the approval deadline (``status`` tells which)."""
    await emit(session, PayoutRejected(**_about(kind, row), reason=row.reason or ""), _audience(row))


async def paid(session: AsyncSession, kind: PayoutKind, row: Payout, *, bank_reference: str | None) -> None:
    await emit(session, DisbursementPaid(**_about(kind, row), bank_reference=bank_reference), _audience(row))


async def refused(session: AsyncSession, kind: PayoutKind, row: Payout, *, reason: str) -> None:
    await emit(session, DisbursementRefused(**_about(kind, row), reason=reason), _audience(row))


async def bridge_loan_due_soon(session: AsyncSession, row: Payout, *, due_on: date) -> None:
    await emit(session, BridgeLoanDueSoon(**_about("bridge_loan", row), due_on=due_on), _audience(row))


async def bridge_loan_overdue(
    session: AsyncSession, row: Payout, *, due_on: date, outstanding: Decimal | None = None
) -> None:
    await emit(
        session,
        BridgeLoanOverdue(**_about("bridge_loan", row), due_on=due_on, outstanding=outstanding),
        _audience(row),
    )


async def drawdown_repaid(
    session: AsyncSession, row: Payout, *, repayment_id: uuid.UUID, repayment: Decimal, outstanding: Decimal
) -> None:
    await emit(
        session,
        DrawdownRepaid(
            **_about("drawdown", row), repayment_id=repayment_id, repayment=repayment, outstanding=outstanding
        ),
        _audience(row),
    )


async def drawdown_overdue(
    session: AsyncSession, row: Payout, *, due_at: datetime, outstanding: Decimal
) -> None:
    await emit(
        session,
        DrawdownOverdue(**_about("drawdown", row), due_at=due_at, outstanding=outstanding),
        _audience(row),
    )


async def reconciliation_mismatches(
    session: AsyncSession,
    *,
    run_id: uuid.UUID,
    day: date,
    paid_not_posted: int,
    posted_not_paid: int,
    amount_differs: int,
) -> None:
    """The bank reconciliation of ``day`` found mismatches not known before: finance looks into them."""
    await emit(
        session,
        ReconciliationMismatchFound(
            reconciliation_id=run_id,
            day=day,
            mismatches=paid_not_posted + posted_not_paid + amount_differs,
            paid_not_posted=paid_not_posted,
            posted_not_paid=posted_not_paid,
            amount_differs=amount_differs,
        ),
        Audience(finance=True),
    )
