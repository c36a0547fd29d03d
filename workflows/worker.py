"""The Temporal worker: every workflow and activity of the service on one task queue."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
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
from services.logging import configure_logging
from services.notifications.relay import relay_forever
from services.resources import Resources
from services.temporal import activity_failure

log = structlog.get_logger("giantflow.worker")


def workflow_classes() -> list[type]:
    from workflows.benefits import BenefitsWorkflow
    from workflows.disbursement import DisbursementWorkflow
    from workflows.review import ReviewWorkflow

    return [ReviewWorkflow, BenefitsWorkflow, DisbursementWorkflow]


def activity_functions(resources: Resources) -> list[Callable[..., Any]]:
    from workflows.activities import ReviewActivities
    from workflows.credit_activities import CreditActivities

    return [*ReviewActivities(resources).all(), *CreditActivities(resources).all()]


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
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(workflows or workflow_classes()),
        activities=list(activities),
        interceptors=[FailuresInterceptor()],
        **WORKER_OPTIONS,
    )


async def run_worker(settings: Settings) -> None:
    configure_logging(settings.log_level, json=settings.log_json)
    resources = await Resources.build(settings)
    from services.resources import connect_temporal

    client = await connect_temporal(settings, lazy=False)
    resources.temporal = client
    worker = build_worker(client, resources, task_queue=settings.temporal_task_queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker_started", task_queue=settings.temporal_task_queue)
    async with worker:
        reconciler = asyncio.create_task(reconcile_forever(resources, stop))
        # The outbox's relay, unless relays run apart (`giantflow relay`, GIANTFLOW_WORKER_RELAY=false).
        relays = (
            [asyncio.create_task(relay_forever(resources.sessionmaker, settings, stop))]
            if settings.worker_relay
            else []
        )
        await stop.wait()
        log.info("worker_stopping")
        await asyncio.gather(reconciler, *relays)
    await resources.close()


async def reconcile_forever(resources: Resources, stop: asyncio.Event, *, every: float = 15.0) -> None:
    """The write-then-start protocol's safety net (services/temporal.py): start the workflows of committed
    applications and payouts that have none (an API died between its commit and the start)."""
    from services.applications.workflow_client import reconcile as reconcile_applications
    from services.credit.payouts import reconcile as reconcile_payouts

    queue = resources.settings.temporal_task_queue
    while not stop.is_set():
        try:
            await reconcile_applications(
                resources.temporal, resources.sessionmaker, programs=resources.programs, task_queue=queue
            )
            await reconcile_payouts(resources.temporal, resources.sessionmaker, task_queue=queue)
        except Exception:
            log.exception("reconcile_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
