"""Issue 18, parts 2-4: bridge loans repaid in parts (each releasing the fund), terms counted in China's
official working days (holidays and adjusted working weekends) and overdue after them, listing-reward budgets
reserved like every other hold, and admins changing a fund's capacity - through the HTTP API on committed
data, with the Temporal dev server and the bank simulator, and the calendar rules as plain functions."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import chinese_calendar  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.config import Settings
from services.contracts import PayoutCheck
from services.credit import ledger, payouts, policy
from services.credit.models import BridgeLoan, FundPool, RewardBudget
from services.events import BridgeLoanOverdue, OutboxEvent
from tests.conftest import bearer
from tests.credit.conftest import PROGRAM, BankSim, arm, auth, enterprise_token, new_uscc
from tests.credit.test_funds_and_listings import armed_companies, ask_loan, finished, fund, loan, until

D = Decimal
BUDGET_PROGRAM = "budget-test"  # five growth-board rewards a year; spent by the budget test alone
GROWTH = D("250000.00")
CST = policy.POLICY_TZ


def key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


# --- the working-day calendar --------------------------------------------------------------------------


def test_terms_follow_chinas_holidays_and_adjusted_working_weekends() -> None:
    # National Day 2026: 1-7 October off (Thursday to Wednesday); Saturday 10 October is worked instead.
    assert not policy.is_working_day(date(2026, 10, 5))  # a Monday, a holiday
    assert policy.is_working_day(date(2026, 10, 10))  # a Saturday, worked
    assert policy.is_working_day(date(2026, 9, 20))  # a Sunday, worked before Mid-Autumn (25 September)
    assert not policy.is_working_day(date(2026, 9, 25))  # Mid-Autumn Festival, a Friday
    wednesday = date(2026, 9, 30)
    assert policy.add_working_days(wednesday, 1) == date(2026, 10, 8)  # the whole holiday is skipped
    assert policy.add_working_days(wednesday, 3) == date(2026, 10, 10)  # ... and the Saturday counts
    assert policy.add_working_days(wednesday, 4) == date(2026, 10, 12)  # Sunday 11th is off again
    # Weekdays alone would have said 5 October and 7 October.
    # A term and its reminder count the same days, both ways.
    assert policy.reminder_at(date(2026, 10, 12), 3) == datetime(2026, 10, 8, tzinfo=CST)
    assert policy.add_working_days(date(2026, 10, 8), 3) == date(2026, 10, 12)
    approved = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
    assert policy.due_on(approved, 3) == date(2026, 10, 10)
    assert policy.due_at(date(2026, 10, 10)) == datetime(2026, 10, 11, tzinfo=CST)


def test_a_year_beyond_the_package_comes_from_the_calendar_file_else_provisionally(tmp_path: Path) -> None:
    last = max(day.year for day in chinese_calendar.holidays)
    nxt = last + 1
    new_year = date(nxt, 1, 1)
    # Not published anywhere: weekends and the fixed-date statutory holidays are off, nothing else known.
    provisional = policy.PublishedYears.read(tmp_path / "missing.toml")
    assert not policy.is_working_day(new_year, provisional) or new_year.weekday() >= 5
    assert not policy.is_working_day(date(nxt, 10, 2), provisional)
    assert not policy.is_working_day(date(nxt, 5, 2), provisional)
    first_monday = next(date(nxt, 1, d) for d in range(2, 9) if date(nxt, 1, d).weekday() == 0)
    assert policy.is_working_day(first_monday, provisional)
    # Entered from the State Council's notice: its holidays and worked weekend days decide.
    saturday = next(date(nxt, 2, d) for d in range(1, 8) if date(nxt, 2, d).weekday() == 5)
    (tmp_path / "china.toml").write_text(
        f'[years.{nxt}]\nholidays = ["{first_monday}"]\nworkdays = ["{saturday}"]\n', encoding="utf-8"
    )
    published = policy.PublishedYears.read(tmp_path / "china.toml")
    assert not policy.is_working_day(first_monday, published)
    assert policy.is_working_day(saturday, published)
    assert policy.is_working_day(new_year, published) == (new_year.weekday() < 5)  # the file's word only
    # A term that crosses into that year counts on without a gap: never refused, never weekdays alone.
    assert policy.add_working_days(date(last, 12, 30), 3) > date(last, 12, 31)
    # A malformed file is an error naming it, not a guess.
    (tmp_path / "bad.toml").write_text(f'[years.{nxt}]\nholidays = ["{last}-05-01"]\n', encoding="utf-8")
    with pytest.raises(policy.CalendarFileError, match=r"bad\.toml"):
        policy.PublishedYears.read(tmp_path / "bad.toml")


# --- bridge loans repaid in parts --------------------------------------------------------------------------


async def _paid_loan(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], amount: str
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A bridge loan of ``amount`` approved and paid out: (its id, its owner's headers, the loan)."""
    uscc = new_uscc()
    await arm(sessions, uscc, "bridge_loan")
    owner = bearer(enterprise_token(settings, uscc))
    created = await api.post("/api/v1/bridge-loans", json=loan(amount), headers=owner)
    assert created.status_code == 201, created.text
    loan_id = created.json()["id"]
    approved = await api.post(
        f"/api/v1/bridge-loans/{loan_id}/approvals",
        json={"decision": "approve"},
        headers=auth(settings, "finance", "finance-parts"),
    )
    assert approved.status_code == 200, approved.text
    paid = await until(api, f"/api/v1/bridge-loans/{loan_id}", owner, lambda b: b["status"] == "disbursed")
    return loan_id, owner, paid


async def test_a_loan_is_repaid_in_parts_each_releasing_the_fund_never_beyond_outstanding(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    calm_bank: BankSim,
    resources: Any,
) -> None:
    before = await fund(api, settings, PROGRAM)
    loan_id, owner, paid = await _paid_loan(api, settings, sessions, "1000.00")
    assert (paid["repaid"], paid["outstanding"]) == ("0.00", "1000.00")
    lent = await fund(api, settings, PROGRAM)
    assert D(lent["committed"]) - D(before["committed"]) == D("1000.00")
    url = f"/api/v1/bridge-loans/{loan_id}/repayment"
    admin, fin = auth(settings, "admin"), auth(settings, "finance", "finance-repay")

    unkeyed = await api.post(url, json={"amount": "300.00"}, headers=fin)
    assert unkeyed.status_code == 422
    assert unkeyed.json()["errors"] == [{"field": "Idempotency-Key", "message": "required"}]
    assert (await api.post(url, json={"amount": "300.00"}, headers={**owner, **key()})).status_code == 403

    first_key = {**fin, **key()}
    first = await api.post(url, json={"amount": "300.00", "reference": "CNAPS-1"}, headers=first_key)
    assert first.status_code == 200, first.text
    again = await api.post(url, json={"amount": "300.00", "reference": "CNAPS-1"}, headers=first_key)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    body = first.json()
    assert (body["status"], body["repaid"], body["outstanding"], body["repaid_at"]) == (
        "disbursed",
        "300.00",
        "700.00",
        None,
    )
    _payment, part = body["ledger_entries"]
    assert sorted((li["account"], li["debit"], li["credit"]) for li in part["lines"]) == [
        ("bank_settlement", "300.00", "0.00"),
        (f"bridge_receivable:{paid['uscc']}", "0.00", "300.00"),
    ]
    after_part = await fund(api, settings, PROGRAM)
    assert D(lent["committed"]) - D(after_part["committed"]) == D("300.00")  # released once, not twice
    assert D(lent["lent"]) - D(after_part["lent"]) == D("300.00")

    too_much = await api.post(url, json={"amount": "700.01"}, headers={**admin, **key()})
    assert too_much.status_code == 409
    assert too_much.json()["detail"] == "The amount 700.01 is more than the loan's outstanding 700.00."

    # Two more parts at once: each takes its turn on the loan's lock; together they repay it exactly.
    parts = await asyncio.gather(
        *(api.post(url, json={"amount": "350.00"}, headers={**admin, **key()}) for _ in range(2))
    )
    assert sorted(r.status_code for r in parts) == [200, 200], [r.text for r in parts]
    last = max((r.json() for r in parts), key=lambda b: len(b["ledger_entries"]))
    assert (last["status"], last["repaid"], last["outstanding"], last["repaid_by"]) == (
        "repaid",
        "1000.00",
        "0.00",
        "admin-test",
    )
    assert len(last["ledger_entries"]) == 4  # the payment and three repayments
    assert (await api.post(url, json={"amount": "0.01"}, headers={**admin, **key()})).status_code == 409
    assert (await finished(resources, f"disbursement-bridge-loan-{loan_id}")).status == "repaid"
    after = await fund(api, settings, PROGRAM)
    assert (after["committed"], after["lent"]) == (before["committed"], before["lent"])
    async with sessions() as session:
        assert await ledger.balance(session, ledger.bridge_receivable(paid["uscc"])) == D("0.00")
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits


async def test_a_loan_overdue_after_a_holiday_term_is_told_once_with_what_is_outstanding(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    calm_bank: BankSim,
    resources: Any,
) -> None:
    loan_id, owner, _ = await _paid_loan(api, settings, sessions, "2000.00")
    url = f"/api/v1/bridge-loans/{loan_id}/repayment"
    fin = auth(settings, "finance", "finance-overdue")
    assert (await api.post(url, json={"amount": "500.00"}, headers={**fin, **key()})).status_code == 200
    # As if approved on 30 September 2026 for three working days: due Saturday 10 October (a working day).
    due = policy.due_on(datetime(2026, 9, 30, 2, 0, tzinfo=UTC), 3)
    assert due == date(2026, 10, 10)
    async with sessions.begin() as session:
        await session.execute(
            update(BridgeLoan).where(BridgeLoan.id == uuid.UUID(loan_id)).values(due_on=due)
        )
    rules = payouts.KINDS["bridge_loan"]
    just_before = datetime(2026, 10, 10, 23, 59, tzinfo=CST)
    async with sessions() as session:
        row = await session.get(BridgeLoan, uuid.UUID(loan_id))
        assert row is not None
        assert not rules.overdue(row, just_before)
        assert rules.overdue(row, policy.due_at(due))

    async def check(at: datetime) -> None:
        async with sessions.begin() as session:
            await payouts.check(
                session,
                check=PayoutCheck(
                    kind="bridge_loan", payout_id=uuid.UUID(loan_id), expire=False, overdue=True, at=at
                ),
            )

    await check(policy.due_at(due))
    await check(policy.due_at(due) + timedelta(hours=1))  # a retried check tells no one twice
    async with sessions() as session:
        told = list(
            await session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.aggregate_id == uuid.UUID(loan_id), OutboxEvent.type == BridgeLoanOverdue.type
                )
            )
        )
    assert len(told) == 1
    assert (told[0].data["due_on"], told[0].data["outstanding"]) == ("2026-10-10", "1500.00")
    late = (await api.get(f"/api/v1/bridge-loans/{loan_id}", headers=owner)).json()
    assert (late["overdue"], late["outstanding"]) == (True, "1500.00")
    assert late["overdue_since"] is not None

    # Repaid in full, it is no longer overdue; its workflow ends.
    repaid = await api.post(url, json={"amount": "1500.00"}, headers={**fin, **key()})
    assert (repaid.json()["status"], repaid.json()["overdue"]) == ("repaid", False)
    assert (await finished(resources, f"disbursement-bridge-loan-{loan_id}")).status == "repaid"


# --- listing-reward budgets --------------------------------------------------------------------------------


async def _budget(sessions: async_sessionmaker[AsyncSession]) -> Decimal:
    async with sessions() as session:
        committed = await session.scalar(
            select(RewardBudget.committed).where(
                RewardBudget.program == BUDGET_PROGRAM,
                RewardBudget.year == policy.today(datetime.now(UTC)).year,
            )
        )
    return committed if committed is not None else D("0.00")


async def test_concurrent_reports_never_pass_the_budget_and_refusals_give_it_back(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    calm_bank: BankSim,
    resources: Any,
) -> None:
    companies = [new_uscc() for _ in range(22)]
    for uscc in companies:
        await arm(sessions, uscc, "listing_reward", program=BUDGET_PROGRAM)
    listed = {"board": "growth", "listed_on": "2026-06-30", "security_code": "870200"}

    async def report(uscc: str) -> httpx.Response:
        return await api.post(
            f"/api/v1/enterprises/{uscc}/listings",
            json=listed,
            headers=bearer(enterprise_token(settings, uscc)),
        )

    answers = await asyncio.gather(*(report(u) for u in companies[:20]))
    codes = [r.status_code for r in answers]
    assert (codes.count(201), codes.count(409)) == (5, 15), codes
    refused = [r.json() for r in answers if r.status_code == 409]
    year = policy.today(datetime.now(UTC)).year
    assert {r["detail"] for r in refused} == {
        f"The listing-reward budget of program 'budget-test' for {year} has 0.00 left of 1250000.00: "
        "not enough for the reward of 250000.00."
    }
    assert await _budget(sessions) == 5 * GROWTH
    granted = [r.json() for r in answers if r.status_code == 201]
    async with sessions() as session:
        rows = await session.scalar(
            select(func.count()).select_from(RewardBudget).where(RewardBudget.program == BUDGET_PROGRAM)
        )
        assert rows == 1
    # A refused enterprise reports again: still no room, and nothing was recorded for it the first time.
    refused_uscc = next(u for u, r in zip(companies, answers, strict=True) if r.status_code == 409)
    assert (await report(refused_uscc)).status_code == 409

    # Finance rejects one reward: its amount goes back to the budget, and the next report fits.
    finance = auth(settings, "finance", "finance-budget")
    rejected = await api.post(
        f"/api/v1/listing-rewards/{granted[0]['id']}/approvals",
        json={"decision": "reject", "reason": "not listed"},
        headers=finance,
    )
    assert rejected.json()["status"] == "rejected", rejected.text
    assert await _budget(sessions) == 4 * GROWTH
    assert (await report(companies[20])).status_code == 201
    assert await _budget(sessions) == 5 * GROWTH

    # The bank refuses another: its amount goes back too. A paid one keeps its amount.
    refused_by_bank = granted[1]
    await calm_bank.faults(reject_beneficiaries=[refused_by_bank["uscc"]])
    for reward in (refused_by_bank, granted[2]):
        decided = await api.post(
            f"/api/v1/listing-rewards/{reward['id']}/approvals", json={"decision": "approve"}, headers=finance
        )
        assert decided.status_code == 200, decided.text
    assert (await finished(resources, f"disbursement-listing-reward-{refused_by_bank['id']}")).status == (
        "failed"
    )
    assert (await finished(resources, f"disbursement-listing-reward-{granted[2]['id']}")).status == (
        "disbursed"
    )
    assert await _budget(sessions) == 4 * GROWTH
    assert (await report(companies[21])).status_code == 201
    assert (await report(companies[21])).status_code == 409  # once per enterprise and board, as ever
    assert await _budget(sessions) == 5 * GROWTH
    async with sessions() as session:
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits
        assert await ledger.balance(session, ledger.program_fund(BUDGET_PROGRAM)) == GROWTH  # paid once


# --- fund administration -----------------------------------------------------------------------------------

FUND_PROGRAM = "fund-test"  # a fund only these tests change and spend


async def _change(api: httpx.AsyncClient, settings: Settings, body: dict[str, Any]) -> httpx.Response:
    return await api.post(
        f"/api/v1/funds/{FUND_PROGRAM}/capacity-changes",
        json=body,
        headers={**auth(settings, "admin", "admin-funds"), **key()},
    )


async def _borrow(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], amount: Decimal
) -> httpx.Response:
    uscc = new_uscc()
    await arm(sessions, uscc, "bridge_loan", program=FUND_PROGRAM)
    return await api.post(
        "/api/v1/bridge-loans", json=loan(f"{amount:.2f}"), headers=bearer(enterprise_token(settings, uscc))
    )


async def test_an_admin_raises_and_cuts_a_fund_never_below_what_it_has_committed(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], resources: Any
) -> None:
    url = f"/api/v1/funds/{FUND_PROGRAM}/capacity-changes"
    before = await fund(api, settings, FUND_PROGRAM)
    capacity = D(before["capacity"])
    assert capacity == D("1000000.00")  # the program's value is the initial capacity
    assert (await _borrow(api, settings, sessions, D("100000.00"))).status_code == 201
    committed = D((await fund(api, settings, FUND_PROGRAM))["committed"])
    assert committed == D(before["committed"]) + D("100000.00")

    for headers in (auth(settings, "finance"), bearer(enterprise_token(settings, new_uscc()))):
        refused = await api.post(url, json={"delta": "1.00", "reason": "x"}, headers={**headers, **key()})
        assert refused.status_code == 403
    admin = auth(settings, "admin", "admin-funds")
    unkeyed = await api.post(url, json={"delta": "1.00", "reason": "x"}, headers=admin)
    assert unkeyed.json()["errors"] == [{"field": "Idempotency-Key", "message": "required"}]
    for body in (
        {"delta": "1.00"},  # no reason
        {"delta": "1.00", "capacity": "5.00", "reason": "both"},
        {"reason": "neither"},
        {"delta": 1.5, "reason": "a float"},
    ):
        assert (await _change(api, settings, body)).status_code == 422, body
    same = await _change(api, settings, {"capacity": f"{capacity:.2f}", "reason": "no change"})
    assert (same.status_code, same.json()["errors"][0]["field"]) == (422, "capacity")
    missing = await api.post(
        "/api/v1/funds/no-such/capacity-changes",
        json={"delta": "1.00", "reason": "x"},
        headers={**admin, **key()},
    )
    assert missing.status_code == 404

    change_key = {**admin, **key()}
    raised = await api.post(
        url, json={"delta": "500000.00", "reason": "municipal top-up"}, headers=change_key
    )
    assert raised.status_code == 201, raised.text
    replayed = await api.post(
        url, json={"delta": "500000.00", "reason": "municipal top-up"}, headers=change_key
    )
    assert replayed.json() == raised.json()  # once per key
    body = raised.json()
    assert (body["previous_capacity"], body["new_capacity"], body["delta"], body["changed_by"]) == (
        "1000000.00",
        "1500000.00",
        "500000.00",
        "admin-funds",
    )
    assert (body["committed_then"], body["reason"]) == (f"{committed:.2f}", "municipal top-up")
    assert sorted((li["account"], li["debit"], li["credit"]) for li in body["ledger_entry"]["lines"]) == [
        (f"fund_appropriation:{FUND_PROGRAM}", "0.00", "500000.00"),
        (f"fund_capacity:{FUND_PROGRAM}", "500000.00", "0.00"),
    ]
    shown = await fund(api, settings, FUND_PROGRAM)
    assert (shown["capacity"], shown["committed"], shown["available"]) == (
        "1500000.00",
        f"{committed:.2f}",
        f"{D('1500000.00') - committed:.2f}",
    )

    below = await _change(api, settings, {"capacity": f"{committed - D('0.01'):.2f}", "reason": "too far"})
    assert below.status_code == 409
    assert f"{committed:.2f} committed" in below.json()["detail"]
    cut = await _change(api, settings, {"delta": "-900000.00", "reason": "half the money moved elsewhere"})
    assert cut.status_code == 201, cut.text
    assert (cut.json()["new_capacity"], cut.json()["delta"]) == ("600000.00", "-900000.00")
    exact = await _change(api, settings, {"capacity": f"{committed:.2f}", "reason": "down to what is lent"})
    assert exact.status_code == 201, exact.text
    assert (await fund(api, settings, FUND_PROGRAM))["available"] == "0.00"
    assert (await _borrow(api, settings, sessions, D("0.01"))).status_code == 409  # nothing left to lend
    back = await _change(api, settings, {"capacity": "1000000.00", "reason": "back to the policy's"})
    assert back.status_code == 201, back.text

    listed = await api.get(url, headers=auth(settings, "finance"))
    assert listed.status_code == 200
    changes = listed.json()["items"]
    assert [c["id"] for c in changes] == [
        back.json()["id"],
        exact.json()["id"],
        cut.json()["id"],
        body["id"],
    ]  # newest first
    page = await api.get(url, params={"limit": 3}, headers=auth(settings, "admin"))
    rest = await api.get(url, params={"cursor": page.json()["next_cursor"]}, headers=auth(settings, "admin"))
    assert [c["id"] for c in page.json()["items"] + rest.json()["items"]] == [c["id"] for c in changes]
    assert (await api.get(url, headers=bearer(enterprise_token(settings, new_uscc())))).status_code == 403
    async with sessions() as session:
        # The opening capacity was booked before the first change: the account's balance is the capacity.
        assert await ledger.balance(session, ledger.fund_capacity(FUND_PROGRAM)) == D("1000000.00")
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits


async def test_a_cut_racing_bridge_loan_requests_never_leaves_the_fund_over_committed(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], resources: Any
) -> None:
    """Bridge loans are requested while an admin cuts the fund to what is committed plus room for three:
    whatever the order, the fund never commits more than its capacity; the cut is refused only when the loans
    before it took more than that room."""
    before = await fund(api, settings, FUND_PROGRAM)
    capacity, committed = D(before["capacity"]), D(before["committed"])
    amount = D("10000.00")
    target = committed + 3 * amount
    companies = await armed_companies(sessions, 8, FUND_PROGRAM)
    results = await asyncio.gather(
        *(ask_loan(api, settings, u, amount) for u in companies[:4]),
        _change(api, settings, {"capacity": f"{target:.2f}", "reason": "cut while lending"}),
        *(ask_loan(api, settings, u, amount) for u in companies[4:]),
    )
    cut, asks = results[4], results[:4] + results[5:]
    assert {r.status_code for r in asks} <= {201, 409}, [r.text for r in asks]
    granted = sum(1 for r in asks if r.status_code == 201)
    async with sessions() as session:
        pool = await session.get(FundPool, FUND_PROGRAM)
        assert pool is not None
        assert pool.committed == committed + granted * amount
        assert pool.committed <= pool.capacity
        if cut.status_code == 201:
            assert pool.capacity == target
            assert granted <= 3
        else:
            assert cut.status_code == 409, cut.text
            assert pool.capacity == capacity
            assert granted >= 4
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits
