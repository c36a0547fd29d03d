"""A revocation for fraud bars the enterprise's cultivation-pool benefits for the fraud bar too
(../shared/DOMAIN.md: "Fraud revokes every title and bars applying for 3 years"): a bridge loan the pool would
qualify is a 409 ``pool-barred`` saying until when, with nothing written; the one still awaiting approval is
rejected with the benefits' freeze; the enterprise view shows the bar; a pool file imported again keeps it.
Another ground bars nothing. Through the API, with a recognition imported from a ministry list (``demo``) and
a membership of the Chongqing pool (whose fund is open to the pool, its fraud bar ``P3Y``)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.config import Settings
from services.credit.models import BridgeLoan
from services.programs import IsoDuration
from services.resources import Resources
from tests.applications.test_fraud_revocation_api import benefits_end
from tests.conftest import bearer, make_token
from tests.pools.conftest import csv_bytes, imported, member
from tests.programs.test_imported_recognitions import row
from tests.support.factories import random_uscc

pytestmark = pytest.mark.usefixtures("worker")

API = "/api/v1"
POOL = "chongqing-2020"  # its fund is open to its pool; fraud_bar = "P3Y"


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "admin", "admin-pool-bar"))


@pytest.fixture
def finance(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "finance", "finance-pool-bar"))


def enterprise(settings: Settings, uscc: str) -> dict[str, str]:
    return bearer(make_token(settings, "enterprise", f"ent-{uscc}", uscc=uscc))


async def titled_member(api: httpx.AsyncClient, admin: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """A new enterprise (its USCC) with a recognition imported from a list (the import's answer), and in the
    Chongqing pool (from a pool file)."""
    uscc = random_uscc("500103")
    reference = f"工信部2026年第{uuid.uuid4().hex[:6]}批"
    listed = await api.post(f"{API}/recognitions/imports", headers=admin, json=row(uscc, reference))
    assert listed.status_code == 200, listed.text
    await imported(api, admin, csv_bytes([member(1, uscc=uscc)]), program=POOL)
    title: dict[str, Any] = listed.json()["recognitions"][0]
    return uscc, title


async def borrow(api: httpx.AsyncClient, settings: Settings, uscc: str, **extra: Any) -> httpx.Response:
    return await api.post(
        f"{API}/bridge-loans",
        headers=enterprise(settings, uscc),
        json={"amount": "1000.00", "term_days": 5, "purpose": "repay a maturing bank loan", **extra},
    )


async def revoke(
    api: httpx.AsyncClient, admin: dict[str, str], title: dict[str, Any], revoked_for: str
) -> datetime:
    """Revoke the title; when it was revoked."""
    revoked = await api.post(
        f"{API}/recognitions/{title['id']}/revocation",
        headers={**admin, "Idempotency-Key": str(uuid.uuid4())},
        json={"reason": "forged market-share evidence", "revoked_for": revoked_for},
    )
    assert revoked.status_code == 200, revoked.text
    listed = await api.get(f"{API}/recognitions", headers=admin, params={"uscc": title["uscc"]})
    [found] = [r for r in listed.json()["items"] if r["id"] == title["id"]]
    return datetime.fromisoformat(found["revoked_at"]).astimezone(UTC)


async def loan_status(api: httpx.AsyncClient, finance: dict[str, str], loan_id: str) -> dict[str, Any]:
    """The loan once its workflow has seen a decision (30 s at most)."""
    async with asyncio.timeout(30):
        while True:
            body: dict[str, Any] = (await api.get(f"{API}/bridge-loans/{loan_id}", headers=finance)).json()
            if body["status"] != "pending_approval":
                return body
            await asyncio.sleep(0.05)


async def loans_of(resources: Resources, uscc: str) -> int:
    async with resources.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).where(BridgeLoan.uscc == uscc)) or 0)


async def committed(api: httpx.AsyncClient, finance: dict[str, str]) -> str:
    funds = (await api.get(f"{API}/funds", headers=finance)).json()["items"]
    [fund] = [f for f in funds if f["program"] == POOL]
    value: str = fund["committed"]
    return value


async def pools(api: httpx.AsyncClient, admin: dict[str, str], uscc: str) -> list[dict[str, Any]]:
    view = await api.get(f"{API}/enterprises/{uscc}", headers=admin)
    assert view.status_code == 200, view.text
    found: list[dict[str, Any]] = view.json()["pools"]
    return found


async def test_a_fraud_revocation_bars_the_pool_loans_until_the_bar_ends_and_a_reimport_keeps_it(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    finance: dict[str, str],
    settings: Settings,
    resources: Resources,
) -> None:
    uscc, title = await titled_member(api, admin)
    start = await committed(api, finance)
    pending = await borrow(api, settings, uscc, program=POOL)
    assert pending.status_code == 201, pending.text
    assert pending.json()["qualified_by"] == "pool"
    [membership] = await pools(api, admin, uscc)
    assert (membership["program"], membership["barred_until"]) == (POOL, None)

    revoked_at = await revoke(api, admin, title, "fraud")

    # The loan still awaiting approval is rejected with the title's benefits (and the fund given back).
    rejected = await loan_status(api, finance, pending.json()["id"])
    assert rejected["status"] == "rejected"
    assert rejected["reason"] == "cultivation pool barred: forged market-share evidence"
    assert await committed(api, finance) == start
    assert await benefits_end(resources, title) == "revoked"
    until = IsoDuration.parse("P3Y").add_to(revoked_at)
    shown = until.isoformat(timespec="seconds")
    [membership] = await pools(api, admin, uscc)
    assert datetime.fromisoformat(membership["barred_until"]) == until
    assert membership["barred_reason"] == (
        f"certificate {title['certificate_no']} revoked for fraud: forged market-share evidence"
    )

    # A new loan through the pool: 409 saying until when, nothing written; so too with no program named.
    loans, before = await loans_of(resources, uscc), await committed(api, finance)
    for extra in ({"program": POOL}, {}):
        refused = await borrow(api, settings, uscc, **extra)
        assert refused.status_code == 409, refused.text
        problem = refused.json()
        assert problem["type"].endswith("/pool-barred")
        assert f"{POOL} until {shown}" in problem["detail"]
        assert title["certificate_no"] in problem["detail"]
    assert (await loans_of(resources, uscc), await committed(api, finance)) == (loans, before)

    # The pool file imported again, its row changed: the membership is written, the bar stays.
    again = await imported(
        api, admin, csv_bytes([[uscc, "Renamed Pool Co", "500103", "machinery", "little_giant", "new"]]),
        program=POOL,
    )  # fmt: skip
    assert (again["updated"], again["refused"]) == (1, 0)
    [membership] = await pools(api, admin, uscc)
    assert (membership["tier_aimed"], datetime.fromisoformat(membership["barred_until"])) == (
        "little_giant",
        until,
    )
    refused = await borrow(api, settings, uscc, program=POOL)
    assert refused.status_code == 409, refused.text
    assert f"{POOL} until {shown}" in refused.json()["detail"]
    assert await loans_of(resources, uscc) == loans


async def test_a_revocation_for_another_reason_leaves_the_pool_open(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    finance: dict[str, str],
    settings: Settings,
    resources: Resources,
) -> None:
    uscc, title = await titled_member(api, admin)
    pending = await borrow(api, settings, uscc, program=POOL)
    assert pending.status_code == 201, pending.text

    await revoke(api, admin, title, "other")

    assert await benefits_end(resources, title) == "revoked"
    [membership] = await pools(api, admin, uscc)
    assert (membership["barred_until"], membership["barred_reason"]) == (None, None)
    more = await borrow(api, settings, uscc, program=POOL)
    assert more.status_code == 201, more.text
    assert more.json()["qualified_by"] == "pool"
    for loan in (pending.json(), more.json()):  # both still awaiting approval; give the fund back
        kept = (await api.get(f"{API}/bridge-loans/{loan['id']}", headers=finance)).json()
        assert kept["status"] == "pending_approval"
        rejected = await api.post(
            f"{API}/bridge-loans/{loan['id']}/approvals",
            json={"decision": "reject", "reason": "test over"},
            headers=finance,
        )
        assert rejected.json()["status"] == "rejected", rejected.text
