"""The relay against a real receiver on loopback: signed deliveries, order per aggregate, retries with
backoff, dead letters and their replay, secret rotation, and the fan-out rules."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook

from services.events import Audience, OutboxEvent
from services.notifications import service
from services.notifications.models import WebhookAttempt, WebhookDelivery
from services.notifications.relay import Relay, backoff
from services.notifications.schemas import SecretRotation
from tests.notifications.conftest import (
    ADMIN,
    Peer,
    approved,
    emit_all,
    enterprise,
    make_due,
    register,
    submitted,
)


async def deliveries(
    sessionmaker: async_sessionmaker[AsyncSession], endpoint_id: uuid.UUID
) -> list[WebhookDelivery]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id)
            .order_by(WebhookDelivery.event_seq)
        )
        return list(rows)


async def test_an_enterprise_endpoint_receives_its_own_events_signed_in_order(
    sessionmaker: async_sessionmaker[AsyncSession], relay: Relay, peer: Peer
) -> None:
    owner, other = enterprise(), enterprise()
    assert owner.uscc is not None
    assert other.uscc is not None
    endpoint = await register(sessionmaker, owner, peer.url)
    assert endpoint.secret.startswith("whsec_")
    application = uuid.uuid4()
    statuses = ["screening", "municipal_review", "provincial_review", "on_notice"]
    ids = await emit_all(
        sessionmaker,
        [(submitted(owner.uscc, application, status), Audience(uscc=owner.uscc)) for status in statuses]
        + [(submitted(other.uscc), Audience(uscc=other.uscc))],
    )
    await relay.run_once()

    got = list(peer.receiver.received)
    assert [item.webhook_id for item in got] == [str(event_id) for event_id in ids[:4]]
    assert [item.body["data"]["status"] for item in got] == statuses
    assert {item.body["type"] for item in got} == {"application.submitted"}
    for item in got:  # each verifies with the Standard Webhooks library and the secret shown at creation
        raw = json_body(item.body)
        headers = {
            "webhook-id": item.webhook_id,
            "webhook-timestamp": item.timestamp,
            "webhook-signature": item.signature,
        }
        assert Webhook(endpoint.secret).verify(raw, headers)["data"]["application_id"] == str(application)
    rows = await deliveries(sessionmaker, endpoint.id)
    assert [row.status for row in rows] == ["delivered"] * 4


def json_body(body: dict[str, object]) -> str:
    import json

    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


async def test_a_failing_receiver_holds_back_later_events_of_the_same_aggregate_only(
    sessionmaker: async_sessionmaker[AsyncSession], relay: Relay, peer: Peer
) -> None:
    owner = enterprise()
    assert owner.uscc is not None
    endpoint = await register(sessionmaker, owner, peer.url)
    first, second = uuid.uuid4(), uuid.uuid4()
    ids = await emit_all(
        sessionmaker,
        [
            (submitted(owner.uscc, first, "screening"), Audience(uscc=owner.uscc)),
            (submitted(owner.uscc, first, "municipal_review"), Audience(uscc=owner.uscc)),
            (submitted(owner.uscc, second, "screening"), Audience(uscc=owner.uscc)),
        ],
    )
    peer.receiver.fail_ratio = 1.0  # everything refused with a 500
    await relay.run_once()
    rows = await deliveries(sessionmaker, endpoint.id)
    # The first of each aggregate was tried once and waits for its retry; the second of `first` not at all.
    assert [(row.attempts, row.last_status_code) for row in rows] == [(1, 500), (0, None), (1, 500)]
    assert all(row.status == "pending" for row in rows)
    assert rows[0].next_attempt_at > rows[0].created_at

    peer.receiver.fail_ratio = 0.0
    await relay.run_once()  # nothing is due yet: the backoff holds
    assert peer.receiver.received == []
    await make_due(sessionmaker, WebhookDelivery, WebhookDelivery.endpoint_id == endpoint.id)
    await relay.run_once()
    order = [item.webhook_id for item in peer.receiver.received]
    assert sorted(order) == sorted(map(str, ids))
    assert order.index(str(ids[0])) < order.index(str(ids[1]))
    async with sessionmaker() as session:
        attempts = (
            await session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == rows[0].id))
        ).all()
    assert [a.status_code for a in attempts] == [500, 204]
    assert all(a.latency_ms >= 0 for a in attempts)
    assert attempts[0].response_prefix == "no"


def test_backoff_doubles_with_jitter_up_to_six_hours() -> None:
    for attempts, base in [(1, 5.0), (2, 10.0), (5, 80.0), (40, 6 * 3600.0)]:
        waits = [backoff(attempts) for _ in range(200)]
        assert all(base / 2 <= wait <= base for wait in waits)
        assert len(set(waits)) > 1  # jittered


async def test_a_delivery_past_its_retry_window_is_dead_lettered_and_an_admin_replays_it(
    sessionmaker: async_sessionmaker[AsyncSession], relay: Relay, peer: Peer
) -> None:
    owner = enterprise()
    assert owner.uscc is not None
    endpoint = await register(sessionmaker, owner, peer.url)
    [event_id] = await emit_all(
        sessionmaker, [(approved(owner.uscc), Audience(uscc=owner.uscc, finance=True))]
    )
    peer.receiver.fail_ratio = 1.0
    short = Relay(sessionmaker, relay.settings.model_copy(update={"webhook_retry_for": timedelta(0)}))
    await short.run_once()
    await short.close()
    [row] = await deliveries(sessionmaker, endpoint.id)
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.dead_at is not None

    async with sessionmaker() as session:
        dead = await service.list_deliveries(
            session, user=ADMIN, endpoint_id=None, status="dead", cursor=None, limit=200
        )
    assert row.id in {item.id for item in dead.items}
    async with sessionmaker() as session, session.begin():
        replayed = await service.retry_delivery(session, user=ADMIN, delivery_id=row.id)
    assert replayed.status == "pending"
    assert [a.status_code for a in replayed.attempt_log] == [500]

    peer.receiver.fail_ratio = 0.0
    await relay.run_once()
    [item] = peer.receiver.received
    assert item.webhook_id == str(event_id)  # the same webhook-id: the receiver can tell it is the same event
    assert item.body["data"]["amount"] == "1500000.00"
    [row] = await deliveries(sessionmaker, endpoint.id)
    assert row.status == "delivered"


async def test_a_rotated_secret_signs_beside_the_new_one_until_the_overlap_ends(
    sessionmaker: async_sessionmaker[AsyncSession], relay: Relay, peer: Peer
) -> None:
    owner = enterprise()
    assert owner.uscc is not None
    endpoint = await register(sessionmaker, owner, peer.url)
    async with sessionmaker() as session, session.begin():
        rotated = await service.rotate_secret(
            session, user=owner, endpoint_id=endpoint.id, data=SecretRotation(overlap_hours=1)
        )
    assert rotated.secret != endpoint.secret
    assert rotated.previous_secret_expires_at is not None
    await emit_all(sessionmaker, [(submitted(owner.uscc), Audience(uscc=owner.uscc))])
    await relay.run_once()
    [item] = peer.receiver.received
    headers = {
        "webhook-id": item.webhook_id,
        "webhook-timestamp": item.timestamp,
        "webhook-signature": item.signature,
    }
    assert len(item.signature.split(" ")) == 2
    for secret in (endpoint.secret, rotated.secret):  # a receiver on either secret accepts it
        Webhook(secret).verify(json_body(item.body), headers)

    async with sessionmaker() as session, session.begin():
        await service.rotate_secret(
            session, user=owner, endpoint_id=endpoint.id, data=SecretRotation(overlap_hours=0)
        )
    await emit_all(sessionmaker, [(submitted(owner.uscc), Audience(uscc=owner.uscc))])
    await relay.run_once()
    assert len(peer.receiver.received[-1].signature.split(" ")) == 1


async def test_fan_out_follows_types_and_ownership_and_happens_once(
    sessionmaker: async_sessionmaker[AsyncSession], relay: Relay, peer: Peer
) -> None:
    owner = enterprise()
    assert owner.uscc is not None
    only_payouts = await register(sessionmaker, owner, peer.url, "payout.approved")
    everything = await register(sessionmaker, ADMIN, peer.url)
    ids = await emit_all(
        sessionmaker,
        [
            (submitted(owner.uscc), Audience(uscc=owner.uscc)),
            (approved(owner.uscc), Audience(uscc=owner.uscc, finance=True)),
            (approved("91500000MA5U7AAA1X"), Audience(finance=True)),  # another enterprise's, finance's
        ],
    )
    await relay.fan_out(wait=True)
    await relay.fan_out(wait=True)
    assert [row.event_id for row in await deliveries(sessionmaker, only_payouts.id)] == [ids[1]]
    assert [row.event_id for row in await deliveries(sessionmaker, everything.id)] == ids
    async with sessionmaker() as session:
        fanned = await session.scalars(select(OutboxEvent.fanned_out_at).where(OutboxEvent.id.in_(ids)))
        assert all(at is not None for at in fanned)

    async with sessionmaker() as session, session.begin():
        await service.delete_endpoint(session, user=ADMIN, endpoint_id=everything.id)
    assert {row.status for row in await deliveries(sessionmaker, everything.id)} == {"dead"}
