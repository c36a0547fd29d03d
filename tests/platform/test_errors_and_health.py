"""Problems for every error, health and readiness, security headers."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.config import Settings
from services.errors import install_problem_handlers


async def test_unknown_path_is_a_404_problem(api_rollback: httpx.AsyncClient) -> None:
    resp = await api_rollback.get("/api/v1/no-such-thing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == 404
    assert body["type"].endswith("/not-found")
    assert "/api/v1/no-such-thing" in body["detail"]


async def test_wrong_method_is_a_405_problem(api_rollback: httpx.AsyncClient) -> None:
    resp = await api_rollback.delete("/healthz")
    assert resp.status_code == 405
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.json()["title"] == "Method Not Allowed"


async def test_healthz_and_security_headers(api_rollback: httpx.AsyncClient) -> None:
    resp = await api_rollback.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"
    assert resp.headers["x-request-id"] == "abc-123"
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"


async def test_readyz_is_503_while_temporal_is_down(api_rollback: httpx.AsyncClient) -> None:
    resp = await api_rollback.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["temporal"] != "ok"


async def test_readyz_is_200_with_database_and_temporal(api: httpx.AsyncClient) -> None:
    resp = await api.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["checks"] == {"database": "ok", "temporal": "ok"}


async def test_readyz_is_200_while_requests_hold_every_connection_of_the_pool(
    settings: Settings, dev_server: Any
) -> None:
    """A pool busy with requests is load, not an unreachable database: /readyz answers on a connection of its
    own, so a load balancer does not take a busy instance out (and the others with it, one by one)."""
    from services.app import create_app
    from services.resources import Resources
    from tests.conftest import served
    from tests.support.resources import borrowing

    engine = create_async_engine(settings.effective_database_url, pool_size=1, max_overflow=0)
    async with httpx.AsyncClient() as http:
        resources = borrowing(settings, engine, dev_server.client, http)

        async def factory(_: Settings) -> Resources:
            return resources

        try:
            async with served(create_app(settings, resources_factory=factory)) as api:
                async with engine.connect() as held:  # the pool's only connection, in use
                    await held.execute(text("SELECT 1"))
                    with pytest.raises(TimeoutError):  # a request's session would wait for it
                        async with asyncio.timeout(0.5), engine.connect():
                            pass
                    ready = await api.get("/readyz")
                    assert ready.status_code == 200, ready.text
                    assert ready.json()["checks"] == {"database": "ok", "temporal": "ok"}
        finally:
            await engine.dispose()


async def test_openapi_is_served(api_rollback: httpx.AsyncClient) -> None:
    resp = await api_rollback.get("/openapi.json")
    assert resp.status_code == 200
    assert resp.json()["info"]["title"] == "giantflow"
    docs = await api_rollback.get("/docs")
    assert docs.status_code == 200


async def test_writes_over_the_limit_get_a_429_problem(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    from tests.conftest import bearer, make_token

    api_rollback._transport.app.state.write_limiter.limit = 2  # type: ignore[attr-defined]
    # The limits' state is the database's, shared by the session's apps: a caller of this test's own.
    headers = bearer(make_token(settings, "admin", f"admin-rate-{uuid.uuid4().hex[:8]}"))
    statuses = [
        (await api_rollback.post("/api/v1/enterprises", headers=headers, json={"uscc": "bad"})).status_code
        for _ in range(3)
    ]
    assert statuses == [422, 422, 429]


async def test_a_driver_error_while_connecting_is_a_503_when_the_database_is_away() -> None:
    """asyncpg's own errors reach the handlers unwrapped when they are raised while a connection is being
    made (SQLAlchemy wraps only a statement's): PostgreSQL "starting up" after a restart (57P03, seen in
    `make chaos`) is a 503 problem with Retry-After, never a 500; any other such error stays a 500."""
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/starting")
    async def starting() -> None:
        raise asyncpg.exceptions.CannotConnectNowError("the database system is starting up")

    @app.get("/refused")
    async def refused() -> None:
        raise asyncpg.exceptions.InsufficientPrivilegeError("permission denied for table applications")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        away = await client.get("/starting")
        assert away.status_code == 503, away.text
        assert away.headers["content-type"] == "application/problem+json"
        assert away.headers["Retry-After"] == "5"
        assert away.json()["type"].endswith("/service-unavailable")
        broken = await client.get("/refused")
        assert broken.status_code == 500
        assert broken.json()["type"].endswith("/internal")
