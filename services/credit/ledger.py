"""The double-entry ledger: append-only entries of balanced lines, balances derived from the lines.

The database holds the rules as well (see the credit-schema migration): a line debits or credits a positive
amount, an entry's debits equal its credits at commit, and no ledger row is ever updated or deleted.
Corrections are reversing entries. Posting is idempotent on the entry's key: the same key posted again
returns the first entry, and a different set of lines under a used key is refused.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.credit.models import ZERO, LedgerAccount, LedgerEntry, LedgerLine

CENT = Decimal("0.01")


class LedgerError(ValueError):
    """An entry that cannot be posted: unbalanced, malformed, or a used key with other lines."""


# Account codes: one place that spells them.
BANK_SETTLEMENT = "bank_settlement"


def program_fund(program: str) -> str:
    return f"program_fund:{program}"


def credit_receivable(uscc: str) -> str:
    return f"credit_receivable:{uscc}"


def bridge_receivable(uscc: str) -> str:
    return f"bridge_receivable:{uscc}"


def fund_capacity(program: str) -> str:
    """What a program's bridge fund may lend (debit balance = its capacity, once changed by an admin)."""
    return f"fund_capacity:{program}"


def fund_appropriation(program: str) -> str:
    """Where a fund's capacity comes from: the authority's appropriation (the other side of each change)."""
    return f"fund_appropriation:{program}"


@dataclass(frozen=True, slots=True)
class Line:
    """One side of an entry: exactly one of ``debit`` and ``credit`` is positive."""

    account: str
    debit: Decimal = ZERO
    credit: Decimal = ZERO

    @classmethod
    def dr(cls, account: str, amount: Decimal) -> Line:
        return cls(account, debit=amount)

    @classmethod
    def cr(cls, account: str, amount: Decimal) -> Line:
        return cls(account, credit=amount)

    def reversed(self) -> Line:
        return Line(self.account, debit=self.credit, credit=self.debit)


@dataclass(frozen=True, slots=True)
class Entry:
    id: uuid.UUID
    key: str
    memo: str
    lines: tuple[Line, ...]
    reverses: uuid.UUID | None = None


def _kind(code: str) -> str:
    return code.split(":", 1)[0]


def _check(lines: Sequence[Line]) -> None:
    if len(lines) < 2:
        raise LedgerError("an entry needs at least two lines")
    for line in lines:
        for amount in (line.debit, line.credit):
            if not amount.is_finite() or amount < 0 or amount != amount.quantize(CENT):
                raise LedgerError(f"{line.account}: amounts are non-negative with at most two decimals")
        if (line.debit > 0) == (line.credit > 0):
            raise LedgerError(f"{line.account}: a line debits or credits, exactly one of them")
        if not line.account or len(line.account) > 120:
            raise LedgerError("an account code is 1 to 120 characters")
    debits = sum((line.debit for line in lines), ZERO)
    credits = sum((line.credit for line in lines), ZERO)
    if debits != credits:
        raise LedgerError(f"debits {debits} and credits {credits} differ")


def _same_lines(a: Iterable[Line], b: Iterable[Line]) -> bool:
    def norm(lines: Iterable[Line]) -> Counter[tuple[str, Decimal, Decimal]]:
        return Counter(
            (line.account, line.debit.quantize(CENT), line.credit.quantize(CENT)) for line in lines
        )

    return norm(a) == norm(b)


async def _account_ids(session: AsyncSession, codes: Iterable[str]) -> dict[str, int]:
    """The accounts' ids, each account opened on its first use: one query when they all exist (nearly
    always); else the missing ones are inserted (a concurrent opening of a code waits on its unique index)
    and read."""
    wanted = sorted(set(codes))
    found = await _ids(session, wanted)
    missing = [code for code in wanted if code not in found]
    if missing:
        await session.execute(
            insert(LedgerAccount)
            .values([{"code": code, "kind": _kind(code)} for code in missing])
            .on_conflict_do_nothing(index_elements=["code"])
        )
        found.update(await _ids(session, missing))
    return found


async def _ids(session: AsyncSession, codes: Sequence[str]) -> dict[str, int]:
    rows = await session.execute(
        select(LedgerAccount.code, LedgerAccount.id).where(LedgerAccount.code.in_(codes))
    )
    return dict(rows.all())


async def get_entry(session: AsyncSession, entry_id: uuid.UUID) -> Entry | None:
    entry = await session.get(LedgerEntry, entry_id)
    if entry is None:
        return None
    return await _load(session, entry)


async def entries(session: AsyncSession, entry_ids: Sequence[uuid.UUID]) -> list[Entry]:
    """The entries with these ids, oldest first, in two queries however many there are."""
    if not entry_ids:
        return []
    found = list(
        await session.scalars(
            select(LedgerEntry).where(LedgerEntry.id.in_(entry_ids)).order_by(LedgerEntry.created_at)
        )
    )
    rows = await session.execute(
        select(LedgerLine.entry_id, LedgerAccount.code, LedgerLine.debit, LedgerLine.credit)
        .join(LedgerAccount, LedgerAccount.id == LedgerLine.account_id)
        .where(LedgerLine.entry_id.in_([entry.id for entry in found]))
        .order_by(LedgerLine.id)
    )
    lines: dict[uuid.UUID, list[Line]] = {}
    for entry_id, code, debit, credit in rows:
        lines.setdefault(entry_id, []).append(Line(code, debit=debit, credit=credit))
    return [
        Entry(
            id=e.id,
            key=e.idempotency_key,
            memo=e.memo,
            lines=tuple(lines.get(e.id, ())),
            reverses=e.reverses_entry_id,
        )
        for e in found
    ]


async def _load(session: AsyncSession, entry: LedgerEntry) -> Entry:
    rows = await session.execute(
        select(LedgerAccount.code, LedgerLine.debit, LedgerLine.credit)
        .join(LedgerAccount, LedgerAccount.id == LedgerLine.account_id)
        .where(LedgerLine.entry_id == entry.id)
        .order_by(LedgerLine.id)
    )
    lines = tuple(Line(code, debit=debit, credit=credit) for code, debit, credit in rows)
    return Entry(
        id=entry.id, key=entry.idempotency_key, memo=entry.memo, lines=lines, reverses=entry.reverses_entry_id
    )


async def _by_key(session: AsyncSession, key: str) -> LedgerEntry | None:
    entry: LedgerEntry | None = await session.scalar(
        select(LedgerEntry).where(LedgerEntry.idempotency_key == key)
    )
    return entry


async def post_entry(
    session: AsyncSession, *, key: str, memo: str, lines: Sequence[Line], reverses: uuid.UUID | None = None
) -> Entry:
    """Post a balanced entry once per ``key``; posting the same key again returns the first entry.

    Concurrent posts of one key serialize on the key's unique index: the second waits for the first
    transaction and then finds its entry.
    """
    _check(lines)
    if not key or len(key) > 200:
        raise LedgerError("an entry key is 1 to 200 characters")
    accounts = await _account_ids(session, (line.account for line in lines))
    entry_id = uuid.uuid4()
    inserted = await session.scalar(
        insert(LedgerEntry)
        .values(id=entry_id, idempotency_key=key, memo=memo, reverses_entry_id=reverses)
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
        .returning(LedgerEntry.id)
    )
    if inserted is None:
        existing = await _by_key(session, key)
        if existing is None:  # pragma: no cover - the conflicting row is committed or we would still wait
            raise LedgerError(f"entry {key!r} could not be read back")
        found = await _load(session, existing)
        if not _same_lines(found.lines, lines) or found.reverses != reverses:
            raise LedgerError(f"entry key {key!r} was already used for other lines")
        return found
    await session.execute(
        insert(LedgerLine),
        [
            {
                "entry_id": entry_id,
                "account_id": accounts[line.account],
                "debit": line.debit,
                "credit": line.credit,
            }
            for line in lines
        ],
    )
    return Entry(id=entry_id, key=key, memo=memo, lines=tuple(lines), reverses=reverses)


async def reverse_entry(session: AsyncSession, *, entry_id: uuid.UUID, key: str, memo: str) -> Entry:
    """Post the mirror image of an entry (debits become credits). An entry is reversed at most once."""
    original = await get_entry(session, entry_id)
    if original is None:
        raise LedgerError("there is no such entry to reverse")
    if original.reverses is not None:
        raise LedgerError("a reversing entry is not reversed; post a new entry instead")
    already = await session.scalar(select(LedgerEntry).where(LedgerEntry.reverses_entry_id == entry_id))
    if already is not None and already.idempotency_key != key:
        raise LedgerError("the entry has already been reversed")
    return await post_entry(
        session, key=key, memo=memo, lines=[line.reversed() for line in original.lines], reverses=entry_id
    )


async def balances(session: AsyncSession, codes: Sequence[str]) -> dict[str, Decimal]:
    """Debits minus credits per account, from the lines; accounts without lines are zero."""
    rows = await session.execute(
        select(LedgerAccount.code, func.coalesce(func.sum(LedgerLine.debit - LedgerLine.credit), ZERO))
        .join(LedgerLine, LedgerLine.account_id == LedgerAccount.id, isouter=True)
        .where(LedgerAccount.code.in_(codes))
        .group_by(LedgerAccount.code)
    )
    found = dict(rows.all())
    return {code: Decimal(found.get(code, ZERO)).quantize(CENT) for code in codes}


async def balance(session: AsyncSession, code: str) -> Decimal:
    return (await balances(session, [code]))[code]


async def trial_balance(session: AsyncSession) -> tuple[Decimal, Decimal]:
    """Total debits and total credits over the whole ledger (equal whenever the ledger is sound)."""
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(LedgerLine.debit), ZERO),
                func.coalesce(func.sum(LedgerLine.credit), ZERO),
            )
        )
    ).one()
    return Decimal(row[0]), Decimal(row[1])
