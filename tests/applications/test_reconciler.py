"""An API that dies between committing an application and starting its workflow loses nothing: the
worker's reconciler starts workflows for committed applications that have none."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from services.applications.models import Application
from services.applications.workflow_client import reconcile
from services.contracts import ReviewState
from services.resources import Resources
from tests.support.factories import seed_application


async def test_reconciler_starts_missing_workflows_once(resources: Resources, worker: Any) -> None:
    async with resources.sessionmaker.begin() as session:
        application = await seed_application(
            session, workflow_started=False, created_at=datetime.now(UTC) - timedelta(minutes=2)
        )
    queue = resources.settings.temporal_task_queue
    started = await reconcile(
        resources.temporal, resources.sessionmaker, programs=resources.programs, task_queue=queue
    )
    assert started >= 1
    handle = resources.temporal.get_workflow_handle(f"review-{application.id}")
    for _ in range(100):
        state = await handle.query("state", result_type=ReviewState)
        if state.status == "in_review":
            break
        await asyncio.sleep(0.1)
    assert state.status == "in_review"
    async with resources.sessionmaker() as session:
        row = await session.get(Application, application.id)
        assert row is not None
        assert row.workflow_started is True
    # A second pass finds nothing more to do for it.
    again = await reconcile(
        resources.temporal, resources.sessionmaker, programs=resources.programs, task_queue=queue
    )
    assert again == 0
    await handle.terminate("test done")
