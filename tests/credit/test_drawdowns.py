"""Credit lines, drawdowns, approvals and disbursements through the HTTP API, on committed data, with the
real Temporal dev server, a worker running every workflow, and the bank simulator as the partner bank."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.config import Settings
from services.contracts import PayoutState
from services.credit import ledger
from tests.conftest import bearer
from tests.credit.conftest import BankSim, auth, enterprise_token, new_uscc, open_line, record

D = Decimal


class Enterprise:
    def __init__(self, api: httpx.AsyncClient, settings: Settings, uscc: str, line_id: uuid.UUID) -> None:
        self.api, self.uscc, self.line_id = api, uscc, line_id
        self.sub = f"ent-{uscc}"
        self.headers = bearer(enterprise_token(settings, uscc, self.sub))

    async def draw(self, amount: Any, key: str | None = None) -> httpx.Response:
        headers = {**self.headers, **({"Idempotency-Key": key} if key else {})}
        return await self.api.post(
            f"/api/v1/credit-lines/{self.line_id}/drawdowns", json={"amount": amount}, headers=headers
        )

    async def line(self) -> dict[str, Any]:
        response = await self.api.get(f"/api/v1/credit-lines/{self.line_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture
async def enterprise(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> Enterprise:
    uscc = new_uscc()
    return Enterprise(api, settings, uscc, await open_line(sessions, uscc=uscc))


def finance(settings: Settings, sub: str = "finance-1") -> dict[str, str]:
    return auth(settings, "finance", sub)


async def decide(
    api: httpx.AsyncClient,
    headers: dict[str, str],
    drawdown_id: str,
    decision: str = "approve",
    reason: str | None = None,
) -> httpx.Response:
    return await api.post(
        f"/api/v1/drawdowns/{drawdown_id}/approvals",
        headers=headers,
        json={"decision": decision, **({"reason": reason} if reason else {})},
    )


async def settled(resources: Any, drawdown_id: str, history: str | None = None) -> PayoutState:
    handle = resources.temporal.get_workflow_handle(f"disbursement-{drawdown_id}", result_type=PayoutState)
    async with asyncio.timeout(30):
        result: PayoutState = await handle.result()
    if history:
        await record(handle, history)
    return result


async def test_credit_lines_are_read_by_owner_finance_and_admin_only(
    api: httpx.AsyncClient, settings: Settings, enterprise: Enterprise
) -> None:
    path = f"/api/v1/credit-lines/{enterprise.line_id}"
    line = await enterprise.line()
    assert line == {
        **line,
        "limit": "3000000.00",
        "reserved": "0.00",
        "drawn": "0.00",
        "available": "3000000.00",
        "status": "active",
        "uscc": enterprise.uscc,
        "tier": "little_giant",
    }
    for role in ("finance", "admin"):
        assert (await api.get(path, headers=auth(settings, role))).status_code == 200
    stranger = bearer(enterprise_token(settings, new_uscc()))
    reviewer = auth(settings, "reviewer", level="provincial", region="500000")
    for headers, status in ((stranger, 404), (reviewer, 403)):  # not yours / wrong role
        response = await api.get(path, headers=headers)
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
    assert (await api.get("/api/v1/credit-lines", headers=reviewer)).status_code == 403
    assert (await api.get(path)).status_code == 401

    own = (await api.get("/api/v1/credit-lines", headers=enterprise.headers)).json()
    assert [item["id"] for item in own["items"]] == [str(enterprise.line_id)]
    foreign = await api.get("/api/v1/credit-lines", params={"uscc": enterprise.uscc}, headers=stranger)
    assert foreign.json()["items"] == []
    everyone = await api.get(
        "/api/v1/credit-lines", params={"uscc": enterprise.uscc, "limit": 1}, headers=finance(settings)
    )
    assert everyone.json()["items"][0]["id"] == str(enterprise.line_id)


@pytest.mark.parametrize(
    "amount", [100.5, 100, "100.001", "100.5", "0100.00", "0.00", "-5.00", "+5.00", "1e3", "abc", "", None]
)
async def test_drawdown_amount_is_a_positive_string_with_two_decimals(
    enterprise: Enterprise, amount: Any
) -> None:
    response = await enterprise.draw(amount)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["status"] == 422
    assert problem["errors"][0]["field"] == "amount"
    assert (await enterprise.line())["reserved"] == "0.00"


async def test_only_the_owner_draws_and_never_more_than_available(
    api: httpx.AsyncClient, settings: Settings, enterprise: Enterprise
) -> None:
    path = f"/api/v1/credit-lines/{enterprise.line_id}/drawdowns"
    assert (await api.post(path, json={"amount": "1.00"}, headers=finance(settings))).status_code == 403
    stranger = bearer(enterprise_token(settings, new_uscc()))
    assert (await api.post(path, json={"amount": "1.00"}, headers=stranger)).status_code == 404
    assert (
        await api.post(
            f"/api/v1/credit-lines/{uuid.uuid4()}/drawdowns",
            json={"amount": "1.00"},
            headers=enterprise.headers,
        )
    ).status_code == 404

    first = await enterprise.draw("2999999.99")
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "pending_approval"
    assert first.json()["required_approvals"] == 2
    over = await enterprise.draw("0.02")
    assert over.status_code == 409
    assert "more than the available 0.01" in over.json()["detail"]
    assert (await enterprise.draw("0.01")).status_code == 201
    line = await enterprise.line()
    assert (line["reserved"], line["available"]) == ("3000000.00", "0.00")


async def test_idempotency_key_replays_the_first_response(enterprise: Enterprise) -> None:
    key = f"draw-{uuid.uuid4()}"
    first = await enterprise.draw("1000.00", key)
    again = await enterprise.draw("1000.00", key)
    other = await enterprise.draw("2000.00", key)
    concurrent = await asyncio.gather(*(enterprise.draw("10.00", f"{key}-c") for _ in range(5)))

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert other.status_code == 422
    assert "different request" in other.json()["detail"]
    assert {r.status_code for r in concurrent} == {201}
    assert len({r.json()["id"] for r in concurrent}) == 1
    assert (await enterprise.line())["reserved"] == "1010.00"


async def test_fifty_concurrent_drawdowns_take_exactly_what_fits(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uscc = new_uscc()
    company = Enterprise(api, settings, uscc, await open_line(sessions, uscc=uscc, limit=D("1000000.00")))
    amounts = [D("30000.00")] * 50  # 1,500,000 asked of a 1,000,000 line: 33 fit
    responses = await asyncio.gather(*(company.draw(f"{a:.2f}") for a in amounts))

    codes = [r.status_code for r in responses]
    assert codes.count(201) == 33, codes
    assert codes.count(409) == 17
    line = await company.line()
    assert line["reserved"] == "990000.00"
    assert line["available"] == "10000.00"


async def test_maker_checker_two_distinct_approvers_then_payment_and_ledger(
    api: httpx.AsyncClient,
    settings: Settings,
    enterprise: Enterprise,
    resources: Any,
    calm_bank: BankSim,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    drawdown = (await enterprise.draw("1500000.00")).json()
    drawdown_id = drawdown["id"]
    assert drawdown["required_approvals"] == 2

    assert (await decide(api, enterprise.headers, drawdown_id)).status_code == 403  # not finance
    requester_as_finance = finance(settings, enterprise.sub)  # the maker holding a finance role too
    refused = await decide(api, requester_as_finance, drawdown_id)
    assert refused.status_code == 403
    assert "requester" in refused.json()["detail"]

    one = await decide(api, finance(settings, "finance-a"), drawdown_id)
    assert one.status_code == 200, one.text
    assert one.json()["status"] == "pending_approval"
    assert [a["approver"] for a in one.json()["approvals"]] == ["finance-a"]
    twice = await decide(api, finance(settings, "finance-a"), drawdown_id)
    assert twice.status_code == 409

    two = await decide(api, finance(settings, "finance-b"), drawdown_id, reason="checked")
    assert two.status_code == 200, two.text
    assert two.json()["status"] in ("approved", "disbursed")
    assert (await settled(resources, drawdown_id, "disbursement-dual-approval-paid")).status == "disbursed"

    final = (await api.get(f"/api/v1/drawdowns/{drawdown_id}", headers=enterprise.headers)).json()
    assert final["status"] == "disbursed"
    assert final["disbursement"]["status"] == "paid"
    assert final["disbursement"]["bank_reference"].startswith("BSIM-")
    [entry] = final["ledger_entries"]
    assert sorted((li["account"], li["debit"], li["credit"]) for li in entry["lines"]) == [
        ("bank_settlement", "0.00", "1500000.00"),
        (f"credit_receivable:{enterprise.uscc}", "1500000.00", "0.00"),
    ]
    line = await enterprise.line()
    assert (line["reserved"], line["drawn"], line["available"]) == ("0.00", "1500000.00", "1500000.00")
    assert (await decide(api, finance(settings, "finance-c"), drawdown_id)).status_code == 409
    async with sessions() as session:
        assert await ledger.balance(session, ledger.credit_receivable(enterprise.uscc)) == D("1500000.00")
    assert len(await calm_bank.payments_for({f"drawdown-{drawdown_id}"})) == 1

    # Finance and the enterprise were told each step (the outbox): waiting for two, then for one, approved,
    # paid - each once.
    feed = (await api.get("/api/v1/notifications?limit=200", headers=finance(settings, "finance-z"))).json()
    told = [
        (item["type"], item["data"].get("approvals_needed"))
        for item in reversed(feed["items"])
        if item["data"].get("payout_id") == drawdown_id
    ]
    assert told == [
        ("payout.awaiting_approval", 2),
        ("payout.awaiting_approval", 1),
        ("payout.approved", None),
        ("disbursement.paid", None),
    ]
    mine = (await api.get("/api/v1/notifications", headers=enterprise.headers)).json()["items"]
    newest = next(item for item in mine if item["data"].get("payout_id") == drawdown_id)
    assert newest["type"] == "disbursement.paid"


async def test_rejection_releases_the_reservation(
    api: httpx.AsyncClient, settings: Settings, enterprise: Enterprise, resources: Any
) -> None:
    drawdown_id = (await enterprise.draw("500.00")).json()["id"]
    key = f"reject-{uuid.uuid4()}"
    headers = {**finance(settings), "Idempotency-Key": key}
    rejected = await api.post(
        f"/api/v1/drawdowns/{drawdown_id}/approvals",
        headers=headers,
        json={"decision": "reject", "reason": "no invoice"},
    )
    replay = await api.post(
        f"/api/v1/drawdowns/{drawdown_id}/approvals",
        headers=headers,
        json={"decision": "reject", "reason": "no invoice"},
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert "no invoice" in rejected.json()["reason"]
    assert replay.json() == rejected.json()
    assert (await settled(resources, drawdown_id, "disbursement-rejected")).status == "rejected"
    assert (await enterprise.line())["reserved"] == "0.00"
    assert (await decide(api, finance(settings, "finance-2"), drawdown_id)).status_code == 409
    assert (await decide(api, finance(settings), str(uuid.uuid4()))).status_code == 404


async def test_definite_bank_refusal_releases_and_records_the_reason(
    api: httpx.AsyncClient, settings: Settings, enterprise: Enterprise, resources: Any, calm_bank: BankSim
) -> None:
    await calm_bank.faults(reject_beneficiaries=[enterprise.uscc])
    drawdown_id = (await enterprise.draw("800.00")).json()["id"]
    assert (await decide(api, finance(settings), drawdown_id)).status_code == 200
    assert (await settled(resources, drawdown_id, "disbursement-bank-refused")).status == "failed"

    final = (await api.get(f"/api/v1/drawdowns/{drawdown_id}", headers=finance(settings))).json()
    assert final["disbursement"]["status"] == "failed"
    assert "account is closed" in final["disbursement"]["failure_reason"]
    assert "account is closed" in final["reason"]
    assert final["ledger_entries"] == []
    line = await enterprise.line()
    assert (line["reserved"], line["drawn"]) == ("0.00", "0.00")
    assert await calm_bank.payments_for({f"drawdown-{drawdown_id}"}) == []
    feed = (await api.get("/api/v1/notifications", headers=enterprise.headers)).json()["items"]
    [refused] = [item for item in feed if item["type"] == "disbursement.refused"]
    assert refused["data"]["payout_id"] == drawdown_id
    assert "account is closed" in refused["data"]["reason"]


async def test_disbursements_filter_total_and_export_csv(
    api: httpx.AsyncClient, settings: Settings, enterprise: Enterprise, resources: Any, calm_bank: BankSim
) -> None:
    ids = []
    for amount in ("100.00", "250.50"):
        drawdown_id = (await enterprise.draw(amount)).json()["id"]
        assert (await decide(api, finance(settings), drawdown_id)).status_code == 200
        ids.append(drawdown_id)
    for drawdown_id in ids:
        assert (await settled(resources, drawdown_id)).status == "disbursed"

    today = datetime.now(UTC).date().isoformat()
    params = {"uscc": enterprise.uscc, "from": today, "to": today}
    page = (
        await api.get("/api/v1/disbursements", params={**params, "limit": 1}, headers=finance(settings))
    ).json()
    assert len(page["items"]) == 1
    assert page["totals"] == {"paid": {"count": 2, "amount": "350.50"}}
    rest = (
        await api.get(
            "/api/v1/disbursements",
            params={**params, "cursor": page["next_cursor"]},
            headers=finance(settings),
        )
    ).json()
    assert {page["items"][0]["drawdown_id"], rest["items"][0]["drawdown_id"]} == set(ids)
    assert rest["next_cursor"] is None

    own = (await api.get("/api/v1/disbursements", headers=enterprise.headers)).json()
    assert own["totals"]["paid"]["count"] == 2
    for status in ("failed", "pending"):
        none = await api.get(
            "/api/v1/disbursements", params={**params, "status": status}, headers=finance(settings)
        )
        assert none.json() == {"items": [], "next_cursor": None, "totals": {}}
    assert (
        await api.get(
            "/api/v1/disbursements",
            params={
                "program": "credit-test",
                "tier": "little_giant",
                "from": "2000-01-01",
                "to": "2000-01-02",
            },
            headers=auth(settings, "admin"),
        )
    ).json()["items"] == []
    assert (
        await api.get(
            "/api/v1/disbursements", headers=auth(settings, "reviewer", level="national", region="500000")
        )
    ).status_code == 403

    export = await api.get(
        "/api/v1/disbursements", params=params, headers={**finance(settings), "Accept": "text/csv"}
    )
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert sorted(r["amount"] for r in rows) == ["100.00", "250.50"]
    assert {r["status"] for r in rows} == {"paid"}
    assert all(r["bank_reference"].startswith("BSIM-") for r in rows)
    refused = await api.get(
        "/api/v1/disbursements",
        headers={**auth(settings, "reviewer", level="national", region="500000"), "Accept": "text/csv"},
    )
    assert refused.status_code == 403


async def test_a_decision_retried_after_its_answer_was_lost_is_answered_not_refused(
    api: httpx.AsyncClient,
    settings: Settings,
    enterprise: Enterprise,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """The API died after the approval Update completed and before its idempotency row committed (seen in
    the chaos run): the retry with the same key gets the current state, not 409. Another decision by the
    same officer, or the same one without a key, is still a conflict."""
    from sqlalchemy import delete

    from services.idempotency_models import IdempotencyRecord

    drawdown_id = (await enterprise.draw("1500000.00")).json()["id"]
    headers = {**finance(settings, "finance-r"), "Idempotency-Key": f"approve-{drawdown_id}"}
    url = f"/api/v1/drawdowns/{drawdown_id}/approvals"
    first = await api.post(url, headers=headers, json={"decision": "approve", "reason": "ok"})
    assert first.status_code == 200, first.text
    async with sessions.begin() as session:  # the lost commit
        await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.key == f"approve-{drawdown_id}")
        )
    retried = await api.post(url, headers=headers, json={"decision": "approve", "reason": "ok"})
    assert retried.status_code == 200, retried.text
    assert [a["approver"] for a in retried.json()["approvals"]] == ["finance-r"]  # recorded once
    other = await api.post(
        url, headers={**headers, "Idempotency-Key": "another"}, json={"decision": "reject", "reason": "no"}
    )
    assert other.status_code == 409
    assert (await decide(api, finance(settings, "finance-r"), drawdown_id, reason="ok")).status_code == 409
