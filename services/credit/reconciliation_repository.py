"""Queries of the bank reconciliation: the ledger's bank postings, and the runs with their mismatches."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, and_, bindparam, delete, func, or_, select
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.credit.models import ZERO, Disbursement, LedgerAccount, LedgerEntry, LedgerLine
from services.credit.reconciliation_models import ReconciliationMismatch, ReconciliationRun
from services.pagination import Cursor, paginate

BANK_SETTLEMENT = "bank_settlement"  # ledger.BANK_SETTLEMENT (the ledger is a layer above this module)


@dataclass(frozen=True, slots=True)
class Posting:
    """A payout the ledger posted as paid through the bank: the bank key it was paid under, the amount the
    ledger credited to ``bank_settlement`` for it (net of a reversal), and when it was marked paid."""

    key: str
    amount: Decimal
    posted_at: datetime
    disbursement_id: uuid.UUID
    beneficiary: str
    bank_reference: str | None


async def bank_postings(
    session: AsyncSession, *, start: datetime, end: datetime, keys: Sequence[str]
) -> list[Posting]:
    """The disbursements marked paid in ``[start, end)`` or paid under one of ``keys`` (whenever), each with
    what its ledger entry - and a reversal of it, if any - credited to ``bank_settlement``."""
    entries = (
        select(Disbursement.id.label("disbursement_id"), LedgerEntry.id.label("entry_id"))
        .join(
            LedgerEntry,
            or_(
                LedgerEntry.id == Disbursement.ledger_entry_id,
                LedgerEntry.reverses_entry_id == Disbursement.ledger_entry_id,
            ),
        )
        .where(
            Disbursement.status == "paid",
            or_(
                and_(Disbursement.completed_at >= start, Disbursement.completed_at < end),
                Disbursement.bank_key == func.any(bindparam("keys", list(keys), type_=ARRAY(String))),
            ),
        )
        .subquery()
    )
    settled = func.coalesce(func.sum(LedgerLine.credit - LedgerLine.debit), ZERO)
    rows = await session.execute(
        select(
            Disbursement.bank_key,
            settled,
            Disbursement.completed_at,
            Disbursement.id,
            Disbursement.uscc,
            Disbursement.bank_reference,
        )
        .join(entries, entries.c.disbursement_id == Disbursement.id)
        .join(LedgerLine, LedgerLine.entry_id == entries.c.entry_id)
        .join(
            LedgerAccount,
            and_(LedgerAccount.id == LedgerLine.account_id, LedgerAccount.code == BANK_SETTLEMENT),
        )
        .group_by(Disbursement.id)
    )
    return [
        Posting(
            key=key,
            amount=Decimal(amount),
            posted_at=posted_at or start,  # a paid disbursement always has completed_at
            disbursement_id=ident,
            beneficiary=uscc,
            bank_reference=reference,
        )
        for key, amount, posted_at, ident, uscc, reference in rows
    ]


async def save_run(session: AsyncSession, *, day: date, values: dict[str, Any]) -> uuid.UUID:
    """The day's one run, inserted or updated with ``values`` (counted once more); its row stays locked
    until the transaction ends, so two runs of a day write one after the other."""
    run_id: uuid.UUID | None = await session.scalar(
        insert(ReconciliationRun)
        .values(id=uuid.uuid4(), day=day, **values)
        .on_conflict_do_update(
            index_elements=["day"],
            set_={**values, "runs": ReconciliationRun.runs + 1, "last_run_at": func.now()},
        )
        .returning(ReconciliationRun.id)
    )
    assert run_id is not None
    return run_id


async def mismatch_keys(session: AsyncSession, run_id: uuid.UUID) -> dict[str, str]:
    """The keys a run has mismatches for, with their kinds."""
    rows = await session.execute(
        select(ReconciliationMismatch.key, ReconciliationMismatch.kind).where(
            ReconciliationMismatch.run_id == run_id
        )
    )
    return dict(rows.all())


async def replace_mismatches(
    session: AsyncSession, run_id: uuid.UUID, mismatches: Sequence[dict[str, Any]]
) -> None:
    """The run's mismatches become exactly ``mismatches``: one row per key, kept (with when it was first
    detected) when the key is still a mismatch, updated to what was found now; the others deleted."""
    await session.execute(
        delete(ReconciliationMismatch).where(
            ReconciliationMismatch.run_id == run_id,
            ReconciliationMismatch.key.not_in([m["key"] for m in mismatches]),
        )
    )
    if not mismatches:
        return
    statement = insert(ReconciliationMismatch).values(
        [{"id": uuid.uuid4(), "run_id": run_id, **m} for m in mismatches]
    )
    updated = (
        "kind",
        "statement_amount",
        "ledger_amount",
        "beneficiary",
        "bank_reference",
        "disbursement_id",
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["run_id", "key"], set_={name: statement.excluded[name] for name in updated}
        )
    )


async def get_run(session: AsyncSession, day: date) -> ReconciliationRun | None:
    run: ReconciliationRun | None = await session.scalar(
        select(ReconciliationRun).where(ReconciliationRun.day == day)
    )
    return run


async def mismatches(session: AsyncSession, run_id: uuid.UUID) -> Sequence[ReconciliationMismatch]:
    """A run's mismatches by kind, then key."""
    return (
        await session.scalars(
            select(ReconciliationMismatch)
            .where(ReconciliationMismatch.run_id == run_id)
            .order_by(ReconciliationMismatch.kind, ReconciliationMismatch.key)
        )
    ).all()


async def list_runs(
    session: AsyncSession,
    *,
    status: str | None,
    since: date | None,
    until: date | None,
    cursor: Cursor | None,
    limit: int,
) -> Sequence[ReconciliationRun]:
    """Runs, the latest statement day first."""
    stmt = select(ReconciliationRun)
    if status is not None:
        stmt = stmt.where(ReconciliationRun.status == status)
    if since is not None:
        stmt = stmt.where(ReconciliationRun.day >= since)
    if until is not None:
        stmt = stmt.where(ReconciliationRun.day <= until)
    stmt = paginate(
        stmt,
        key=(ReconciliationRun.starts_at, ReconciliationRun.id),
        cursor=cursor,
        limit=limit,
        newest_first=True,
    )
    return (await session.scalars(stmt)).all()
