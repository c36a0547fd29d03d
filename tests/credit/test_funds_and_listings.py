"""Bridge-loan funds (never over-committed, even under concurrent requests and decisions) and listing rewards
(once per enterprise and board, even when reported concurrently; approved by finance and paid through the
bank), through the HTTP API on committed data, with the real Temporal dev server and the bank simulator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.config import Settings
from services.contracts import BenefitsInput, BenefitsStop, PayoutState
from services.credit import ledger
from services.credit.models import BridgeLoan, FundPool
from tests.conftest import bearer
from tests.credit.conftest import PROGRAM, BankSim, arm, auth, enterprise_token, new_uscc, record
from workflows.benefits import BenefitsWorkflow

D = Decimal
CENT = D("0.01")
BRIDGE_PROGRAM = "bridge-test"  # its fund is spent by the concurrency test alone
LIVE = ("pending_approval", "approved", "disbursed")  # the loans that hold the fund's capacity


async def fund(api: httpx.AsyncClient, settings: Settings, program: str) -> dict[str, Any]:
    response = await api.get("/api/v1/funds", headers=auth(settings, "finance"))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = next(f for f in response.json()["items"] if f["program"] == program)
    return found


def loan(amount: str, **extra: Any) -> dict[str, Any]:
    return {"amount": amount, "term_days": 15, "purpose": "repay a maturing bank loan", **extra}


async def armed_companies(sessions: async_sessionmaker[AsyncSession], count: int, program: str) -> list[str]:
    """``count`` new enterprises, each granted a bridge loan in ``program``."""
    companies = [new_uscc() for _ in range(count)]
    for uscc in companies:
        await arm(sessions, uscc, "bridge_loan", program=program)
    return companies


async def ask_loan(api: httpx.AsyncClient, settings: Settings, uscc: str, amount: Decimal) -> httpx.Response:
    """A bridge loan of ``amount`` requested by the enterprise ``uscc`` itself."""
    return await api.post(
        "/api/v1/bridge-loans", json=loan(f"{amount:.2f}"), headers=bearer(enterprise_token(settings, uscc))
    )


async def until(
    api: httpx.AsyncClient, url: str, headers: dict[str, str], check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """GET ``url`` until ``check`` holds (the workflow pays in the background)."""
    async with asyncio.timeout(30):
        while True:
            body: dict[str, Any] = (await api.get(url, headers=headers)).json()
            if check(body):
                return body
            await asyncio.sleep(0.05)


async def finished(resources: Any, workflow_id: str, history: str | None = None) -> PayoutState:
    handle = resources.temporal.get_workflow_handle(workflow_id, result_type=PayoutState)
    async with asyncio.timeout(30):
        result: PayoutState = await handle.result()
    if history:
        await record(handle, history)
    return result


async def frozen_by_revocation(resources: Any, *, recognition_id: uuid.UUID, uscc: str) -> None:
    """The recognition's benefits workflow (the test program's, a specialized-new title for a year) started
    and told its recognition was revoked for fraud: it freezes what the title qualified, and ends revoked."""
    benefits = await resources.temporal.start_workflow(
        BenefitsWorkflow.run,
        BenefitsInput(
            recognition_id=str(recognition_id),
            uscc=uscc,
            tier="specialized_new",
            program=PROGRAM,
            valid_until=datetime.now(UTC) + timedelta(days=365),
        ),
        id=f"benefits-{recognition_id}",
        task_queue=resources.settings.temporal_task_queue,
    )
    await benefits.signal(BenefitsWorkflow.stop, BenefitsStop(reason="fraud found", cause="revoked"))
    assert await benefits.result() == "revoked"


async def assert_fund_matches_its_loans(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], program: str
) -> dict[str, Any]:
    """The fund's committed amount is exactly what its live loans hold, never more than its capacity."""
    shown = await fund(api, settings, program)
    async with sessions() as session:
        held = await session.scalar(
            select(func.coalesce(func.sum(BridgeLoan.amount - BridgeLoan.repaid), 0)).where(
                BridgeLoan.program == program, BridgeLoan.status.in_(LIVE)
            )
        )
        pool = await session.get(FundPool, program)
    assert pool is not None
    assert pool.committed == held == D(shown["committed"])
    assert D(shown["reserved"]) + D(shown["lent"]) == D(shown["committed"])
    assert D(shown["committed"]) <= D(shown["capacity"])
    assert D(shown["available"]) == D(shown["capacity"]) - D(shown["committed"])
    return shown


async def test_concurrent_requests_and_decisions_never_over_commit_the_fund(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    calm_bank: BankSim,
    resources: Any,
) -> None:
    before = await fund(api, settings, BRIDGE_PROGRAM)
    available = D(before["available"])
    assert D(before["capacity"]) == D("1000000.00")
    amount = (available / 12).quantize(CENT, rounding=ROUND_DOWN)  # 20 asks, about 12 fit
    fits = int(available // amount)
    companies = await armed_companies(sessions, 26, BRIDGE_PROGRAM)
    first = await asyncio.gather(*(ask_loan(api, settings, u, amount) for u in companies[:20]))
    codes = [r.status_code for r in first]
    assert codes.count(201) == fits, codes
    assert codes.count(409) == 20 - fits
    assert {r.json()["status"] for r in first if r.status_code == 201} == {"pending_approval"}
    await assert_fund_matches_its_loans(api, settings, sessions, BRIDGE_PROGRAM)

    # Now finance rejects three and approves three while six more enterprises ask: the capacity of the
    # rejected loans goes back to the fund as the new requests race for it.
    pending = [r.json()["id"] for r in first if r.status_code == 201]
    rejected, approved = pending[:3], pending[3:6]

    async def decide(loan_id: str, decision: str) -> httpx.Response:
        return await api.post(
            f"/api/v1/bridge-loans/{loan_id}/approvals",
            json={"decision": decision, "reason": "concurrency"},
            headers=auth(settings, "finance", "finance-fund"),
        )

    second = await asyncio.gather(
        *(decide(i, "reject") for i in rejected),
        *(decide(i, "approve") for i in approved),
        *(ask_loan(api, settings, u, amount) for u in companies[20:]),
    )
    decisions, asks = second[:6], second[6:]
    assert [r.status_code for r in decisions] == [200] * 6, [r.text for r in decisions]
    assert [r.json()["status"] for r in decisions[:3]] == ["rejected"] * 3
    assert {r.json()["status"] for r in decisions[3:]} <= {"approved", "disbursed"}
    granted = [r for r in asks if r.status_code == 201]
    assert {r.status_code for r in asks} <= {201, 409}
    assert len(granted) <= 3  # at most what the rejections freed (less if a request came first)
    for loan_id in approved:
        await until(
            api,
            f"/api/v1/bridge-loans/{loan_id}",
            auth(settings, "finance"),
            lambda b: b["status"] == "disbursed",
        )
    after = await assert_fund_matches_its_loans(api, settings, sessions, BRIDGE_PROGRAM)
    assert D(after["lent"]) - D(before["lent"]) == 3 * amount
    assert D(after["committed"]) - D(before["committed"]) == (fits - 3 + len(granted)) * amount

    async with sessions() as session:
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits
        owners = {r.json()["id"]: r.json()["uscc"] for r in first if r.status_code == 201}
        balances = await ledger.balances(session, [ledger.bridge_receivable(owners[i]) for i in approved])
        assert set(balances.values()) == {amount}
    payments = await calm_bank.payments_for({f"bridge-loan-{i}" for i in approved})
    assert len(payments) == 3


async def test_bridge_loans_follow_the_fund_rules(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uscc = new_uscc()
    owner = bearer(enterprise_token(settings, uscc))
    assert (await api.post("/api/v1/bridge-loans", json=loan("10.00"), headers=owner)).status_code == 409
    await arm(sessions, uscc, "bridge_loan")

    too_big = await api.post("/api/v1/bridge-loans", json=loan("80000000.01"), headers=owner)
    assert too_big.status_code == 422
    assert too_big.json()["errors"] == [{"field": "amount", "message": "over the per-use cap"}]
    too_long = await api.post("/api/v1/bridge-loans", json=loan("10.00", term_days=16), headers=owner)
    assert too_long.json()["errors"][0]["field"] == "term_days"
    assert (await api.post("/api/v1/bridge-loans", json=loan(10.5), headers=owner)).status_code == 422
    other = await api.post("/api/v1/bridge-loans", json=loan("10.00", program="no-such"), headers=owner)
    assert other.status_code == 409
    assert (
        await api.post("/api/v1/bridge-loans", json=loan("10.00"), headers=auth(settings, "finance"))
    ).status_code == 403

    key = {"Idempotency-Key": f"bridge-{uuid.uuid4()}"}
    first = await api.post("/api/v1/bridge-loans", json=loan("12345.67"), headers={**owner, **key})
    again = await api.post("/api/v1/bridge-loans", json=loan("12345.67"), headers={**owner, **key})
    assert first.status_code == 201, first.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    body = first.json()
    assert (body["amount"], body["status"], body["required_approvals"]) == ("12345.67", "pending_approval", 1)
    assert (body["tier"], body["due_on"], body["overdue"], body["disbursement"]) == (
        "specialized_new",
        None,
        False,
        None,
    )
    assert body["ledger_entries"] == []  # nothing is booked before the bank pays
    async with sessions() as session:
        assert await ledger.balance(session, ledger.bridge_receivable(uscc)) == D("0.00")

    for role in ("enterprise", "reviewer"):
        claims = {"uscc": uscc} if role == "enterprise" else {"level": "national", "region": "500000"}
        assert (await api.get("/api/v1/funds", headers=auth(settings, role, **claims))).status_code == 403
    assert (await api.get("/api/v1/funds", headers=auth(settings, "admin"))).status_code == 200


async def test_a_listing_is_rewarded_once_per_board_approved_and_paid(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    calm_bank: BankSim,
    resources: Any,
) -> None:
    uscc = new_uscc()
    owner = bearer(enterprise_token(settings, uscc))
    finance = auth(settings, "finance", "finance-rewards")
    path = f"/api/v1/enterprises/{uscc}/listings"
    listed = {"board": "growth", "listed_on": "2026-06-30", "security_code": "870123"}
    assert (await api.post(path, json=listed, headers=owner)).status_code == 409  # not armed yet
    await arm(sessions, uscc, "credit_line", "listing_reward")

    reports = await asyncio.gather(*(api.post(path, json=listed, headers=owner) for _ in range(10)))
    codes = sorted(r.status_code for r in reports)
    assert codes == [201] + [409] * 9, codes
    [reward] = [r.json() for r in reports if r.status_code == 201]
    assert (reward["board"], reward["amount"], reward["program"]) == ("growth", "250000.00", PROGRAM)
    assert (reward["status"], reward["required_approvals"], reward["reported_by"]) == (
        "pending_approval",
        1,
        f"ent-{uscc}",
    )
    reward_url = f"/api/v1/listing-rewards/{reward['id']}"

    assert (
        await api.post(f"{reward_url}/approvals", json={"decision": "approve"}, headers=owner)
    ).status_code == 403
    reporter_as_finance = auth(settings, "finance", f"ent-{uscc}")
    refused = await api.post(
        f"{reward_url}/approvals", json={"decision": "approve"}, headers=reporter_as_finance
    )
    assert refused.status_code == 403
    assert "requester" in refused.json()["detail"]
    decided = await api.post(f"{reward_url}/approvals", json={"decision": "approve"}, headers=finance)
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] in ("approved", "disbursed")
    assert (
        await finished(resources, f"disbursement-listing-reward-{reward['id']}", "listing-reward-paid")
    ).status == ("disbursed")

    paid = (await api.get(reward_url, headers=owner)).json()
    assert paid["status"] == "disbursed"
    assert (paid["disbursement"]["kind"], paid["disbursement"]["status"]) == ("listing_reward", "paid")
    assert paid["disbursement"]["payout_id"] == reward["id"]
    [entry] = paid["ledger_entries"]
    assert sorted((li["account"], li["debit"], li["credit"]) for li in entry["lines"]) == [
        ("bank_settlement", "0.00", "250000.00"),
        (f"program_fund:{PROGRAM}", "250000.00", "0.00"),
    ]
    assert len(await calm_bank.payments_for({f"listing-reward-{reward['id']}"})) == 1
    assert (await api.post(path, json=listed, headers=owner)).status_code == 409  # once, even after payment

    # An admin reports another board; finance rejects that reward: it stays the board's one.
    incubation = await api.post(path, json={**listed, "board": "incubation"}, headers=auth(settings, "admin"))
    assert incubation.status_code == 201
    assert (incubation.json()["amount"], incubation.json()["reported_by"]) == ("30000.00", "admin-test")
    other_id = incubation.json()["id"]
    rejected = await api.post(
        f"/api/v1/listing-rewards/{other_id}/approvals",
        json={"decision": "reject", "reason": "not on the board's list"},
        headers=finance,
    )
    assert rejected.json()["status"] == "rejected", rejected.text
    await finished(resources, f"disbursement-listing-reward-{other_id}", "listing-reward-rejected")
    again = await api.post(path, json={**listed, "board": "incubation"}, headers=owner)
    assert again.status_code == 409

    mine = (await api.get("/api/v1/listing-rewards", headers=owner)).json()["items"]
    assert {r["id"] for r in mine} == {reward["id"], other_id}
    only_paid = await api.get(
        "/api/v1/listing-rewards", params={"uscc": uscc, "status": "disbursed"}, headers=finance
    )
    assert [r["id"] for r in only_paid.json()["items"]] == [reward["id"]]
    stranger = bearer(enterprise_token(settings, new_uscc()))
    assert (await api.get(reward_url, headers=stranger)).status_code == 404
    assert (await api.get("/api/v1/listing-rewards", params={"uscc": uscc}, headers=stranger)).json()[
        "items"
    ] == []
    reviewer = auth(settings, "reviewer", level="national", region="500000")
    assert (await api.get(reward_url, headers=reviewer)).status_code == 403
    paid_rewards = await api.get(
        "/api/v1/disbursements", params={"uscc": uscc, "kind": "listing_reward"}, headers=finance
    )
    assert [d["payout_id"] for d in paid_rewards.json()["items"]] == [reward["id"]]

    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    for body, field in (
        ({**listed, "board": "moon"}, "board"),
        ({**listed, "listed_on": tomorrow}, "listed_on"),
        ({**listed, "security_code": "x"}, "security_code"),
    ):
        refused = await api.post(path, json={**body, "board": body["board"]}, headers=owner)
        assert refused.status_code == 422, body
        assert refused.json()["errors"][0]["field"] == field
    assert (await api.post(path, json={**listed, "board": "srdi"}, headers=stranger)).status_code == 404
    assert (await api.post(path, json=listed, headers=auth(settings, "finance"))).status_code == 403
