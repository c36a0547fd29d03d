"""``outbox_lag_p99_ms``: how long after a state change its webhook arrives, measured during the intake.

Before the 10,000-application intake, an admin registers a webhook endpoint for every event type (over the
API) pointing at a local receiver (``devtools.receiver``, a process of its own, which verifies each delivery's
signature and logs it with its arrival time). The relay is the one every `giantflow worker` runs, so the
intake is measured with it delivering. After the intake, once nothing is left to deliver (bounded wait),
each event the intake emitted (``application.submitted``, ``application.screened``, ... of its applications)
has a lag: the receiver's arrival time of its first delivery minus ``outbox_events.occurred_at``. That column
is ``now()`` of the event's transaction - when it began, not when it committed - so the figure is
conservative: it includes the rest of the transaction as well as the relay's fan-out, claim and call. The
endpoint is deleted and the receiver stopped afterwards, so the benchmarks that follow see no deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.stack import Stack, process
from devtools.devstack import free_port, tcp_open
from devtools.receiver import read_log
from services.auth import Role
from services.events import OutboxEvent
from services.notifications.models import WebhookDelivery

if TYPE_CHECKING:
    from bench.run import Figures

GOAL_MS = 1000.0
ADMIN = "admin-bench-outbox"


@dataclass(frozen=True)
class Receiving:
    """The endpoint registered for the measurement and the file its receiver logs deliveries to."""

    endpoint_id: uuid.UUID
    log: Path


@contextlib.asynccontextmanager
async def receiving(stack: Stack) -> AsyncIterator[Receiving]:
    """An admin's endpoint for every event, and the receiver process behind it, until the block ends."""
    port = free_port()
    headers = {"Authorization": f"Bearer {stack.token(Role.admin, ADMIN)}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=30) as http:
        response = await http.post(
            "/api/v1/webhook-endpoints",
            json={"url": f"http://127.0.0.1:{port}/hooks", "description": "bench: outbox lag"},
        )
        if response.status_code != 201:
            raise SystemExit(f"POST /webhook-endpoints: {response.status_code} {response.text[:300]}")
        created = response.json()
        log = stack.data_dir / "receiver-deliveries.jsonl"
        argv = [sys.executable, "-m", "devtools.receiver", "--port", str(port), "--secret", created["secret"]]
        with process(
            [*argv, "--log", str(log)], env=stack.env, ready_url=None, log=stack.data_dir / "receiver.log"
        ):
            deadline = time.monotonic() + 30
            while not tcp_open("127.0.0.1", port):
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"the webhook receiver did not start; see {stack.data_dir / 'receiver.log'}"
                    )
                await asyncio.sleep(0.1)
            try:
                yield Receiving(uuid.UUID(created["id"]), log)
            finally:
                # No more deliveries for the benchmarks that follow (pending ones are dead-lettered).
                await http.delete(f"/api/v1/webhook-endpoints/{created['id']}")


async def _left(engine: AsyncEngine, endpoint_id: uuid.UUID) -> int:
    """Events not fanned out yet, and the endpoint's deliveries still pending."""
    async with engine.connect() as conn:
        unfanned = await conn.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.fanned_out_at.is_(None))
        )
        pending = await conn.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        )
    return int(unfanned or 0) + int(pending or 0)


async def outbox_lag(
    engine: AsyncEngine,
    figures: Figures,
    receiving: Receiving,
    application_ids: list[str],
    *,
    timeout: float = 120.0,
) -> None:
    """Wait (at most ``timeout`` s) until nothing is left to deliver, then the lag of each event of the
    applications in ``application_ids`` from its ``occurred_at`` to the first arrival of its delivery."""
    waited = time.monotonic()
    while await _left(engine, receiving.endpoint_id) and time.monotonic() - waited < timeout:
        await asyncio.sleep(0.2)
    waited = time.monotonic() - waited
    ids = [uuid.UUID(a) for a in application_ids]
    occurred: dict[str, float] = {}
    fanned: dict[str, float] = {}  # when the relay made its deliveries (after the commit)
    async with engine.connect() as conn:
        for start in range(0, len(ids), 5000):  # bounded IN lists
            rows = await conn.execute(
                select(OutboxEvent.id, OutboxEvent.occurred_at, OutboxEvent.fanned_out_at).where(
                    OutboxEvent.aggregate_id.in_(ids[start : start + 5000])
                )
            )
            for event_id, at, fanned_at in rows:
                occurred[str(event_id)] = at.timestamp()
                if fanned_at is not None:
                    fanned[str(event_id)] = fanned_at.timestamp()
    first: dict[str, float] = {}
    for item in read_log(receiving.log):
        if item.webhook_id in occurred and item.webhook_id not in first:
            first[item.webhook_id] = item.at
    lags = sorted(1000 * (at - occurred[event_id]) for event_id, at in first.items())
    # Where the time went: before the fan-out (the rest of the transaction, the relay's wake-up and whatever
    # batch it was busy with) and after it (the claim and the call).
    picked = [1000 * (fanned[e] - occurred[e]) for e in first if e in fanned]
    called = [1000 * (at - fanned[e]) for e, at in first.items() if e in fanned]
    emitted, delivered = len(occurred), len(first)
    print(
        f"bench: outbox delivered {delivered} of {emitted} events of the intake's applications "
        f"(last one {waited:.1f} s after the intake)",
        flush=True,
    )
    if not lags:
        figures.add(
            "outbox_lag_p99_ms", 0.0, "ms", goal=f"<= {GOAL_MS:.0f}", met=False, note="no event arrived"
        )
        return
    p50, p99 = _pct(lags, 50), _pct(lags, 99)
    figures.add(
        "outbox_lag_p99_ms",
        p99,
        "ms",
        goal=f"<= {GOAL_MS:.0f}",
        met=p99 <= GOAL_MS and delivered == emitted,
        note=f"{delivered} of {emitted} events of the intake delivered to a local receiver by the stack's "
        f"`giantflow relay` (p50 {p50:.0f} ms, max {lags[-1]:.0f} ms); from the event's `occurred_at` (when "
        "its row was written, before the commit: conservative) to the receiver's arrival time; "
        "p99 until the fan-out "
        f"{_pct(picked, 99):.0f} ms, from the fan-out {_pct(called, 99):.0f} ms",
    )


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]
