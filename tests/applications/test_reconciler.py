"""An API that dies between committing an application and starting its workflow loses nothing: the
worker's reconciler starts workflows for committed applications that have none."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.applications.models import Application, Enterprise
from services.applications.workflow_client import reconcile
from services.resources import Resources
from tests.support.factories import random_uscc, strong_metrics
from workflows.inputs import ReviewState


async def test_reconciler_starts_missing_workflows_once(resources: Resources, worker: Any) -> None:
    uscc, created = random_uscc(), datetime.now(UTC) - timedelta(minutes=2)
    program = resources.programs["demo"]
    async with resources.sessionmaker.begin() as session:
        session.add(
            Enterprise(
                uscc=uscc,
                name="x",
                region_code="500103",
                industry="x",
                founded_on=date(2010, 1, 1),
                registered_by="t",
            )
        )
        await session.flush()
        application = Application(
            id=uuid.uuid4(),
            uscc=uscc,
            program="demo",
            tier="specialized_new",
            batch=program.batches[0].key,
            ruleset="national-2022",
            region_code="500103",
            status="screening",
            metrics=strong_metrics(),
            submitted_by="t",
            created_at=created,
            updated_at=created,
        )
        session.add(application)
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
