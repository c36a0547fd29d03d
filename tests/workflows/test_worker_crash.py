"""Kill the worker in the middle of a review, start a new one, and the review finishes exactly once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.applications.models import Transition
from services.applications.service import review_input
from services.contracts import Actor, DecisionRequest, ReviewState
from services.resources import Resources
from tests.support.factories import seed_application
from tests.support.workers import kill_worker, start_worker, stop_worker, worker_env

pytestmark = pytest.mark.slow


async def _state(handle: Any, predicate: Any, timeout: float = 20) -> ReviewState:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        state: ReviewState = await handle.query("state", result_type=ReviewState)
        if predicate(state):
            return state
        assert asyncio.get_running_loop().time() < deadline, state
        await asyncio.sleep(0.1)


async def test_review_survives_a_killed_worker(resources: Resources, dev_server: Any, tmp_path: Path) -> None:

    queue = f"crash-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        database_url=resources.settings.effective_database_url,
        temporal_address=dev_server.client.service_client.config.target_host,
        task_queue=queue,
        data_dir=tmp_path,
    )
    async with resources.sessionmaker.begin() as session:
        application = await seed_application(session)
    first = start_worker(env, tmp_path / "worker.log")
    try:
        handle = await dev_server.client.start_workflow(
            "ReviewWorkflow",
            review_input(application, resources.programs["demo"]),
            id=f"review-{application.id}",
            task_queue=queue,
        )
        await _state(handle, lambda s: s.status == "in_review")
    finally:
        kill_worker(first)
    # The decision is sent while no worker runs; it completes once a new worker picks the workflow up.
    decision = asyncio.create_task(
        handle.execute_update(
            "decide",
            DecisionRequest(
                actor=Actor(sub="m1", role="reviewer", level="municipal", region="500100"),
                decision="approve",
                reason="ok",
            ),
            result_type=ReviewState,
        )
    )
    await asyncio.sleep(1)
    assert not decision.done()
    second = start_worker(env, tmp_path / "worker.log")
    try:
        state = await asyncio.wait_for(decision, 30)
        assert (state.status, state.stage) == ("in_review", "provincial")
    finally:
        stop_worker(second)
    assert second.returncode == 0
    async with resources.sessionmaker() as session:
        actions = list(
            (
                await session.execute(
                    select(Transition.action)
                    .where(Transition.application_id == application.id)
                    .order_by(Transition.id)
                )
            ).scalars()
        )
    assert actions == ["screened", "approved"]  # exactly once, whatever the crash
    await handle.terminate("test done")
