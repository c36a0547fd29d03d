"""Bridge-loan fund pools (never over-committed, even under concurrent requests) and listing rewards (once per
enterprise and board, even when reported concurrently), through the HTTP API on committed data."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.config import Settings
from services.credit import ledger, service
from tests.conftest import bearer
from tests.credit.conftest import PROGRAM, auth, enterprise_token, new_uscc
from workflows.inputs import BenefitGrant

D = Decimal
CENT = D("0.01")


BRIDGE_PROGRAM = "bridge-test"  # its fund is spent by the concurrency test alone


async def arm(
    sessions: async_sessionmaker[AsyncSession], uscc: str, *kinds: str, program: str = PROGRAM
) -> None:
    """Benefits as the benefits workflow grants them on recognition."""
    recognition_id = str(uuid.uuid4())
    async with sessions.begin() as session:
        for kind in kinds:
            await service.grant_benefit(
                session,
                grant=BenefitGrant(
                    recognition_id=recognition_id,
                    uscc=uscc,
                    tier="specialized_new",
                    program=program,
                    kind=kind,
                    amount=D("2000000.00") if kind == "credit_line" else None,
                ),
            )


async def fund(api: httpx.AsyncClient, settings: Settings, program: str) -> dict[str, Any]:
    response = await api.get("/api/v1/funds", headers=auth(settings, "finance"))
    assert response.status_code == 200, response.text
    found: dict[str, Any] = next(f for f in response.json()["items"] if f["program"] == program)
    return found


def loan(amount: str, **extra: Any) -> dict[str, Any]:
    return {"amount": amount, "term_days": 15, "purpose": "repay a maturing bank loan", **extra}


async def test_concurrent_bridge_loans_never_over_commit_the_fund(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    before = await fund(api, settings, BRIDGE_PROGRAM)
    available = D(before["available"])
    assert D(before["capacity"]) == D("1000000.00")
    amount = (available / 12).quantize(CENT, rounding=ROUND_DOWN)  # 20 asks, about 12 fit
    fits = int(available // amount)
    companies = [new_uscc() for _ in range(20)]
    for uscc in companies:
        await arm(sessions, uscc, "bridge_loan", program=BRIDGE_PROGRAM)

    responses = await asyncio.gather(
        *(
            api.post(
                "/api/v1/bridge-loans",
                json=loan(f"{amount:.2f}"),
                headers=bearer(enterprise_token(settings, u)),
            )
            for u in companies
        )
    )

    codes = [r.status_code for r in responses]
    assert codes.count(201) == fits, codes
    assert codes.count(409) == 20 - fits
    after = await fund(api, settings, BRIDGE_PROGRAM)
    assert D(after["committed"]) == D(before["committed"]) + fits * amount
    assert D(after["available"]) == available - fits * amount
    assert D(after["available"]) < amount
    async with sessions() as session:
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits
        paid = [r.json() for r in responses if r.status_code == 201]
        balances = await ledger.balances(session, [ledger.bridge_receivable(p["uscc"]) for p in paid])
        assert set(balances.values()) == {amount}


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
    assert first.json()["amount"] == "12345.67"
    assert first.json()["status"] == "committed"
    async with sessions() as session:
        assert await ledger.balance(session, ledger.bridge_receivable(uscc)) == D("12345.67")

    for role in ("enterprise", "reviewer"):
        claims = {"uscc": uscc} if role == "enterprise" else {"level": "national", "region": "500000"}
        assert (await api.get("/api/v1/funds", headers=auth(settings, role, **claims))).status_code == 403
    assert (await api.get("/api/v1/funds", headers=auth(settings, "admin"))).status_code == 200


async def test_a_listing_is_rewarded_once_per_board_even_when_reported_concurrently(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    uscc = new_uscc()
    owner = bearer(enterprise_token(settings, uscc))
    path = f"/api/v1/enterprises/{uscc}/listings"
    listed = {"board": "growth", "listed_on": "2026-06-30", "security_code": "870123"}
    assert (await api.post(path, json=listed, headers=owner)).status_code == 409  # not armed yet
    await arm(sessions, uscc, "credit_line", "listing_reward")

    reports = await asyncio.gather(*(api.post(path, json=listed, headers=owner) for _ in range(10)))
    codes = sorted(r.status_code for r in reports)
    assert codes == [201] + [409] * 9, codes
    [reward] = [r.json() for r in reports if r.status_code == 201]
    assert (reward["board"], reward["amount"], reward["program"]) == ("growth", "250000.00", PROGRAM)

    incubation = await api.post(path, json={**listed, "board": "incubation"}, headers=auth(settings, "admin"))
    assert incubation.status_code == 201
    assert incubation.json()["amount"] == "30000.00"
    assert incubation.json()["reported_by"] == "admin-test"

    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    for body, field in (
        ({**listed, "board": "moon"}, "board"),
        ({**listed, "listed_on": tomorrow}, "listed_on"),
        ({**listed, "security_code": "x"}, "security_code"),
    ):
        refused = await api.post(path, json={**body, "board": body["board"]}, headers=owner)
        assert refused.status_code == 422, body
        assert refused.json()["errors"][0]["field"] == field
    stranger = bearer(enterprise_token(settings, new_uscc()))
    assert (await api.post(path, json={**listed, "board": "srdi"}, headers=stranger)).status_code == 404
    assert (await api.post(path, json=listed, headers=auth(settings, "finance"))).status_code == 403

    async with sessions() as session:
        entry = await ledger.get_entry(session, uuid.UUID(reward["ledger_entry_id"]))
    assert entry is not None
    assert sorted((li.account, li.debit, li.credit) for li in entry.lines) == [
        (ledger.program_fund(PROGRAM), D("250000.00"), D("0.00")),
        (ledger.rewards_payable(PROGRAM), D("0.00"), D("250000.00")),
    ]
