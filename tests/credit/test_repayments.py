"""Drawdown repayments and revolving credit lines (services/credit/repayments.py): the HTTP contract inside a
rolled-back transaction (no Temporal: drawdowns are approved and paid through the activity-side functions
the disbursement workflow calls), the overdue sweep, and 500 concurrent drawdowns and repayments on one line
on committed data with a checker reading alongside."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import ApprovalRequest, BenefitsFreeze, PaymentReceipt
from services.credit import ledger, payouts, repayments, repository, service
from services.credit.models import CreditLine, Drawdown
from services.credit.schemas import DrawdownCreate, DrawdownRepaymentCreate
from services.errors import Conflict, Unprocessable
from services.events import OutboxEvent
from services.programs import load_programs
from tests.conftest import bearer
from tests.credit.conftest import PROGRAMS, auth, enterprise_token, new_uscc, open_line

D = Decimal
API = "/api/v1"
PROGRAMS_LOADED = load_programs(PROGRAMS)


def owner(uscc: str) -> CurrentUser:
    return CurrentUser(sub=f"ent-{uscc}", role=Role.enterprise, uscc=uscc)


async def paid_drawdown(
    sessions: async_sessionmaker[AsyncSession], uscc: str, line_id: uuid.UUID, amount: Decimal
) -> uuid.UUID:
    """A drawdown requested, approved and paid, each step in a transaction of its own, through the functions
    the route and the disbursement workflow's activities call."""
    async with sessions.begin() as session:
        drawdown = await service.request_drawdown(
            session,
            user=owner(uscc),
            line_id=line_id,
            data=DrawdownCreate(amount=amount),
            programs=PROGRAMS_LOADED,
        )
    async with sessions.begin() as session:
        await payouts.record_decision(
            session,
            request=ApprovalRequest(payout_id=drawdown.id, approver="finance-repay", decision="approve"),
        )
    async with sessions.begin() as session:
        await payouts.confirm(session, receipt=PaymentReceipt(payout_id=drawdown.id, bank_reference="B-1"))
    return drawdown.id


class Borrower:
    def __init__(
        self, api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self.api, self.settings, self.sessions = api, settings, sessions
        self.uscc = new_uscc()
        self.headers = bearer(enterprise_token(settings, self.uscc))
        self.line_id = uuid.uuid4()

    async def open(self, limit: str = "100000.00") -> Borrower:
        self.line_id = await open_line(self.sessions, uscc=self.uscc, limit=D(limit))
        return self

    async def drawdown(self, amount: str) -> uuid.UUID:
        return await paid_drawdown(self.sessions, self.uscc, self.line_id, D(amount))

    async def repay(
        self,
        drawdown_id: uuid.UUID,
        body: dict[str, Any],
        *,
        key: str | None = "auto",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = dict(headers or self.headers)
        if key is not None:
            sent["Idempotency-Key"] = f"repay-{uuid.uuid4()}" if key == "auto" else key
        return await self.api.post(f"{API}/drawdowns/{drawdown_id}/repayments", json=body, headers=sent)

    async def line(self) -> dict[str, Any]:
        response = await self.api.get(f"{API}/credit-lines/{self.line_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def drawn(self, drawdown_id: uuid.UUID) -> dict[str, Any]:
        response = await self.api.get(f"{API}/drawdowns/{drawdown_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def borrower(
    api_rollback: httpx.AsyncClient, settings: Settings, rollback_sessions: async_sessionmaker[AsyncSession]
) -> Borrower:
    return await Borrower(api_rollback, settings, rollback_sessions).open()


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def test_partial_and_full_repayments_restore_the_line_and_post_balanced_entries(
    borrower: Borrower, settings: Settings
) -> None:
    drawdown_id = await borrower.drawdown("30000.00")
    line = await borrower.line()
    assert {k: line[k] for k in ("limit", "drawn", "repaid", "outstanding", "available", "overdue")} == {
        "limit": "100000.00",
        "drawn": "30000.00",
        "repaid": "0.00",
        "outstanding": "30000.00",
        "available": "70000.00",
        "overdue": "0.00",
    }
    view = await borrower.drawn(drawdown_id)
    assert view["term"] == "P12M"
    assert view["due_at"] is not None
    assert (view["outstanding"], view["overdue"], view["status"]) == ("30000.00", False, "disbursed")

    first = await borrower.repay(drawdown_id, {"amount": "10000.00", "reference": "TRF-1"})
    assert first.status_code == 201, first.text
    assert first.json()["ledger_entry"]["lines"] == [
        {"account": ledger.BANK_SETTLEMENT, "debit": "10000.00", "credit": "0.00"},
        {"account": ledger.credit_receivable(borrower.uscc), "debit": "0.00", "credit": "10000.00"},
    ]
    line = await borrower.line()
    assert (line["repaid"], line["outstanding"], line["available"]) == ("10000.00", "20000.00", "80000.00")

    # Finance records the rest: nothing is outstanding, the drawdown is repaid.
    second = await borrower.repay(
        drawdown_id, {"amount": "20000.00"}, headers=auth(settings, "finance", "fin-1")
    )
    assert second.status_code == 201, second.text
    assert second.json()["recorded_by"] == "fin-1"
    view = await borrower.drawn(drawdown_id)
    assert (view["status"], view["repaid"], view["outstanding"]) == ("repaid", "30000.00", "0.00")
    # The drawdown's ledger: the payment and each repayment; the receivable is back to zero.
    receivable = ledger.credit_receivable(borrower.uscc)
    moves = sorted(
        (line["debit"], line["credit"])
        for e in view["ledger_entries"]
        for line in e["lines"]
        if line["account"] == receivable
    )
    assert moves == [("0.00", "10000.00"), ("0.00", "20000.00"), ("30000.00", "0.00")]
    line = await borrower.line()
    assert (line["drawn"], line["repaid"], line["outstanding"], line["available"]) == (
        "30000.00",
        "30000.00",
        "0.00",
        "100000.00",
    )
    listed = await borrower.api.get(f"{API}/drawdowns/{drawdown_id}/repayments", headers=borrower.headers)
    assert [item["amount"] for item in listed.json()["items"]] == ["20000.00", "10000.00"]  # newest first
    # The line revolves: the whole limit can be drawn again.
    await borrower.drawdown("100000.00")
    assert (await borrower.line())["available"] == "0.00"
    async with borrower.sessions() as session:
        assert await ledger.balance(session, ledger.credit_receivable(borrower.uscc)) == D("100000.00")
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits


async def test_never_more_than_outstanding_never_unpaid_and_the_key_is_required(
    borrower: Borrower, settings: Settings
) -> None:
    drawdown_id = await borrower.drawdown("5000.00")
    too_much = problem(await borrower.repay(drawdown_id, {"amount": "5000.01"}), 422)
    assert too_much["errors"] == [{"field": "amount", "message": "more than outstanding"}]
    assert "5000.00 outstanding" in too_much["detail"]
    missing = problem(await borrower.repay(drawdown_id, {"amount": "1.00"}, key=None), 422)
    assert missing["errors"][0]["field"] == "Idempotency-Key"
    for bad in ("1", 1.5, "0.00", "-1.00"):
        problem(await borrower.repay(drawdown_id, {"amount": bad}), 422)
    tomorrow = str(payouts.now().date() + timedelta(days=2))
    problem(await borrower.repay(drawdown_id, {"amount": "1.00", "paid_on": tomorrow}), 422)

    # Requested but not paid out: nothing to repay.
    async with borrower.sessions.begin() as session:
        pending = await service.request_drawdown(
            session,
            user=owner(borrower.uscc),
            line_id=borrower.line_id,
            data=DrawdownCreate(amount=D("100.00")),
            programs=PROGRAMS_LOADED,
        )
    assert (
        "only a drawdown paid out"
        in problem(await borrower.repay(pending.id, {"amount": "1.00"}), 409)["detail"]
    )

    # Who: another enterprise does not see it, a reviewer or an admin may not record it.
    stranger = bearer(enterprise_token(settings, new_uscc()))
    problem(await borrower.repay(drawdown_id, {"amount": "1.00"}, headers=stranger), 404)
    problem(await borrower.repay(drawdown_id, {"amount": "1.00"}, headers=auth(settings, "admin")), 403)
    reviewer = auth(settings, "reviewer", level="municipal", region="500100")
    problem(await borrower.repay(drawdown_id, {"amount": "1.00"}, headers=reviewer), 403)
    problem(await borrower.repay(uuid.uuid4(), {"amount": "1.00"}), 404)

    full = await borrower.repay(drawdown_id, {"amount": "5000.00"})
    assert full.status_code == 201
    assert "repaid in full" in problem(await borrower.repay(drawdown_id, {"amount": "0.01"}), 409)["detail"]


async def test_a_retry_with_the_same_key_is_answered_once(borrower: Borrower) -> None:
    drawdown_id = await borrower.drawdown("900.00")
    body = {"amount": "300.00", "paid_on": str(payouts.now().date() - timedelta(days=1))}
    first = await borrower.repay(drawdown_id, body, key="repay-once")
    again = await borrower.repay(drawdown_id, body, key="repay-once")
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    problem(await borrower.repay(drawdown_id, {"amount": "301.00"}, key="repay-once"), 422)
    line = await borrower.line()
    assert (line["repaid"], line["outstanding"]) == ("300.00", "600.00")
    listed = await borrower.api.get(f"{API}/drawdowns/{drawdown_id}/repayments", headers=borrower.headers)
    assert len(listed.json()["items"]) == 1


async def test_overdue_drawdowns_are_flagged_block_new_drawdowns_and_are_announced_once(
    borrower: Borrower,
) -> None:
    drawdown_id = await borrower.drawdown("4000.00")
    async with borrower.sessions.begin() as session:
        await session.execute(
            update(Drawdown)
            .where(Drawdown.id == drawdown_id)
            .values(due_at=payouts.now() - timedelta(hours=1))
        )
    view = await borrower.drawn(drawdown_id)
    assert view["overdue"] is True
    assert view["overdue_since"] is None
    assert (await borrower.line())["overdue"] == "4000.00"
    refused = problem(
        await borrower.api.post(
            f"{API}/credit-lines/{borrower.line_id}/drawdowns",
            json={"amount": "1.00"},
            headers={**borrower.headers, "Idempotency-Key": "blocked"},
        ),
        409,
    )
    assert "4000.00 overdue" in refused["detail"]

    assert await repayments.sweep_overdue(borrower.sessions) >= 1
    assert await repayments.sweep_overdue(borrower.sessions) == 0  # once
    async with borrower.sessions() as session:
        told = await session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.aggregate_id == drawdown_id, OutboxEvent.type == "drawdown.overdue"
            )
        )
        [event] = list(told)
    assert event.data["outstanding"] == "4000.00"
    assert event.uscc == borrower.uscc
    assert event.finance
    assert (await borrower.drawn(drawdown_id))["overdue_since"] is not None

    # Repaid in part: still overdue; in full: the line takes drawdowns again.
    assert (await borrower.repay(drawdown_id, {"amount": "1000.00"})).status_code == 201
    assert (await borrower.line())["overdue"] == "3000.00"
    assert (await borrower.repay(drawdown_id, {"amount": "3000.00"})).status_code == 201
    line = await borrower.line()
    assert (line["overdue"], line["available"]) == ("0.00", "100000.00")
    assert (await borrower.drawn(drawdown_id))["overdue"] is False
    await borrower.drawdown("10.00")
    async with borrower.sessions() as session:
        repaid_events = await session.scalars(
            select(OutboxEvent.data).where(
                OutboxEvent.aggregate_id == drawdown_id, OutboxEvent.type == "drawdown.repaid"
            )
        )
        assert sorted(data["outstanding"] for data in repaid_events) == ["0.00", "3000.00"]


async def test_a_frozen_line_takes_no_drawdowns_and_still_takes_repayments(borrower: Borrower) -> None:
    drawdown_id = await borrower.drawdown("2500.00")
    async with borrower.sessions.begin() as session:
        line = await repository.get_credit_line(session, borrower.line_id)
        assert line is not None
        await service.freeze_benefits(
            session,
            data=BenefitsFreeze(recognition_id=line.recognition_id, reason="revoked", at=payouts.now()),
        )
    with pytest.raises(Conflict, match="frozen"):
        await borrower.drawdown("1.00")
    assert (await borrower.repay(drawdown_id, {"amount": "2500.00"})).status_code == 201
    line_read = await borrower.line()
    assert (line_read["status"], line_read["outstanding"]) == ("frozen", "0.00")


async def test_the_disbursement_export_shows_repayments(borrower: Borrower, settings: Settings) -> None:
    drawdown_id = await borrower.drawdown("800.00")
    assert (await borrower.repay(drawdown_id, {"amount": "300.00"})).status_code == 201
    params = {"uscc": borrower.uscc}
    page = await borrower.api.get(f"{API}/disbursements", params=params, headers=auth(settings, "finance"))
    [item] = page.json()["items"]
    assert (item["repaid"], item["outstanding"]) == ("300.00", "500.00")
    export = await borrower.api.get(
        f"{API}/disbursements", params=params, headers={**auth(settings, "finance"), "Accept": "text/csv"}
    )
    [row] = list(csv.DictReader(io.StringIO(export.text)))
    assert (row["payout_id"], row["amount"], row["repaid"], row["outstanding"]) == (
        str(drawdown_id),
        "800.00",
        "300.00",
        "500.00",
    )


# --- 500 concurrent drawdowns and repayments on one line, a checker alongside ---------------------------

LIMIT = D("50000.00")
OPERATIONS = 500
CHECK_SQL = text(
    """
    SELECT l.credit_limit, l.reserved, l.drawn, l.repaid,
      (SELECT coalesce(sum(amount), 0) FROM drawdowns
        WHERE credit_line_id = l.id AND status IN ('disbursed', 'repaid')) AS paid_out,
      (SELECT coalesce(sum(amount), 0) FROM drawdowns
        WHERE credit_line_id = l.id AND status IN ('pending_approval', 'approved')) AS held,
      (SELECT coalesce(sum(repaid), 0) FROM drawdowns WHERE credit_line_id = l.id) AS drawdowns_repaid,
      (SELECT count(*) FROM drawdowns
        WHERE credit_line_id = l.id AND (repaid < 0 OR repaid > amount)) AS broken_drawdowns,
      (SELECT coalesce(sum(amount), 0) FROM drawdown_repayments WHERE credit_line_id = l.id) AS repayments,
      (SELECT coalesce(sum(ll.debit - ll.credit), 0) FROM ledger_lines ll
        JOIN ledger_accounts a ON a.id = ll.account_id WHERE a.code = :receivable) AS receivable,
      (SELECT coalesce(sum(debit), 0) - coalesce(sum(credit), 0) FROM ledger_lines) AS imbalance
    FROM credit_lines l WHERE l.id = :line_id
    """
)


def check(row: Any) -> list[str]:
    """What is wrong in one consistent snapshot of the line, its drawdowns, repayments and the ledger."""
    limit, reserved, drawn, repaid = row.credit_limit, row.reserved, row.drawn, row.repaid
    outstanding = drawn - repaid
    wrong = []
    if not D(0) <= outstanding <= limit:
        wrong.append(f"outstanding {outstanding} outside 0..{limit}")
    if reserved < 0 or reserved + outstanding > limit:
        wrong.append(f"reserved {reserved} + outstanding {outstanding} beyond {limit}")
    if (drawn, reserved) != (row.paid_out, row.held):
        wrong.append(f"line drawn/reserved {drawn}/{reserved} != drawdowns {row.paid_out}/{row.held}")
    if not repaid == row.drawdowns_repaid == row.repayments:
        wrong.append(f"repaid: line {repaid}, drawdowns {row.drawdowns_repaid}, repayments {row.repayments}")
    if row.broken_drawdowns:
        wrong.append(f"{row.broken_drawdowns} drawdowns repaid beyond their amount")
    if row.receivable != outstanding:
        wrong.append(f"receivable {row.receivable} != outstanding {outstanding}")
    if row.imbalance != 0:
        wrong.append(f"ledger off balance by {row.imbalance}")
    return wrong


async def snapshot(engine: AsyncEngine, line_id: uuid.UUID, uscc: str) -> Any:
    """One REPEATABLE READ transaction of its own: every figure from the same snapshot."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            result = await conn.execute(
                CHECK_SQL, {"line_id": line_id, "receivable": ledger.credit_receivable(uscc)}
            )
            return result.one()


@pytest.fixture
def committed(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def test_500_concurrent_drawdowns_and_repayments_keep_the_line_and_the_ledger_sound(
    engine: AsyncEngine, committed: async_sessionmaker[AsyncSession]
) -> None:
    rng = random.Random(18)
    uscc = new_uscc()
    line_id = await open_line(committed, uscc=uscc, limit=LIMIT)
    paid: list[uuid.UUID] = []
    outcomes: dict[str, int] = {}
    gate = asyncio.Semaphore(12)  # the engine's pool (10 + 10 overflow) minus the checker's and some room

    def count(what: str) -> None:
        outcomes[what] = outcomes.get(what, 0) + 1

    async def draw() -> None:
        async with gate:
            try:
                paid.append(await paid_drawdown(committed, uscc, line_id, D(rng.randint(100, 4000))))
                count("drawn")
            except Conflict:
                count("refused: beyond the available amount")

    async def repay() -> None:
        async with gate:
            if not paid:
                count("nothing to repay yet")
                return
            target = rng.choice(paid)
            amount = D(rng.randint(1, 300000)) / 100
            try:
                async with committed.begin() as session:
                    await repayments.repay(
                        session,
                        user=owner(uscc),
                        drawdown_id=target,
                        data=DrawdownRepaymentCreate(amount=amount),
                        key="test",
                    )
                count("repaid")
            except (Conflict, Unprocessable):
                count("refused: more than outstanding, or repaid already")

    checks: list[list[str]] = []
    done = asyncio.Event()

    async def checker() -> None:
        while not done.is_set():
            checks.append(check(await snapshot(engine, line_id, uscc)))
            await asyncio.sleep(0.005)

    for _ in range(20):  # a few paid drawdowns first, so that repayments have targets from the start
        await draw()
    started = time.monotonic()
    watching = asyncio.create_task(checker())
    work = [draw() if i % 2 else repay() for i in range(OPERATIONS)]
    rng.shuffle(work)
    await asyncio.gather(*work)
    done.set()
    await watching
    elapsed = time.monotonic() - started

    final = await snapshot(engine, line_id, uscc)
    checks.append(check(final))
    failures = [wrong for wrong in checks if wrong]
    assert not failures, f"{len(failures)} of {len(checks)} snapshots were wrong, the first: {failures[0]}"
    assert len(checks) >= 10, f"the checker ran only {len(checks)} times in {elapsed:.1f} s"
    assert outcomes.get("drawn", 0) > 50, outcomes
    assert outcomes.get("repaid", 0) > 50, outcomes
    async with committed() as session:
        line = await session.get(CreditLine, line_id)
        assert line is not None
        assert line.available == line.credit_limit - line.reserved - line.outstanding
        assert line.reserved == 0
        assert line.outstanding == final.drawn - final.repaid
