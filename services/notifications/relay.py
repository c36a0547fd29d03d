"""The relay: from committed outbox events to webhook deliveries that arrive at least once, in order per
aggregate.

It holds no state of its own - everything it knows is in PostgreSQL - so it runs inside every worker process
(``relay_forever``), any number of them at once, and a relay killed at any point loses nothing:

1. **Fan-out** (one relay at a time: a transaction-scoped advisory lock): events not fanned out yet, in
   ``seq`` order, become one delivery row per subscribed endpoint and one e-mail message per recipient
   (mail.py, which also sends them), and are marked fanned out - in the same transaction, so an event is
   fanned out exactly once.
2. **Claim**: due pending deliveries with no earlier pending delivery of the same endpoint and aggregate (the
   head of each queue), locked with ``SKIP LOCKED`` and leased for longer than a call can take. Two relays
   never hold the same delivery, and a delivery's successor is not a head until it is delivered or dead.
3. **Attempt**: a signed POST through httpx with a timeout (the destination checked against loopback and
   private addresses first, outside development); the attempt (status code, latency, a short prefix of the
   answer) and the delivery's new state are written in one transaction. A 2xx delivers it; anything else
   schedules the next attempt with exponential backoff and jitter, until ``webhook_retry_for`` (3 days) after
   it was made, when it is dead-lettered for an admin to see and replay.

A relay that dies mid-call leaves a lease that runs out: the delivery is tried again with the same
``webhook-id``, which is how a receiver tells a duplicate. The relay wakes on PostgreSQL ``NOTIFY`` from the
outbox's insert trigger (sent at commit) and polls every second besides, for retries coming due.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import httpx
import structlog
from sqlalchemy import DateTime, Table, bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services import tasks
from services.config import Settings
from services.events import OutboxEvent
from services.notifications.mail import Mailer
from services.notifications.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from services.notifications.webhooks import UnsafeDestination, body, check_destination, sign

log = structlog.get_logger("giantflow.relay")

CHANNEL = "giantflow_outbox"
FAN_OUT_LOCK = 0x6F7574626F78  # "outbox": the advisory lock only one relay's fan-out holds at a time
FAN_OUT_BATCH = 1000
FIRST_RETRY = 5.0  # seconds (GIANTFLOW_WEBHOOK_FIRST_RETRY_SECONDS); doubled each attempt ...
LONGEST_RETRY = 6 * 3600.0  # ... up to six hours between attempts
GATHER = 0.05  # seconds a relay waits after a wake-up for more commits to gather into its batch
PREFIX = 200  # characters of a receiver's answer kept in the attempt log

CLAIM = text(
    """
    WITH heads AS (
        SELECT d.id FROM webhook_deliveries d
        WHERE d.status = 'pending' AND d.next_attempt_at <= now()
          AND (d.leased_until IS NULL OR d.leased_until < now())
          AND NOT EXISTS (
              SELECT 1 FROM webhook_deliveries e
              WHERE e.status = 'pending' AND e.endpoint_id = d.endpoint_id
                AND e.aggregate_id = d.aggregate_id AND e.event_seq < d.event_seq
          )
        ORDER BY d.next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries SET leased_until = now() + make_interval(secs => :lease)
    FROM heads WHERE webhook_deliveries.id = heads.id
    RETURNING webhook_deliveries.id, webhook_deliveries.endpoint_id, webhook_deliveries.event_id,
              webhook_deliveries.attempts, webhook_deliveries.created_at
    """
)


def backoff(attempts: int, first: float = FIRST_RETRY) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: ``first`` (5 s) doubled each time, at
    most six hours, with "equal jitter" (half the delay fixed, half random) so that failing receivers are not
    hit by every relay at the same instant."""
    delay = min(first * 2.0 ** min(max(attempts - 1, 0), 32), LONGEST_RETRY)
    return delay / 2 + random.uniform(0, delay / 2)


def subscribed(endpoint: WebhookEndpoint, event: OutboxEvent) -> bool:
    """Whether ``endpoint`` receives ``event``: a type it asked for (none listed: all), and for an
    enterprise's endpoint, an event about that enterprise."""
    if endpoint.event_types and event.type not in endpoint.event_types:
        return False
    return endpoint.uscc is None or endpoint.uscc == event.uscc


@dataclass(frozen=True)
class Claim:
    """A leased delivery - the row ``CLAIM`` returned: its ``id``, ``attempts`` so far and ``created_at`` -
    and what its call needs."""

    delivery: Any
    url: str
    secrets: tuple[str, ...]
    message_id: str
    payload: str


@dataclass(frozen=True)
class Outcome:
    """One call of a delivery: the status code (none when the call failed), or the error, a short prefix of
    the answer, how long it took."""

    claim: Claim
    status_code: int | None
    error: str | None
    answer: str | None
    latency_ms: int

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# A batch of attempts' deliveries, one statement run for each (executemany).
_deliveries = cast(Table, WebhookDelivery.__table__)
RECORD = (
    update(_deliveries)
    .where(_deliveries.c.id == bindparam("delivery_id"), _deliveries.c.status == "pending")
    .values(
        attempts=bindparam("attempts"),
        leased_until=None,
        last_status_code=bindparam("status_code"),
        last_error=bindparam("error"),
        status=bindparam("new_status"),
        next_attempt_at=func.coalesce(
            bindparam("next_at", type_=DateTime(timezone=True)), _deliveries.c.next_attempt_at
        ),
        delivered_at=bindparam("delivered_at", type_=DateTime(timezone=True)),
        dead_at=bindparam("dead_at", type_=DateTime(timezone=True)),
    )
)


class Relay:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.allow_private = settings.webhooks_may_reach_private
        self.lease = settings.webhook_timeout_seconds + 30
        self.http = http or httpx.AsyncClient(
            timeout=httpx.Timeout(settings.webhook_timeout_seconds),
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=settings.relay_concurrency,
                max_keepalive_connections=settings.relay_concurrency,
            ),
        )
        self._owns_http = http is None
        self.mail = Mailer(sessionmaker, settings, backoff=backoff)  # e-mail beside the webhooks (mail.py)

    async def close(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    async def fan_out(self, *, wait: bool = False) -> int:
        """Make the deliveries of up to ``FAN_OUT_BATCH`` events not fanned out yet; how many events.

        Another relay fanning out holds the lock: by default this one goes on to deliver (0 events);
        ``wait=True`` waits for that relay's transaction instead, so that everything emitted before the call
        has its deliveries when it returns."""
        async with self.sessionmaker() as session, session.begin():
            if wait:
                await session.execute(select(func.pg_advisory_xact_lock(FAN_OUT_LOCK)))
            elif not await session.scalar(select(func.pg_try_advisory_xact_lock(FAN_OUT_LOCK))):
                return 0
            events = (
                await session.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.fanned_out_at.is_(None))
                    .order_by(OutboxEvent.seq)
                    .limit(FAN_OUT_BATCH)
                )
            ).all()
            if not events:
                return 0
            endpoints = (
                await session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None)))
            ).all()
            rows = [
                {
                    "id": uuid.uuid4(),
                    "endpoint_id": endpoint.id,
                    "event_id": event.id,
                    "event_seq": event.seq,
                    "aggregate_id": event.aggregate_id,
                }
                for event in events
                for endpoint in endpoints
                if subscribed(endpoint, event)
            ]
            if rows:
                await session.execute(insert(WebhookDelivery), rows)
            await self.mail.fan_out(session, events)
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_([event.id for event in events]))
                .values(fanned_out_at=func.now())
            )
            return len(events)

    async def claim(self, limit: int) -> list[Claim]:
        """Lease up to ``limit`` deliveries that are due and at the head of their endpoint's and aggregate's
        queue, with what their calls need."""
        async with self.sessionmaker() as session, session.begin():
            leased = (await session.execute(CLAIM, {"limit": limit, "lease": self.lease})).all()
            if not leased:
                return []
            events = {
                event.id: event
                for event in await session.scalars(
                    select(OutboxEvent).where(OutboxEvent.id.in_({row.event_id for row in leased}))
                )
            }
            endpoints = {
                endpoint.id: endpoint
                for endpoint in await session.scalars(
                    select(WebhookEndpoint).where(WebhookEndpoint.id.in_({row.endpoint_id for row in leased}))
                )
            }
            now = await session.scalar(select(func.now()))
        assert now is not None
        claims = []
        for row in leased:
            event, endpoint = events[row.event_id], endpoints[row.endpoint_id]
            payload = body(event.type, event.occurred_at, event.data)
            claims.append(Claim(row, endpoint.url, secrets_in_force(endpoint, now), str(event.id), payload))
        return claims

    async def attempt(self, claim: Claim) -> Outcome:
        """Call the endpoint once; what happened (``record`` writes it down)."""
        status_code: int | None = None
        error: str | None = None
        answer: str | None = None
        started = time.perf_counter()
        try:
            await check_destination(claim.url, allow_private=self.allow_private)
            request = sign(
                message_id=claim.message_id,
                at=datetime.now().astimezone(),
                payload=claim.payload,
                secrets_in_force=claim.secrets,
            )
            response = await self.http.post(claim.url, content=request.content, headers=request.headers)
            status_code = response.status_code
            answer = response.text[:PREFIX]
        except UnsafeDestination as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        latency_ms = round((time.perf_counter() - started) * 1000)
        return Outcome(claim, status_code, error, answer, latency_ms)

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write down a batch of attempts in one transaction: each attempt's log row, and its delivery
        delivered, due again after its backoff, or dead once past its retry window - only while it is still
        pending (a delivery replayed or delivered meanwhile keeps that state)."""
        if not outcomes:
            return
        async with self.sessionmaker() as session, session.begin():
            now = await session.scalar(select(func.now()))
            assert now is not None
            await session.execute(
                insert(WebhookAttempt),
                [
                    {
                        "delivery_id": o.claim.delivery.id,
                        "status_code": o.status_code,
                        "latency_ms": o.latency_ms,
                        "error": o.error,
                        "response_prefix": o.answer,
                    }
                    for o in outcomes
                ],
            )
            await session.execute(RECORD, [self._next_state(o, now) for o in outcomes])

    def _next_state(self, outcome: Outcome, now: datetime) -> dict[str, Any]:
        attempts = outcome.claim.delivery.attempts + 1
        state: dict[str, Any] = {
            "delivery_id": outcome.claim.delivery.id,
            "attempts": attempts,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "new_status": "pending",
            "next_at": None,
            "delivered_at": None,
            "dead_at": None,
        }
        if outcome.delivered:
            return state | {"new_status": "delivered", "delivered_at": now}
        retry_at = now + timedelta(seconds=backoff(attempts, self.settings.webhook_first_retry_seconds))
        if retry_at > outcome.claim.delivery.created_at + self.settings.webhook_retry_for:
            return state | {"new_status": "dead", "dead_at": now}
        return state | {"next_at": retry_at}

    async def run_once(self) -> int:
        """Fan out what is new, then attempt every delivery that is due, as many at once as the relay's
        concurrency allows, until none is left, and send the e-mail that is due meanwhile (mail.py); how many
        attempts were made."""
        made = 0
        while await self.fan_out() == FAN_OUT_BATCH:
            pass
        mail = asyncio.create_task(self.mail.send_due())  # beside the calls: a slow SMTP server holds none
        try:
            while claims := await self.claim(self.settings.relay_concurrency):
                await self.record(await asyncio.gather(*(self.attempt(claim) for claim in claims)))
                made += len(claims)
                await self.fan_out()
        except BaseException:
            mail.cancel()  # a message cut off is leased: it is sent again when its lease runs out
            raise
        return made + await mail

    async def run(self, stop: asyncio.Event, *, poll: float = 1.0) -> None:
        """Relay until ``stop`` is set: after every NOTIFY from the outbox, and every ``poll`` seconds."""
        wake = asyncio.Event()
        listener = asyncio.create_task(listen(self.settings.effective_database_url, wake, stop))
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    await self.run_once()
                except Exception:
                    log.exception("relay_failed")
                    await asyncio.sleep(poll)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_either(wake, stop), poll)
                    # Commits come in bursts: one wake-up for the burst makes one batch of it.
                    await asyncio.sleep(GATHER)
        finally:
            await tasks.stop(listener)


def secrets_in_force(endpoint: WebhookEndpoint, now: datetime) -> tuple[str, ...]:
    """The secrets a delivery is signed with: the current one, and the one it replaced while their overlap
    lasts."""
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and expires > now:
        return (endpoint.secret, endpoint.previous_secret)
    return (endpoint.secret,)


async def _either(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def listen(database_url: str, wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Set ``wake`` on every NOTIFY of the outbox channel; reconnect after a lost connection (the relay's
    poll covers the gap)."""
    while not stop.is_set():
        connection: asyncpg.Connection | None = None
        try:
            connection = await asyncpg.connect(asyncpg_dsn(database_url), timeout=5)
            await connection.add_listener(CHANNEL, lambda *_: wake.set())
            while not stop.is_set() and not connection.is_closed():
                await asyncio.sleep(1.0)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            await asyncio.sleep(1.0)
        finally:
            if connection is not None and not connection.is_closed():
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)


async def relay_forever(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, stop: asyncio.Event
) -> None:
    """The worker's relay (workflows/worker.py), until ``stop``."""
    relay = Relay(sessionmaker, settings)
    try:
        await relay.run(stop)
    finally:
        await relay.close()


# --- the worker's gauges (workflows/gauges.py) -------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """What the relay has still to do: the age of the oldest event not fanned out (0 when none), and the
    webhook deliveries waiting for their first attempt, waiting to be retried, and dead-lettered."""

    outbox_lag_seconds: float
    pending: int
    retrying: int
    dead: int


async def backlog(session: AsyncSession) -> Backlog:
    """Each count over a partial index: ix_outbox_events_pending, ix_webhook_deliveries_due and _dead."""
    oldest = await session.scalar(
        select(func.extract("epoch", func.clock_timestamp() - OutboxEvent.occurred_at))
        .where(OutboxEvent.fanned_out_at.is_(None))
        .order_by(OutboxEvent.seq)
        .limit(1)
    )
    pending, retrying = (
        await session.execute(
            select(
                func.count().filter(WebhookDelivery.attempts == 0),
                func.count().filter(WebhookDelivery.attempts > 0),
            ).where(WebhookDelivery.status == "pending")
        )
    ).one()
    dead = await session.scalar(
        select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "dead")
    )
    return Backlog(
        outbox_lag_seconds=max(0.0, float(oldest or 0)),
        pending=int(pending),
        retrying=int(retrying),
        dead=int(dead or 0),
    )
