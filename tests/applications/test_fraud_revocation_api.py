"""``POST /recognitions/{id}/revocation`` for fraud revokes every title of the enterprise
(../shared/DOMAIN.md), here through an imported recognition (the request's own transaction): the answer names
the others, each has its event and its benefits stop, a repeat changes nothing more; another ground revokes
only the one."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.config import Settings
from services.events import OutboxEvent
from services.resources import Resources
from tests.conftest import bearer, make_token
from tests.programs.test_imported_recognitions import row
from tests.support.factories import random_uscc

pytestmark = pytest.mark.usefixtures("worker")


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "admin", "admin-fraud"))


async def two_titles(api: httpx.AsyncClient, admin: dict[str, str], uscc: str) -> list[dict[str, Any]]:
    """A specialized-new and a little-giant recognition of `uscc`, imported from two lists."""
    titles = []
    for tier in ("specialized_new", "little_giant"):
        reference = f"工信部2026年第{uuid.uuid4().hex[:6]}批"
        imported = await api.post(
            "/api/v1/recognitions/imports", headers=admin, json=row(uscc, reference, tier=tier)
        )
        assert imported.status_code == 200, imported.text
        titles.append(imported.json()["recognitions"][0])
    return titles


async def public_status(api: httpx.AsyncClient, title: dict[str, Any]) -> str:
    status: str = (await api.get(f"/api/v1/public/recognitions/{title['certificate_no']}")).json()["status"]
    return status


async def revoked_events(resources: Resources, title: dict[str, Any]) -> int:
    async with resources.sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(
                OutboxEvent.type == "recognition.revoked", OutboxEvent.aggregate_id == uuid.UUID(title["id"])
            )
        )
    return int(count or 0)


async def benefits_end(resources: Resources, title: dict[str, Any]) -> str:
    handle = resources.temporal.get_workflow_handle(f"benefits-{title['id']}")
    result: str = await asyncio.wait_for(handle.result(), timeout=30)
    return result


async def test_a_revocation_for_fraud_revokes_every_title_once(
    api: httpx.AsyncClient, admin: dict[str, str], resources: Resources
) -> None:
    uscc = random_uscc("500103")
    named, other = await two_titles(api, admin, uscc)
    body = {"reason": "forged market-share evidence", "revoked_for": "fraud"}
    headers = {**admin, "Idempotency-Key": str(uuid.uuid4())}

    revoked = await api.post(f"/api/v1/recognitions/{named['id']}/revocation", headers=headers, json=body)

    assert revoked.status_code == 200, revoked.text
    answer = revoked.json()
    assert answer["recognition_id"] == named["id"]
    assert answer["also_revoked"] == [
        {
            "recognition_id": other["id"],
            "certificate_no": other["certificate_no"],
            "program": "demo",
            "tier": "little_giant",
            "application_id": None,
        }
    ]
    assert [await public_status(api, t) for t in (named, other)] == ["revoked", "revoked"]
    listed = (await api.get("/api/v1/recognitions", headers=admin, params={"uscc": uscc})).json()["items"]
    reasons = {r["id"]: (r["status"], r["revoked_for"]) for r in listed}
    assert reasons == {named["id"]: ("revoked", "fraud"), other["id"]: ("revoked", "fraud")}
    assert [await revoked_events(resources, t) for t in (named, other)] == [1, 1]
    assert [await benefits_end(resources, t) for t in (named, other)] == ["revoked", "revoked"]

    # The same request again (as the console's double submit: the service says why not) and a revocation of
    # the other title: 409, nothing more.
    again = await api.post(f"/api/v1/recognitions/{named['id']}/revocation", headers=headers, json=body)
    assert again.status_code == 409, again.text
    second = await api.post(f"/api/v1/recognitions/{other['id']}/revocation", headers=admin, json=body)
    assert second.status_code == 409, second.text
    assert [await revoked_events(resources, t) for t in (named, other)] == [1, 1]


async def test_a_revocation_for_another_reason_leaves_the_other_title(
    api: httpx.AsyncClient, admin: dict[str, str], resources: Resources
) -> None:
    uscc = random_uscc("500103")
    named, other = await two_titles(api, admin, uscc)

    revoked = await api.post(
        f"/api/v1/recognitions/{named['id']}/revocation",
        headers=admin,
        json={"reason": "delisted", "revoked_for": "other"},
    )

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["also_revoked"] == []
    assert [await public_status(api, t) for t in (named, other)] == ["revoked", "valid"]
    assert [await revoked_events(resources, t) for t in (named, other)] == [1, 0]
    assert await benefits_end(resources, named) == "revoked"
    described = await resources.temporal.get_workflow_handle(f"benefits-{other['id']}").describe()
    assert described.status is not None
    assert described.status.name == "RUNNING"
