"""What one drawdown repayment asks of the database (services/credit/repayments.py): its access is checked
twice (by the route, then by ``repay``) on one read of the drawdown, and the ledger's accounts, once they
exist, are read and not inserted again."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.credit.test_repayments import Borrower, borrower  # noqa: F401


async def test_a_repayment_reads_its_drawdown_once_and_opens_no_account_again(
    borrower: Borrower,  # noqa: F811
    connection: AsyncConnection,
) -> None:
    drawdown_id = await borrower.drawdown("30.00")  # its payment opened both accounts a repayment posts to
    statements: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    sync = connection.sync_engine
    event.listen(sync, "before_cursor_execute", capture)
    try:
        repaid = await borrower.repay(drawdown_id, {"amount": "10.00"})
    finally:
        event.remove(sync, "before_cursor_execute", capture)
    assert repaid.status_code == 201, repaid.text
    assert repaid.json()["ledger_entry"]["lines"] == [
        {"account": "bank_settlement", "debit": "10.00", "credit": "0.00"},
        {"account": f"credit_receivable:{borrower.uscc}", "debit": "0.00", "credit": "10.00"},
    ]
    assert len([s for s in statements if s.startswith("SELECT drawdowns.")]) == 1, statements
    assert not [s for s in statements if s.startswith("INSERT INTO ledger_accounts")], statements
    assert len([s for s in statements if s.startswith("SELECT ledger_accounts.")]) == 1, statements
    assert (await borrower.drawn(drawdown_id))["status"] == "disbursed"
