"""Engine, sessions and the declarative base with a constraint naming convention."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

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
