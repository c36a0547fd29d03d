"""The Temporal worker: every workflow and activity of the service on one task queue."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    UnsandboxedWorkflowRunner,
    Worker,
)

from services.config import Settings
from services.errors import refused_value
from services.logging import configure_logging
from services.resources import Resources

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


class _RefusedValuesFail(ActivityInboundInterceptor):
    """A value PostgreSQL refuses is refused on every attempt: fail the activity at once instead of
    retrying it forever (the API refuses such input first; this is the backstop for every activity)."""

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except DBAPIError as exc:
            if refused_value(exc):
                raise ApplicationError(
                    "the database refused a value of this activity's input",
                    type="RefusedValue",
                    non_retryable=True,
                ) from exc
            raise


class RefusedValuesInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _RefusedValuesFail(next)


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
        interceptors=[RefusedValuesInterceptor()],
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
        await stop.wait()
        log.info("worker_stopping")
        await reconciler
    await resources.close()


async def reconcile_forever(resources: Resources, stop: asyncio.Event, *, every: float = 15.0) -> None:
    """Start review workflows for committed applications that have none (an API died mid-request)."""
    from services.applications.workflow_client import reconcile

    while not stop.is_set():
        try:
            await reconcile(
                resources.temporal,
                resources.sessionmaker,
                programs=resources.programs,
                task_queue=resources.settings.temporal_task_queue,
            )
        except Exception:
            log.exception("reconcile_failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
