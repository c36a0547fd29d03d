"""A stopping worker (SIGTERM: ``run_worker`` leaves ``async with worker``) drains: an activity in flight
finishes within ``worker_shutdown_seconds`` and its result is recorded, rather than being cancelled and
retried from the start by another worker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.common import RetryPolicy

from services.resources import Resources
from workflows.worker import build_worker


class SlowStep:
    """An activity that takes a while, and says whether it finished or was cancelled."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.outcome: str | None = None

    @activity.defn(name="slow_step")
    async def slow_step(self) -> str:
        self.started.set()
        try:
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            self.outcome = "cancelled"
            raise
        self.outcome = "finished"
        return "done"


@workflow.defn(name="SlowStepWorkflow")
class SlowStepWorkflow:
    @workflow.run
    async def run(self) -> str:
        result: str = await workflow.execute_activity(
            "slow_step",
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )
        return result


async def _stop_during_the_activity(resources: Resources, drain: float) -> tuple[str | None, list[Any]]:
    """Start the workflow, stop its worker while the activity runs; the activity's outcome and the
    workflow's history events."""
    queue = f"drain-{uuid.uuid4().hex[:8]}"
    step = SlowStep()
    resources.settings = resources.settings.model_copy(update={"worker_shutdown_seconds": drain})
    worker = build_worker(
        resources.temporal,
        resources,
        task_queue=queue,
        workflows=[SlowStepWorkflow],
        activities=[step.slow_step],
    )
    running = asyncio.create_task(worker.run())
    handle = await resources.temporal.start_workflow(
        "SlowStepWorkflow",
        id=f"drain-{uuid.uuid4()}",
        task_queue=queue,
        execution_timeout=timedelta(minutes=1),
    )
    await asyncio.wait_for(step.started.wait(), 15)
    await worker.shutdown()
    await running
    history = await handle.fetch_history()
    await handle.terminate()
    return step.outcome, [event.event_type for event in history.events]


async def test_a_stopping_worker_lets_its_activities_finish(resources: Resources) -> None:
    outcome, events = await _stop_during_the_activity(resources, drain=10)
    assert outcome == "finished"
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED in events


async def test_without_a_drain_the_activity_is_cancelled(resources: Resources) -> None:
    # What the setting buys: with none, the activity in flight is cancelled at once (and would be retried).
    outcome, events = await _stop_during_the_activity(resources, drain=0)
    assert outcome == "cancelled"
    assert EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED not in events
