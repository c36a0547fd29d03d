"""Engine, sessions and the declarative base with a constraint naming convention."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import asyncpg
from sqlalchemy import DateTime, MetaData, Numeric, func
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Annotated[Decimal, mapped_column(Numeric(18, 2))]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: DateTime(timezone=True)}


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=10, pool_pre_ping=True, connect_args={"timeout": 5}
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL ``url`` as asyncpg's own pools take it (the caches' and the rate limits').

    SQLAlchemy's asyncpg dialect takes TLS as ``?ssl=require`` (passed to ``asyncpg.connect(ssl=...)``);
    in a DSN asyncpg reads it as ``sslmode`` (anything else in the query string would be sent to the
    server as a setting), so the one URL in GIANTFLOW_DATABASE_URL serves both."""
    parsed = make_url(url).set(drivername="postgresql")
    query = dict(parsed.query)
    if "ssl" in query:
        query.setdefault("sslmode", query.pop("ssl"))
    return parsed.set(query=query).render_as_string(hide_password=False)


# What a statement on a ``RawPool`` may raise when the database is away or refuses.
LOOKUP_FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """A hot path's statement leaves no session state behind (autocommit, no setting): the pool's default
    reset would cost every use one more round trip."""


class RawPool:
    """asyncpg's own pool for a hot path's small statements (the rate limits' hits, the application views'
    and review queue's version lookups, the payouts inbox's version), beside the engine's: no session, no
    transaction, one round trip a statement, each prepared once per connection (asyncpg's statement cache).
    Made on first use with ``min_size=0``, so making it connects nothing and concurrent first users never
    wait on it half made."""

    def __init__(self, database_url: str, *, size: int) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._size = size
        self._pool: Any = None

    async def pool(self) -> Any:
        if self._pool is None:
            self._pool = asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._size,
                timeout=5,
                command_timeout=5,
                reset=_nothing_to_reset,
            )
        return await self._pool

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with (await self.pool()).acquire() as conn:
            yield conn

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def close(self) -> None:
        """Closes the connections; one still held past the wait is terminated instead."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 5)
