"""Stop and restart PostgreSQL under a running API: /readyz reports it, requests fail cleanly with a 503
problem (never a 500), and the service recovers by itself when the database is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command

from devtools.devstack import EmbeddedPostgres, free_port
from services.app import create_app
from services.config import Settings
from services.db import create_engine, create_sessionmaker
from services.migrate import alembic_config
from services.resources import Resources
from tests.conftest import bearer, make_token

pytestmark = pytest.mark.slow


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(command.upgrade, alembic_config(server.url()), "head")
    yield server
    await asyncio.to_thread(server.stop)


# A write refused while the database is down, and taken once it is back.
ENTERPRISE = {
    "uscc": "91350100M000100Y43",
    "name": "x",
    "region_code": "350100",
    "industry": "x",
    "founded_on": "2001-01-01",
}


async def test_api_survives_a_database_restart(
    own_postgres: EmbeddedPostgres, settings: Settings, dev_server: Any
) -> None:
    own = settings.model_copy(update={"database_url": own_postgres.url()})
    engine = create_engine(own.effective_database_url)

    async def factory(_: Settings) -> Resources:
        return Resources(
            settings=own,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            temporal=dev_server.client,
            http=httpx.AsyncClient(),
            owns=True,
        )

    app = create_app(own, resources_factory=factory)
    admin = bearer(make_token(own, "admin"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
            assert (await api.get("/readyz")).status_code == 200
            assert (await api.get("/api/v1/applications", headers=admin)).status_code == 200

            await asyncio.to_thread(own_postgres.stop)
            ready = await api.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] != "ok"
            down = await api.get("/api/v1/applications", headers=admin)
            assert down.status_code == 503, down.text
            assert down.headers["content-type"] == "application/problem+json"
            assert "Retry-After" in down.headers
            write = await api.post(
                "/api/v1/enterprises",
                headers=admin,
                json=ENTERPRISE,
            )
            assert write.status_code == 503

            await asyncio.to_thread(own_postgres.start)
            for _ in range(50):
                if (await api.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.2)
            assert (await api.get("/readyz")).status_code == 200
            assert (await api.get("/api/v1/applications", headers=admin)).status_code == 200
            again = await api.post(
                "/api/v1/enterprises",
                headers=admin,
                json=ENTERPRISE,
            )
            assert again.status_code == 201  # the refused write changed nothing
