"""Bridge loans from a program's fund: maker-checker approval, payment through the bank by the disbursement
workflow, repayment, overdue loans, the approval deadline and the freeze of a revoked recognition - through
the HTTP API on the dev server, and in the time-skipping environment for the deadlines."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import PayoutKind, PayoutState
from services.credit import funds, ledger, payouts, policy, repository, service
from services.credit.models import BridgeLoan
from services.credit.schemas import ApprovalCreate, BridgeLoanCreate, ListingCreate, RepaymentCreate
from services.errors import Conflict
from services.resources import Resources
from tests.conftest import bearer
from tests.credit.conftest import PROGRAM, BankSim, arm, auth, enterprise_token, new_uscc, record
from tests.credit.test_funds_and_listings import finished, frozen_by_revocation, fund, loan, until

D = Decimal


class Borrower:
    def __init__(self, api: httpx.AsyncClient, settings: Settings, uscc: str) -> None:
        self.api, self.settings, self.uscc = api, settings, uscc
        self.sub = f"ent-{uscc}"
        self.headers = bearer(enterprise_token(settings, uscc, self.sub))

    async def borrow(self, amount: str, **extra: Any) -> dict[str, Any]:
        response = await self.api.post(
            "/api/v1/bridge-loans", json=loan(amount, **extra), headers=self.headers
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def borrower(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> Borrower:
    uscc = new_uscc()
    await arm(sessions, uscc, "bridge_loan", "listing_reward", tier="little_giant")
    return Borrower(api, settings, uscc)


def finance(settings: Settings, sub: str = "finance-1") -> dict[str, str]:
    return auth(settings, "finance", sub)


async def decide(
    api: httpx.AsyncClient, headers: dict[str, str], loan_id: str, decision: str = "approve"
) -> httpx.Response:
    return await api.post(
        f"/api/v1/bridge-loans/{loan_id}/approvals",
        json={"decision": decision, "reason": "checked"},
        headers=headers,
    )


async def repay(
    api: httpx.AsyncClient, headers: dict[str, str], loan_id: str, amount: str, **extra: str
) -> httpx.Response:
    """A repayment, under a fresh Idempotency-Key unless ``headers`` bring one (the route requires it)."""
    return await api.post(
        f"/api/v1/bridge-loans/{loan_id}/repayment",
        json={"amount": amount, **extra},
        headers={"Idempotency-Key": f"repay-{uuid.uuid4()}", **headers},
    )


def test_terms_count_working_days_in_china_standard_time() -> None:
    friday = date(2026, 11, 20)
    assert policy.add_working_days(friday, 1) == date(2026, 11, 23)  # the weekend does not count
    assert policy.add_working_days(friday, 15) == date(2026, 12, 11)  # three weeks
    assert policy.add_working_days(date(2026, 11, 21), 1) == date(2026, 11, 23)  # from a Saturday
    with pytest.raises(ValueError, match="at least one"):
        policy.add_working_days(friday, 0)
    # Thursday 17:00 UTC is already Friday 01:00 in Beijing: one working day later is Monday.
    assert policy.due_on(datetime(2026, 11, 19, 17, 0, tzinfo=UTC), 1) == date(2026, 11, 23)
    assert policy.due_on(datetime(2026, 11, 19, 15, 59, tzinfo=UTC), 1) == date(2026, 11, 20)
    assert policy.due_at(date(2026, 11, 23)) == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)


async def test_two_distinct_approvers_then_payment_then_repayment(
    api: httpx.AsyncClient,
    settings: Settings,
    borrower: Borrower,
    resources: Any,
    calm_bank: BankSim,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    before = await fund(api, settings, PROGRAM)
    created = await borrower.borrow("1500000.00", term_days=10)
    loan_id = created["id"]
    assert (created["status"], created["required_approvals"]) == ("pending_approval", 2)
    reserved = await fund(api, settings, PROGRAM)
    assert D(reserved["reserved"]) - D(before["reserved"]) == D("1500000.00")
    assert D(reserved["available"]) == D(before["available"]) - D("1500000.00")

    assert (await decide(api, borrower.headers, loan_id)).status_code == 403  # not finance
    refused = await decide(api, finance(settings, borrower.sub), loan_id)  # the maker holding a finance role
    assert refused.status_code == 403
    assert "requester of a bridge loan" in refused.json()["detail"]
    one = await decide(api, finance(settings, "finance-a"), loan_id)
    assert one.status_code == 200, one.text
    assert (one.json()["status"], [a["approver"] for a in one.json()["approvals"]]) == (
        "pending_approval",
        ["finance-a"],
    )
    assert (await decide(api, finance(settings, "finance-a"), loan_id)).status_code == 409
    two = await decide(api, finance(settings, "finance-b"), loan_id)
    assert two.status_code == 200, two.text
    assert two.json()["status"] in ("approved", "disbursed")
    url = f"/api/v1/bridge-loans/{loan_id}"
    paid = await until(api, url, borrower.headers, lambda b: b["status"] == "disbursed")

    approved_on = datetime.fromisoformat(paid["decided_at"])
    assert paid["due_on"] == policy.due_on(approved_on, 10).isoformat()
    assert paid["overdue"] is False
    assert (paid["disbursement"]["kind"], paid["disbursement"]["status"]) == ("bridge_loan", "paid")
    assert paid["disbursement"]["bank_reference"].startswith("BSIM-")
    [entry] = paid["ledger_entries"]
    assert sorted((li["account"], li["debit"], li["credit"]) for li in entry["lines"]) == [
        ("bank_settlement", "0.00", "1500000.00"),
        (f"bridge_receivable:{borrower.uscc}", "1500000.00", "0.00"),
    ]
    assert len(await calm_bank.payments_for({f"bridge-loan-{loan_id}"})) == 1
    lent = await fund(api, settings, PROGRAM)
    assert D(lent["lent"]) - D(before["lent"]) == D("1500000.00")
    assert (await decide(api, finance(settings, "finance-c"), loan_id)).status_code == 409
    listed = await api.get(
        "/api/v1/disbursements",
        params={"uscc": borrower.uscc, "kind": "bridge_loan"},
        headers=finance(settings),
    )
    assert [d["payout_id"] for d in listed.json()["items"]] == [loan_id]

    # The repayment: finance or admin, at most what is outstanding, once.
    assert (await repay(api, borrower.headers, loan_id, "1500000.00")).status_code == 403
    assert (await repay(api, finance(settings, borrower.sub), loan_id, "1500000.00")).status_code == 403
    wrong = await repay(api, finance(settings), loan_id, "1500000.01")
    assert wrong.status_code == 409
    assert "outstanding 1500000.00" in wrong.json()["detail"]
    key = {"Idempotency-Key": f"repay-{uuid.uuid4()}"}
    admin = {**auth(settings, "admin"), **key}
    repaid = await repay(api, admin, loan_id, "1500000.00", reference="CNAPS-2026-0001")
    replayed = await repay(api, admin, loan_id, "1500000.00", reference="CNAPS-2026-0001")
    assert repaid.status_code == 200, repaid.text
    assert replayed.json() == repaid.json()
    body = repaid.json()
    assert (body["status"], body["repaid_by"], body["repayment_reference"], body["overdue"]) == (
        "repaid",
        "admin-test",
        "CNAPS-2026-0001",
        False,
    )
    assert len(body["ledger_entries"]) == 2
    assert (await repay(api, finance(settings), loan_id, "1500000.00")).status_code == 409
    final = await finished(
        resources, f"disbursement-bridge-loan-{loan_id}", "bridge-loan-dual-approval-paid-repaid"
    )
    assert final.status == "repaid"  # the repayment ended the wait for the due date
    after = await fund(api, settings, PROGRAM)
    assert (after["committed"], after["lent"]) == (before["committed"], before["lent"])
    async with sessions() as session:
        assert await ledger.balance(session, ledger.bridge_receivable(borrower.uscc)) == D("0.00")


async def test_rejection_and_bank_refusal_release_the_fund_and_reads_are_scoped(
    api: httpx.AsyncClient,
    settings: Settings,
    borrower: Borrower,
    resources: Any,
    calm_bank: BankSim,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    before = await fund(api, settings, PROGRAM)
    rejected = await borrower.borrow("700.00")
    response = await decide(api, finance(settings), rejected["id"], "reject")
    assert (response.json()["status"], response.json()["reason"]) == (
        "rejected",
        "rejected by finance: checked",
    )
    assert (
        await finished(resources, f"disbursement-bridge-loan-{rejected['id']}", "bridge-loan-rejected")
    ).status == ("rejected")

    await calm_bank.faults(reject_beneficiaries=[borrower.uscc])
    refused = await borrower.borrow("800.00")
    assert (await decide(api, finance(settings), refused["id"])).status_code == 200
    state = await finished(resources, f"disbursement-bridge-loan-{refused['id']}", "bridge-loan-bank-refused")
    assert state.status == "failed"
    failed = (await api.get(f"/api/v1/bridge-loans/{refused['id']}", headers=borrower.headers)).json()
    assert "account is closed" in failed["reason"]
    assert (failed["disbursement"]["status"], failed["ledger_entries"]) == ("failed", [])
    await calm_bank.calm()
    after = await fund(api, settings, PROGRAM)
    assert (after["committed"], after["reserved"]) == (before["committed"], before["reserved"])

    # Reads: the owner and finance see the loans, another enterprise does not, a reviewer may not look.
    held = await borrower.borrow("900.00")
    mine = (await api.get("/api/v1/bridge-loans", headers=borrower.headers)).json()
    assert [item["id"] for item in mine["items"]] == [held["id"], refused["id"], rejected["id"]]
    page = (
        await api.get(
            "/api/v1/bridge-loans", params={"uscc": borrower.uscc, "limit": 2}, headers=finance(settings)
        )
    ).json()
    rest = (
        await api.get(
            "/api/v1/bridge-loans",
            params={"uscc": borrower.uscc, "cursor": page["next_cursor"]},
            headers=finance(settings),
        )
    ).json()
    assert [i["id"] for i in page["items"] + rest["items"]] == [held["id"], refused["id"], rejected["id"]]
    by_status = await api.get(
        "/api/v1/bridge-loans",
        params={"uscc": borrower.uscc, "status": "failed"},
        headers=auth(settings, "admin"),
    )
    assert [i["id"] for i in by_status.json()["items"]] == [refused["id"]]
    stranger = bearer(enterprise_token(settings, new_uscc()))
    assert (await api.get(f"/api/v1/bridge-loans/{held['id']}", headers=stranger)).status_code == 404
    assert (await api.get("/api/v1/bridge-loans", params={"uscc": borrower.uscc}, headers=stranger)).json()[
        "items"
    ] == []
    reviewer = auth(settings, "reviewer", level="national", region="500000")
    assert (await api.get(f"/api/v1/bridge-loans/{held['id']}", headers=reviewer)).status_code == 403
    assert (await api.get("/api/v1/bridge-loans", headers=reviewer)).status_code == 403
    assert (await decide(api, finance(settings), str(uuid.uuid4()))).status_code == 404
    assert (await repay(api, finance(settings), held["id"], "900.00")).status_code == 409  # not paid out yet

    # Overdue is also computed on read: a loan paid out whose due date has passed, before any timer fires.
    assert (await decide(api, finance(settings), held["id"])).status_code == 200
    await until(
        api, f"/api/v1/bridge-loans/{held['id']}", borrower.headers, lambda b: b["status"] == "disbursed"
    )
    async with sessions.begin() as session:
        await session.execute(
            update(BridgeLoan).where(BridgeLoan.id == uuid.UUID(held["id"])).values(due_on=date(2026, 1, 5))
        )
    late = (await api.get(f"/api/v1/bridge-loans/{held['id']}", headers=borrower.headers)).json()
    assert (late["overdue"], late["overdue_since"]) == (True, None)
    overdue = await api.get(
        "/api/v1/bridge-loans", params={"uscc": borrower.uscc, "overdue": "true"}, headers=finance(settings)
    )
    assert [i["id"] for i in overdue.json()["items"]] == [held["id"]]
    current = await api.get(
        "/api/v1/bridge-loans", params={"uscc": borrower.uscc, "overdue": "false"}, headers=finance(settings)
    )
    assert held["id"] not in {i["id"] for i in current.json()["items"]}
    assert (await repay(api, finance(settings), held["id"], "900.00")).json()["overdue"] is False


async def test_revoking_the_recognition_rejects_its_pending_bridge_loans_and_listing_rewards(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession], resources: Any
) -> None:
    uscc = new_uscc()
    recognition_id = await arm(sessions, uscc, "bridge_loan", "listing_reward")
    borrower = Borrower(api, settings, uscc)
    before = await fund(api, settings, PROGRAM)
    pending = await borrower.borrow("5000.00")
    reward = await api.post(
        f"/api/v1/enterprises/{uscc}/listings",
        json={"board": "growth", "listed_on": "2026-06-30", "security_code": "870124"},
        headers=borrower.headers,
    )
    assert reward.status_code == 201

    await frozen_by_revocation(resources, recognition_id=recognition_id, uscc=uscc)

    state = await finished(resources, f"disbursement-bridge-loan-{pending['id']}", "bridge-loan-frozen")
    assert (state.status, state.reason) == ("rejected", "benefit frozen: fraud found")
    reward_state = await finished(resources, f"disbursement-listing-reward-{reward.json()['id']}")
    assert reward_state.status == "rejected"
    assert (await fund(api, settings, PROGRAM))["reserved"] == before["reserved"]
    again = await api.post("/api/v1/bridge-loans", json=loan("10.00"), headers=borrower.headers)
    assert again.status_code == 409  # the benefit is frozen


# --- time-skipping: the approval deadline and the due date --------------------------------------------------


async def test_deadlines_expire_payouts_and_a_loan_past_due_is_flagged_overdue(
    skipping: Resources, time_skipping: Any, calm_bank: BankSim
) -> None:
    uscc = new_uscc()
    await arm(skipping.sessionmaker, uscc, "bridge_loan", "listing_reward")
    maker = CurrentUser(sub=f"ent-{uscc}", role=Role.enterprise, uscc=uscc)
    checker = CurrentUser(sub="finance-a", role=Role.finance)
    queue = skipping.settings.temporal_task_queue

    async def started(session: AsyncSession, kind: PayoutKind, payout_id: uuid.UUID) -> None:
        """What the route does after the request's writes: commit, then start the payout's workflow."""
        await payouts.start_after_commit(
            session, skipping.temporal, kind=kind, payout_id=payout_id, task_queue=queue
        )
        await session.commit()

    async with skipping.sessionmaker() as session:
        forgotten = await funds.request_bridge_loan(
            session,
            user=maker,
            data=BridgeLoanCreate(amount=D("4000.00"), term_days=5, purpose="never approved"),
            programs=skipping.programs,
        )
        await started(session, "bridge_loan", forgotten.id)
    async with skipping.sessionmaker() as session:
        reward = await funds.report_listing(
            session,
            user=maker,
            uscc=uscc,
            data=ListingCreate(board="srdi", listed_on=date(2026, 6, 30), security_code="870125"),
            programs=skipping.programs,
        )
        await started(session, "listing_reward", reward.id)
    async with skipping.sessionmaker() as session:
        late = await funds.request_bridge_loan(
            session,
            user=maker,
            data=BridgeLoanCreate(amount=D("6000.00"), term_days=1, purpose="repaid late"),
            programs=skipping.programs,
        )
        await started(session, "bridge_loan", late.id)
    async with skipping.sessionmaker.begin() as session:
        await payouts.decide(
            session,
            user=checker,
            kind="bridge_loan",
            payout_id=late.id,
            data=ApprovalCreate(decision="approve"),
            temporal=skipping.temporal,
        )

    async def loan_row(loan_id: uuid.UUID) -> BridgeLoan:
        async with skipping.sessionmaker() as session:
            row: BridgeLoan = await repository.get_payout(session, "bridge_loan", loan_id)
            return row

    async with asyncio.timeout(15):
        while (await loan_row(late.id)).status != "disbursed":
            await asyncio.sleep(0.05)
    paid = await loan_row(late.id)
    assert paid.due_on is not None
    assert paid.due_on <= policy.today(datetime.now(UTC)) + timedelta(days=3)
    async with skipping.sessionmaker() as session:
        committed = (await repository.pools(session, [PROGRAM]))[PROGRAM].committed

    # Skip past the program's ten-day approval deadline (and the one-working-day term). After an Update the
    # test server no longer skips time by itself while a result is awaited, so the skip is explicit.
    await time_skipping.sleep(timedelta(days=10, hours=1))
    results = {}
    for name, kind, payout_id in (
        ("bridge-loan-expired", "bridge-loan", forgotten.id),
        ("listing-reward-expired", "listing-reward", reward.id),
        ("bridge-loan-overdue", "bridge-loan", late.id),
    ):
        handle = skipping.temporal.get_workflow_handle(
            f"disbursement-{kind}-{payout_id}", result_type=PayoutState
        )
        results[name] = await handle.result()
        await record(handle, name)
    assert (results["bridge-loan-expired"].status, results["bridge-loan-expired"].reason) == (
        "expired",
        "the approval deadline passed",
    )
    assert results["listing-reward-expired"].status == "expired"
    assert (results["bridge-loan-overdue"].status, results["bridge-loan-overdue"].overdue) == (
        "disbursed",
        True,
    )

    flagged = await loan_row(late.id)
    assert flagged.overdue_since is not None  # set by the workflow's timer, not by the clock on read
    async with skipping.sessionmaker() as session:
        read = await service.get_payout(session, user=maker, kind="bridge_loan", payout_id=late.id)
        assert (read.overdue, read.status) == (True, "disbursed")
        assert (await repository.pools(session, [PROGRAM]))[PROGRAM].committed == committed - D("4000.00")
    with pytest.raises(Conflict, match="already rewarded"):
        async with skipping.sessionmaker.begin() as session:
            await funds.report_listing(
                session,
                user=maker,
                uscc=uscc,
                data=ListingCreate(board="srdi", listed_on=date(2026, 6, 30), security_code="870125"),
                programs=skipping.programs,
            )
    async with skipping.sessionmaker.begin() as session:
        repaid = await funds.repay_bridge_loan(
            session,
            user=CurrentUser(sub="finance-b", role=Role.finance),
            loan_id=late.id,
            data=RepaymentCreate(amount=D("6000.00")),
            temporal=skipping.temporal,
        )
    assert (repaid.status, repaid.overdue, repaid.overdue_since) == ("repaid", False, flagged.overdue_since)
