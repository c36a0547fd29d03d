"""Review workflows in the time-skipping test server, with the real activities on real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from services.applications.models import Application
from services.applications.service import review_input
from services.config import Settings
from services.contracts import ReviewState
from services.resources import Resources
from tests.support.factories import seed_application
from tests.support.resources import borrowing
from workflows.worker import build_worker


@dataclass
class Harness:
    env: WorkflowEnvironment
    resources: Resources
    task_queue: str

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.resources.sessionmaker

    async def seed(
        self,
        *,
        tier: str = "specialized_new",
        program: str = "demo",
        region: str = "500103",
        metrics: dict[str, Any] | None = None,
        uscc: str | None = None,
    ) -> Application:
        batch = self.resources.programs[program].batches[0].key
        async with self.sessionmaker.begin() as session:
            return await seed_application(
                session, tier=tier, program=program, batch=batch, region=region, metrics=metrics, uscc=uscc
            )

    async def start(
        self, application: Application, *, before_re_review_windows: bool = False
    ) -> WorkflowHandle[Any, ReviewState]:
        """Start the application's review; `before_re_review_windows`: with the input a review started before
        re-review windows had (none: it opens a re-review of the old figures at expiry)."""
        program = self.resources.programs[application.program]
        data = review_input(application, program)
        if before_re_review_windows:
            durations = data.durations.model_copy(update={"re_review_window": None})
            data = data.model_copy(update={"durations": durations})
        return await self.env.client.start_workflow(
            "ReviewWorkflow",
            data,
            id=f"review-{application.id}",
            task_queue=self.task_queue,
            result_type=ReviewState,
        )

    async def state(self, handle: WorkflowHandle[Any, Any]) -> ReviewState:
        result: ReviewState = await handle.query("state", result_type=ReviewState)
        return result

    async def wait_state(
        self,
        handle: WorkflowHandle[Any, Any],
        predicate: Callable[[ReviewState], bool],
        timeout: float = 15.0,
    ) -> ReviewState:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = await self.state(handle)
            if predicate(state):
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"state never matched; last {state}")
            await asyncio.sleep(0.05)

    async def row(self, application_id: uuid.UUID) -> Application:
        async with self.sessionmaker() as session:
            application = await session.get(Application, application_id)
            assert application is not None
            return application


@pytest.fixture
async def harness(
    time_skipping: WorkflowEnvironment, engine: AsyncEngine, settings: Settings
) -> AsyncIterator[Harness]:
    queue = f"ts-{uuid.uuid4().hex[:10]}"
    http = httpx.AsyncClient()
    resources = borrowing(settings, engine, time_skipping.client, http, task_queue=queue)
    async with build_worker(time_skipping.client, resources, task_queue=queue):
        yield Harness(env=time_skipping, resources=resources, task_queue=queue)
    await http.aclose()
