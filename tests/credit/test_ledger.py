"""The ledger on real PostgreSQL: balanced by the database at commit, append-only, idempotent by key."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from services.credit import ledger
from services.credit.ledger import LedgerError, Line

D = Decimal


def _codes() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:12]
    return ledger.credit_receivable(f"T{tag}"), ledger.program_fund(f"p-{tag}")


async def _check_deferred(session: AsyncSession) -> None:
    """Run the deferred balance triggers now, as COMMIT would."""
    await session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
    await session.execute(text("SET CONSTRAINTS ALL DEFERRED"))


async def test_post_entry_derives_balances_and_is_idempotent_on_key(session: AsyncSession) -> None:
    receivable, fund = _codes()
    key = f"test:{uuid.uuid4()}"
    lines = [Line.dr(receivable, D("1500.00")), Line.cr(fund, D("1000.00")), Line.cr(fund, D("500.00"))]
    first = await ledger.post_entry(session, key=key, memo="drawdown", lines=lines)
    again = await ledger.post_entry(session, key=key, memo="drawdown", lines=list(reversed(lines)))
    await _check_deferred(session)

    assert again.id == first.id
    assert await ledger.balances(session, [receivable, fund]) == {
        receivable: D("1500.00"),
        fund: D("-1500.00"),
    }
    with pytest.raises(LedgerError, match="already used"):
        await ledger.post_entry(
            session, key=key, memo="other", lines=[Line.dr(receivable, D("1.00")), Line.cr(fund, D("1.00"))]
        )


@pytest.mark.parametrize(
    "lines",
    [
        [Line.dr("a:x", D("1.00")), Line.cr("b:x", D("0.99"))],
        [Line.dr("a:x", D("1.00"))],
        [Line("a:x", debit=D("1.00"), credit=D("1.00")), Line.cr("b:x", D("0.00"))],
        [Line.dr("a:x", D("1.001")), Line.cr("b:x", D("1.001"))],
        [Line.dr("a:x", D("-1.00")), Line.cr("b:x", D("-1.00"))],
    ],
)
async def test_malformed_entries_are_refused_before_the_database(
    session: AsyncSession, lines: list[Line]
) -> None:
    with pytest.raises(LedgerError):
        await ledger.post_entry(session, key=f"test:{uuid.uuid4()}", memo="bad", lines=lines)


async def test_database_refuses_an_unbalanced_entry_at_commit(engine: AsyncEngine) -> None:
    receivable, fund = _codes()
    entry_id = uuid.uuid4()
    async with engine.connect() as conn:
        await conn.execute(
            text("INSERT INTO ledger_accounts (code, kind) VALUES (:a, 'x'), (:b, 'y')"),
            {"a": receivable, "b": fund},
        )
        await conn.execute(
            text("INSERT INTO ledger_entries (id, idempotency_key, memo) VALUES (:id, :k, 'raw')"),
            {"id": entry_id, "k": f"raw:{entry_id}"},
        )
        await conn.execute(
            text(
                "INSERT INTO ledger_lines (entry_id, account_id, debit, credit) "
                "SELECT :id, id, CASE WHEN code = :a THEN 100 ELSE 0 END, "
                "CASE WHEN code = :a THEN 0 ELSE 99 END "
                "FROM ledger_accounts WHERE code IN (:a, :b)"
            ),
            {"id": entry_id, "a": receivable, "b": fund},
        )
        # Inside the transaction the lines are accepted (the check is deferred) ...
        with pytest.raises(DBAPIError, match="not balanced"):
            await conn.commit()  # ... and COMMIT refuses them.
    async with engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM ledger_entries WHERE id = :id"), {"id": entry_id}
        )
    assert found == 0


async def test_database_refuses_an_entry_without_lines(session: AsyncSession) -> None:
    savepoint = await session.begin_nested()
    await session.execute(
        text("INSERT INTO ledger_entries (id, idempotency_key, memo) VALUES (:id, :k, 'x')"),
        {"id": uuid.uuid4(), "k": f"raw:{uuid.uuid4()}"},
    )
    with pytest.raises(DBAPIError, match="not balanced"):
        await _check_deferred(session)
    await savepoint.rollback()


async def test_a_line_debits_or_credits_exactly_one_positive_amount(session: AsyncSession) -> None:
    receivable, fund = _codes()
    entry = await ledger.post_entry(
        session,
        key=f"test:{uuid.uuid4()}",
        memo="ok",
        lines=[Line.dr(receivable, D("5.00")), Line.cr(fund, D("5.00"))],
    )
    with pytest.raises(IntegrityError, match="one_side_positive"):
        async with session.begin_nested():
            await session.execute(
                text(
                    "INSERT INTO ledger_lines (entry_id, account_id, debit, credit) "
                    "SELECT :id, id, 5, 5 FROM ledger_accounts WHERE code = :a"
                ),
                {"id": entry.id, "a": receivable},
            )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_lines SET debit = debit + 1 WHERE entry_id = :id",
        "DELETE FROM ledger_lines WHERE entry_id = :id",
        "UPDATE ledger_entries SET memo = 'changed' WHERE id = :id",
        "DELETE FROM ledger_entries WHERE id = :id",
    ],
)
async def test_ledger_rows_are_never_updated_or_deleted(session: AsyncSession, statement: str) -> None:
    receivable, fund = _codes()
    entry = await ledger.post_entry(
        session,
        key=f"test:{uuid.uuid4()}",
        memo="ok",
        lines=[Line.dr(receivable, D("5.00")), Line.cr(fund, D("5.00"))],
    )
    with pytest.raises(DBAPIError, match="append-only"):
        async with session.begin_nested():
            await session.execute(text(statement), {"id": entry.id})


async def test_a_correction_is_a_reversing_entry_posted_once(session: AsyncSession) -> None:
    receivable, fund = _codes()
    entry = await ledger.post_entry(
        session,
        key=f"test:{uuid.uuid4()}",
        memo="wrong amount",
        lines=[Line.dr(receivable, D("70.00")), Line.cr(fund, D("70.00"))],
    )
    key = f"reverse:{entry.id}"
    reversal = await ledger.reverse_entry(session, entry_id=entry.id, key=key, memo="correction")
    assert await ledger.reverse_entry(session, entry_id=entry.id, key=key, memo="correction") == reversal
    await _check_deferred(session)

    assert reversal.reverses == entry.id
    assert await ledger.balances(session, [receivable, fund]) == {receivable: D("0.00"), fund: D("0.00")}
    with pytest.raises(LedgerError, match="already been reversed"):
        await ledger.reverse_entry(session, entry_id=entry.id, key=f"{key}:again", memo="twice")
    with pytest.raises(LedgerError, match="not reversed"):
        await ledger.reverse_entry(session, entry_id=reversal.id, key=f"{key}:undo", memo="undo")
    debits, credits = await ledger.trial_balance(session)
    assert debits == credits
