"""Migrations on real PostgreSQL: no drift from the models, and upgrade -> downgrade -> upgrade works."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from services.migrate import alembic_config
from services.models import metadata


def _dsn(url: str, database: str) -> str:
    return make_url(url).set(drivername="postgresql", database=database).render_as_string(hide_password=False)


@pytest.fixture
async def scratch_database(migrated: str) -> AsyncIterator[str]:
    """An empty database of its own on the same server."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(_dsn(migrated, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield make_url(migrated).set(database=name).render_as_string(hide_password=False)
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_autogenerate_finds_no_drift(engine: AsyncEngine) -> None:
    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_upgrade_downgrade_upgrade(scratch_database: str) -> None:
    config = alembic_config(scratch_database)

    async def tables() -> set[str]:
        eng = create_async_engine(scratch_database)
        try:
            async with eng.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await eng.dispose()

    await asyncio.to_thread(command.upgrade, config, "head")
    assert set(metadata.tables) <= await tables()
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await tables() <= {"alembic_version"}
    await asyncio.to_thread(command.upgrade, config, "head")
    assert set(metadata.tables) <= await tables()


async def test_audit_trail_is_append_only(session: AsyncSession) -> None:
    from datetime import UTC, datetime

    from sqlalchemy.exc import DBAPIError

    from services.applications.models import Transition
    from tests.support.factories import seed_application

    application = await seed_application(session)
    session.add(
        Transition(
            application_id=application.id,
            event_key=f"k-{application.id}",
            actor="t",
            role="system",
            action="submitted",
            to_status="screening",
            at=datetime.now(UTC),
        )
    )
    await session.flush()
    for statement in ("UPDATE transitions SET reason = 'rewritten'", "DELETE FROM transitions"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with session.begin_nested():
                await session.execute(text(statement + " WHERE application_id = :a"), {"a": application.id})
