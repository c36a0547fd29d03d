"""The Temporal worker: every workflow and activity of the service on one task queue."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    UnsandboxedWorkflowRunner,
    Worker,
)

from services.config import Settings
from services.logging import cache_loggers, configure_logging
from services.metrics import serve_metrics, temporal_runtime
from services.notifications.relay import relay_forever
from services.resources import Resources
from services.telemetry import WORKER, instrument_engine, setup_tracing, shutdown_tracing
from services.temporal import activity_failure
from workflows.gauges import PaymentRetries, refresh_forever

log = structlog.get_logger("giantflow.worker")


def workflow_classes() -> list[type]:
    from workflows.benefits import BenefitsWorkflow
    from workflows.disbursement import DisbursementWorkflow
    from workflows.reconciliation import ReconciliationWorkflow
    from workflows.review import ReviewWorkflow

    return [ReviewWorkflow, BenefitsWorkflow, DisbursementWorkflow, ReconciliationWorkflow]


def activity_functions(resources: Resources) -> list[Callable[..., Any]]:
    from workflows.activities import ReviewActivities
    from workflows.credit_activities import CreditActivities
    from workflows.panel_activities import PanelActivities
    from workflows.reconciliation_activities import ReconciliationActivities

    return [
        *ReviewActivities(resources).all(),
        *PanelActivities(resources).all(),
        *CreditActivities(resources).all(),
        *ReconciliationActivities(resources).all(),
    ]


class _FailuresMapped(ActivityInboundInterceptor):
    """Every activity's exceptions go through the boundary's one table (``services.temporal``): what would
    fail the same way on every attempt - a business rule, a row that is gone, a refused value - ends the
    activity with a non-retryable ApplicationError naming it; anything else is retried by the policy."""

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as exc:
            failure = activity_failure(exc)
            if failure is None:
                raise
            raise failure from exc


class FailuresInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _FailuresMapped(next)


# The worker's tuning, in one place: bench/raw_worker.py runs its no-op ceiling with exactly these.
WORKER_OPTIONS: dict[str, Any] = {
    "max_concurrent_activities": 50,
    "workflow_runner": UnsandboxedWorkflowRunner(),
}


def build_worker(
    client: Client,
    resources: Resources | None,
    *,
    task_queue: str,
    workflows: Sequence[type] | None = None,
    activities: Sequence[Callable[..., Any]] | None = None,
) -> Worker:
    if activities is None:
        assert resources is not None, "the service's activities need its resources"
        activities = activity_functions(resources)
    # Stopping (SIGTERM), the worker takes no new tasks and lets the activities in flight finish for this
    # long before it cancels them: an attempt that finishes is not retried elsewhere from the start.
    drain = resources.settings.worker_shutdown_seconds if resources is not None else 0.0
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows or workflow_classes()),
        activities=list(activities),
        interceptors=[FailuresInterceptor(), PaymentRetries()],
        graceful_shutdown_timeout=timedelta(seconds=drain),
        **WORKER_OPTIONS,
    )


async def run_worker(settings: Settings) -> None:
    configure_logging(settings.log_level, json=settings.log_json)
    cache_loggers()
    setup_tracing(settings, WORKER)
    resources = await Resources.build(settings)
    instrument_engine(resources.engine)
    await resources.program_registry.start()  # seeds from the files; new versions read within a second
    from services.resources import connect_temporal

    # With a metrics port: /metrics there, with the SDK's metrics (this client's runtime) and the domain's.
    metrics = serve_metrics(settings)
    client = await connect_temporal(settings, lazy=False, runtime=temporal_runtime(settings))
    resources.temporal = client
    worker = build_worker(client, resources, task_queue=settings.temporal_task_queue)
    await ensure_schedules(client, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker_started",
        task_queue=settings.temporal_task_queue,
        metrics=f"http://{metrics.address}/metrics" if metrics else None,
    )
    async with worker:
        reconciler = asyncio.create_task(reconcile_forever(resources, stop))
        gauges = [asyncio.create_task(refresh_forever(resources.sessionmaker, stop))] if metrics else []
        # The outbox's relay, unless relays run apart (`giantflow relay`, GIANTFLOW_WORKER_RELAY=false).
        relays = (
            [asyncio.create_task(relay_forever(resources.sessionmaker, settings, stop))]
            if settings.worker_relay
            else []
        )
        await stop.wait()
        log.info("worker_stopping")
        await asyncio.gather(reconciler, *relays, *gauges)
    await resources.close()
    if metrics is not None:
        metrics.close()
    shutdown_tracing()


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """The service's Temporal Schedules, created or brought up to date (idempotent): the daily bank
    reconciliation (services/credit/reconciliation.py). Only a running worker - or `giantflow temporal-setup`
    - makes them, never the tests' workers."""
    from services.credit.reconciliation import ensure_schedule

    outcome = await ensure_schedule(client, task_queue=settings.temporal_task_queue)
    log.info("schedule_ensured", schedule="reconciliation-daily", outcome=outcome)


async def reconcile_forever(resources: Resources, stop: asyncio.Event, *, every: float = 15.0) -> None:
    """The write-then-start protocol's safety net (services/temporal.py): start the workflows of committed
    applications and payouts that have none (an API died between its commit and the start), and tell the
    benefits of revoked titles that were never told to stop. And the overdue sweep of drawdowns
    (services/credit/repayments.py)."""
    from services.applications.imported import tell_untold
    from services.applications.workflow_client import reconcile as reconcile_applications
    from services.credit.payouts import reconcile as reconcile_payouts
    from services.credit.repayments import sweep_overdue
    from services.pools.service import resume_abandoned as resume_pool_imports

    queue = resources.settings.temporal_task_queue
    owner = f"worker-{uuid.uuid4().hex[:12]}"
    while not stop.is_set():
        try:
            await reconcile_applications(
                resources.temporal, resources.sessionmaker, programs=resources.programs, task_queue=queue
            )
            await reconcile_payouts(resources.temporal, resources.sessionmaker, task_queue=queue)
            # Revoked titles whose benefits an API never told to stop (it died after its commit).
            await tell_untold(resources.temporal, resources.sessionmaker)
            # Drawdowns past due with an amount outstanding: flagged and announced once (repayments.py).
            await sweep_overdue(resources.sessionmaker)
            # Pool imports whose runner died (its lease ran out): go on from the last chunk (services/pools).
            await resume_pool_imports(resources.sessionmaker, programs=resources.programs, owner=owner)
        except Exception:
            log.exception("reconcile_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
