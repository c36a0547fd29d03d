"""``lifecycle_seconds``: one application's whole three-year life in the time-skipping test server.

Submit over the API (in process, ASGI), screening, both review levels, the public notice, recognition, the
credit line, a drawdown approved and paid through the stack's bank simulator, then the re-review window
before the 3-year validity runs out, the enterprise's re-review filed and waiting in the municipal queue.
The real activities run on a database of their own on the stack's PostgreSQL; the time-skipping server skips
the notice period and the three years. Measured from the first request to the re-review in the queue
(server start-up excluded and printed separately).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from bench.journey import Journey, describe
from bench.stack import BIN, Stack
from devtools.seeding import random_uscc, strong_metrics
from services.app import create_app
from services.config import Settings
from services.db import create_engine, create_sessionmaker
from services.resources import Resources
from services.temporal import register_search_attributes
from workflows.worker import build_worker

DATABASE = "lifecycle"


async def _fresh_database(stack: Stack) -> str:
    admin = create_async_engine(
        stack.database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT", pool_size=1
    )
    async with admin.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{DATABASE}"'))
        await conn.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    await admin.dispose()
    url = stack.database_url.rsplit("/", 1)[0] + f"/{DATABASE}"
    subprocess.run(
        [str(BIN / "giantflow"), "migrate"], env={**stack.env, "GIANTFLOW_DATABASE_URL": url}, check=True
    )
    return url


async def lifecycle(stack: Stack) -> float:
    url = await _fresh_database(stack)
    booted = time.perf_counter()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client, "default")  # workflows carry Uscc, Program, Tier, Stage
    print(f"  (time-skipping server up in {time.perf_counter() - booted:.2f} s)", flush=True)
    settings: Settings = stack.settings.model_copy(
        update={"database_url": url, "temporal_task_queue": f"lifecycle-{uuid.uuid4().hex[:8]}"}
    )
    engine = create_engine(url)
    resources = Resources(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        temporal=env.client,
        http=httpx.AsyncClient(timeout=10),
    )
    await (
        resources.program_registry.start()
    )  # the worker's programs: the database's versions, as in production

    async def shared(_: Settings) -> Resources:
        return Resources(**{**resources.__dict__, "owns": False})

    app = create_app(settings, resources_factory=shared)
    try:
        async with (
            build_worker(env.client, resources, task_queue=settings.temporal_task_queue),
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://giantflow") as http,
        ):
            journey = Journey(http, stack.token, random_uscc("500103"))
            started = time.perf_counter()
            application_id = await journey.submit()
            await journey.approve_both_levels(application_id)
            await env.sleep(timedelta(seconds=3))  # the notice period (PT2S)
            await journey.wait_status(application_id, "recognized")
            line = await journey.credit_line()
            drawdown_id = await journey.request_drawdown(line["id"], "500000.00")
            await journey.approve_drawdown(drawdown_id)
            await journey.wait_disbursed(drawdown_id)
            # Into the re-review window (the program's default: the last 90 days of the three years), where
            # the enterprise files its current figures.
            await env.sleep(timedelta(days=3 * 365 - 60))
            recognitions = await journey.call("GET", "/recognitions", journey.owner, 200)
            recognition_id = recognitions["items"][0]["id"]

            async def re_review() -> str | None:
                response = await journey.send(
                    "POST",
                    f"/recognitions/{recognition_id}/re-review",
                    journey.owner,
                    key=f"re-review-{journey.uscc}",
                    json={"metrics": strong_metrics()},
                )
                if response is None or response.status_code == 409:  # the window's timer not fired yet
                    return None
                if response.status_code != 201:
                    journey.fail(describe(response))
                application: str = response.json()["application_id"]
                return application

            renewal = await journey.until("the re-review", re_review)
            await journey.wait_status(renewal, "in_review", "municipal")
            elapsed = time.perf_counter() - started
            await env.client.get_workflow_handle(f"review-{renewal}").terminate("benchmark done")
    finally:
        await resources.program_registry.close()
        await resources.http.aclose()
        await engine.dispose()
        await env.shutdown()
    return elapsed
