"""The notification routes through the API (inside a rolled-back transaction): webhook endpoints - who may
register, what is refused - and the in-app feed by role, scope and group."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from devtools.seeding import random_uscc
from services.auth import Role
from services.config import Environment, Settings
from services.events import Audience, ReviewTaskEscalated, emit
from services.notifications.webhooks import UnsafeDestination, check_destination
from tests.conftest import bearer, make_token
from tests.notifications.conftest import approved, submitted

URL = "https://93.184.215.14/hooks"  # a public address, as a literal: nothing to resolve


def enterprise_token(settings: Settings, uscc: str) -> dict[str, str]:
    return bearer(make_token(settings, Role.enterprise, f"ent-{uscc}", uscc=uscc))


async def test_an_enterprise_registers_an_endpoint_and_sees_its_secret_once(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    uscc = random_uscc("500103")
    headers = enterprise_token(settings, uscc) | {"Idempotency-Key": "endpoint-1"}
    body = {"url": URL, "event_types": ["application.returned", "payout.approved"], "description": "ERP"}
    created = await api_rollback.post("/api/v1/webhook-endpoints", json=body, headers=headers)
    assert created.status_code == 201, created.text
    endpoint = created.json()
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint["uscc"] == uscc
    again = await api_rollback.post("/api/v1/webhook-endpoints", json=body, headers=headers)
    assert again.json()["id"] == endpoint["id"]
    assert again.headers["Idempotent-Replayed"] == "true"

    listed = await api_rollback.get("/api/v1/webhook-endpoints", headers=enterprise_token(settings, uscc))
    assert [item["id"] for item in listed.json()["items"]] == [endpoint["id"]]
    assert "secret" not in listed.json()["items"][0]
    other = await api_rollback.get(
        "/api/v1/webhook-endpoints", headers=enterprise_token(settings, random_uscc())
    )
    assert other.json()["items"] == []
    foreign = await api_rollback.get(
        f"/api/v1/webhook-endpoints/{endpoint['id']}/deliveries",
        headers=enterprise_token(settings, random_uscc()),
    )
    assert foreign.status_code == 404

    deleted = await api_rollback.delete(
        f"/api/v1/webhook-endpoints/{endpoint['id']}", headers=enterprise_token(settings, uscc)
    )
    assert deleted.status_code == 204
    listed = await api_rollback.get("/api/v1/webhook-endpoints", headers=enterprise_token(settings, uscc))
    assert listed.json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.org/hooks"}, "url"),
        ({"url": "https://user:pw@example.org/hooks"}, "url"),
        ({"url": URL, "event_types": ["application.nonsense"]}, "event_types.0"),
        ({"url": URL, "event_types": ["payout.approved", "payout.approved"]}, "event_types"),
        ({"url": URL, "secret": "mine"}, "secret"),
    ],
)
async def test_a_bad_endpoint_is_refused_with_the_field_named(
    api_rollback: httpx.AsyncClient, settings: Settings, body: dict[str, object], field: str
) -> None:
    response = await api_rollback.post(
        "/api/v1/webhook-endpoints", json=body, headers=enterprise_token(settings, random_uscc())
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert field in {error["field"] for error in response.json()["errors"]}


async def test_only_enterprises_and_admins_register_endpoints(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    for role, claims in [
        (Role.finance, {}),
        (Role.reviewer, {"level": "municipal", "region": "500103"}),
    ]:
        response = await api_rollback.post(
            "/api/v1/webhook-endpoints",
            json={"url": URL},
            headers=bearer(make_token(settings, role, **claims)),
        )
        assert response.status_code == 403
    admin = await api_rollback.post(
        "/api/v1/webhook-endpoints", json={"url": URL}, headers=bearer(make_token(settings, Role.admin))
    )
    assert admin.status_code == 201
    assert admin.json()["uscc"] is None


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hooks",
        "https://10.1.2.3/hooks",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hooks",
        "https://[::ffff:192.168.0.1]/hooks",
        "https://localhost/hooks",
        "http://example.org/hooks",
    ],
)
async def test_outside_development_no_endpoint_reaches_loopback_or_private_addresses(url: str) -> None:
    with pytest.raises(UnsafeDestination):
        await check_destination(url, allow_private=False)
    if url.startswith("https"):
        await check_destination(url, allow_private=True)  # development: a local receiver is fine


def test_private_destinations_are_for_development_only(settings: Settings) -> None:
    def where(environment: str, allow: bool | None) -> bool:
        return settings.model_copy(
            update={"environment": Environment(environment), "webhook_allow_private": allow}
        ).webhooks_may_reach_private

    assert where("development", None) is True
    assert where("test", None) is False
    assert where("test", True) is True
    assert where("production", True) is False  # never, whatever is set


async def test_the_feed_shows_each_caller_what_is_addressed_to_it(
    api_rollback: httpx.AsyncClient, settings: Settings, session: AsyncSession
) -> None:
    mine, theirs = random_uscc("500103"), random_uscc("510104")
    group = f"backup-{uuid.uuid4().hex[:6]}"
    own = await emit(
        session, submitted(mine), Audience(uscc=mine, reviewer_level="municipal", region_code="500103")
    )
    await emit(
        session, submitted(theirs), Audience(uscc=theirs, reviewer_level="municipal", region_code="510104")
    )
    money = await emit(session, approved(mine), Audience(uscc=mine, finance=True))
    escalated = await emit(
        session,
        ReviewTaskEscalated(
            application_id=uuid.uuid4(),
            uscc=theirs,
            program="demo",
            tier="specialized_new",
            status="in_review",
            stage="provincial",
            escalation_group=group,
        ),
        Audience(group=group),
    )
    await session.flush()

    async def feed(headers: dict[str, str], **params: str) -> dict[str, object]:
        response = await api_rollback.get("/api/v1/notifications", headers=headers, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    enterprise = enterprise_token(settings, mine)
    page = await feed(enterprise)
    assert [item["id"] for item in page["items"]] == [str(money), str(own)]  # newest first
    assert page["unread_count"] == 2
    chongqing = bearer(make_token(settings, Role.reviewer, "rev-cq", level="municipal", region="500000"))
    seen = {item["id"] for item in (await feed(chongqing))["items"]}
    assert str(own) in seen
    assert str(money) not in seen
    provincial = bearer(
        make_token(settings, Role.reviewer, "rev-sc", level="provincial", region="510000", groups=[group])
    )
    assert [item["id"] for item in (await feed(provincial))["items"]][:1] == [str(escalated)]
    finance = bearer(make_token(settings, Role.finance, "fin-feed"))
    assert str(money) in {item["id"] for item in (await feed(finance))["items"]}

    read = await api_rollback.post(f"/api/v1/notifications/{own}/read", headers=enterprise)
    assert read.status_code == 200
    assert read.json()["read"] is True
    again = await api_rollback.post(f"/api/v1/notifications/{own}/read", headers=enterprise)
    assert again.status_code == 200
    page = await feed(enterprise, unread="true")
    assert [item["id"] for item in page["items"]] == [str(money)]
    assert page["unread_count"] == 1
    not_mine = await api_rollback.post(f"/api/v1/notifications/{escalated}/read", headers=enterprise)
    assert not_mine.status_code == 404
