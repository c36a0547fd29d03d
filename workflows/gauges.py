"""The worker's domain metrics: how the business stands, for Prometheus (services/metrics.py serves them).

Read from the database by a background task every 15 s (a handful of counts over indexes or small tables,
each a few ms), never on a scrape. Every worker reports the same figures: aggregate them with ``max``, not
``sum``. Payment retries are counted as they happen, by an activity interceptor (``PaymentRetries``).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from services.applications import repository as applications
from services.contracts import DISBURSEMENT_WORKFLOW
from services.credit import repository as credit
from services.notifications.relay import backlog
from services.vocabulary import PAYOUT_KINDS

log = structlog.get_logger("giantflow.gauges")

APPLICATIONS = Gauge("giantflow_applications", "Applications by status", ["status"])
REVIEW_TASKS_OVERDUE = Gauge("giantflow_review_tasks_overdue", "Open review tasks past their SLA")
PAYOUTS_AWAITING = Gauge(
    "giantflow_payouts_awaiting_approval", "Payouts waiting for finance's decisions, by kind", ["kind"]
)
DISBURSED = Gauge("giantflow_disbursed_yuan", "Amount the bank has paid, in yuan, by payout kind", ["kind"])
LEDGER_ENTRIES = Gauge("giantflow_ledger_entries", "Double-entry ledger entries posted")
OUTBOX_LAG = Gauge("giantflow_outbox_lag_seconds", "Age of the oldest outbox event not fanned out (0: none)")
WEBHOOK_DELIVERIES = Gauge(
    "giantflow_webhook_deliveries",
    "Webhook deliveries waiting for their first attempt (pending), to be retried (retrying), or dead",
    ["state"],
)
GAUGES_REFRESHED = Gauge("giantflow_gauges_refreshed_timestamp_seconds", "When these figures were last read")
PAYMENTS_RETRYING = Gauge(
    "giantflow_payments_retrying", "Activities of disbursement workflows running on their 2nd+ attempt"
)
PAYMENT_RETRIES = Counter(
    "giantflow_payment_retries",
    "Attempts after the first of disbursement workflows' activities",
    ["activity"],
)


async def refresh(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Read every figure once, in one read-only transaction."""
    async with sessionmaker() as session:
        statuses = await applications.count_by_status(session)
        overdue = await applications.count_overdue_tasks(session, datetime.now(UTC))
        awaiting = await credit.count_awaiting_approval(session)
        paid = await credit.paid_by_kind(session)
        entries = await credit.count_ledger_entries(session)
        waiting = await backlog(session)
    for status, count in statuses.items():
        APPLICATIONS.labels(status).set(count)
    REVIEW_TASKS_OVERDUE.set(overdue)
    for kind in PAYOUT_KINDS:
        PAYOUTS_AWAITING.labels(kind).set(awaiting.get(kind, 0))
        DISBURSED.labels(kind).set(float(paid.get(kind, 0)))
    LEDGER_ENTRIES.set(entries)
    OUTBOX_LAG.set(waiting.outbox_lag_seconds)
    WEBHOOK_DELIVERIES.labels("pending").set(waiting.pending)
    WEBHOOK_DELIVERIES.labels("retrying").set(waiting.retrying)
    WEBHOOK_DELIVERIES.labels("dead").set(waiting.dead)
    GAUGES_REFRESHED.set_to_current_time()


async def refresh_forever(
    sessionmaker: async_sessionmaker[AsyncSession], stop: asyncio.Event, *, every: float = 15.0
) -> None:
    while not stop.is_set():
        try:
            await refresh(sessionmaker)
        except Exception:
            log.exception("gauges_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


class _Retries(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.attempt < 2 or info.workflow_type != DISBURSEMENT_WORKFLOW:
            return await super().execute_activity(input)
        PAYMENT_RETRIES.labels(info.activity_type).inc()
        PAYMENTS_RETRYING.inc()
        try:
            return await super().execute_activity(input)
        finally:
            PAYMENTS_RETRYING.dec()


class PaymentRetries(Interceptor):
    """Counts the disbursement workflows' activities that run again (the bank refused, timed out, or
    answered ambiguously): ``giantflow_payment_retries_total`` and ``giantflow_payments_retrying``."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Retries(next)
