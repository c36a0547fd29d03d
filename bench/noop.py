"""The stack's own ceiling: a no-op workflow with one no-op activity, run by a worker built exactly like the
service's (``workflows.worker.build_worker``: same options, interceptors and data converter) against the
same Temporal dev server. ``python -m bench.noop`` runs that worker until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

TASK_QUEUE = "bench-raw"
WORKFLOW = "NoopWorkflow"


@activity.defn(name="noop")
async def noop() -> None:
    return None


@workflow.defn(name=WORKFLOW)
class NoopWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(
            noop,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=0),
        )


async def serve() -> None:
    from services.config import get_settings
    from services.resources import connect_temporal
    from workflows.worker import build_worker

    client = await connect_temporal(get_settings(), lazy=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with build_worker(client, None, task_queue=TASK_QUEUE, workflows=[NoopWorkflow], activities=[noop]):
        print("raw worker ready", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(serve())
