"""Long-lived resources built once per process: engine, sessionmaker, Temporal client, httpx client, and the
API's caches of rendered application views and review-queue pages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from services.config import Settings
from services.db import create_engine, create_sessionmaker

if TYPE_CHECKING:
    from services.applications.queue_views import QueuePages
    from services.applications.views import ApplicationViews
    from services.programs import Program


async def connect_temporal(settings: Settings, *, lazy: bool = True) -> Client:
    from temporalio.contrib.pydantic import pydantic_data_converter

    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    temporal: Client
    http: httpx.AsyncClient
    owns: bool = field(default=True)
    _programs: dict[str, Any] | None = field(default=None, repr=False)
    _views: ApplicationViews | None = field(default=None, repr=False)
    _queue_pages: QueuePages | None = field(default=None, repr=False)

    @property
    def programs(self) -> dict[str, Program]:
        """The programs folder, loaded once (a malformed file already stopped start-up in the CLI)."""
        if self._programs is None:
            from services.programs import load_programs

            self._programs = load_programs(self.settings.programs_dir)
        return self._programs

    @property
    def views(self) -> ApplicationViews:
        """The cache of rendered application views that ``GET /applications/{id}`` answers from
        (services/applications/views.py), made on first use: its lookups connect only when a read asks."""
        if self._views is None:
            from services.applications.views import ApplicationViews

            self._views = ApplicationViews(self.settings.effective_database_url, self.sessionmaker)
        return self._views

    @property
    def queue_pages(self) -> QueuePages:
        """The cache of rendered review-queue pages that ``GET /review-tasks`` answers from
        (services/applications/queue_views.py); it checks versions on the application views' connections,
        which close with them."""
        if self._queue_pages is None:
            from services.applications.queue_views import QueuePages

            self._queue_pages = QueuePages(self.views.lookup_pool)
        return self._queue_pages

    @classmethod
    async def build(cls, settings: Settings) -> Resources:
        engine = create_engine(settings.effective_database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
            temporal=await connect_temporal(settings),
            http=httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0)),
        )

    async def close(self) -> None:
        pages, self._queue_pages = self._queue_pages, None
        if pages is not None:  # before the views: it looks up on their connections
            await pages.close()
        views, self._views = self._views, None
        if views is not None:  # made by these resources, whoever owns the engine
            await views.close()
        if self.owns:
            await self.http.aclose()
            await self.engine.dispose()

    async def database_ready(self) -> str | None:
        try:
            async with asyncio.timeout(3):
                async with self.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return f"database: {type(exc).__name__}"
        return None

    async def temporal_ready(self) -> str | None:
        try:
            async with asyncio.timeout(3):
                ok = await self.temporal.service_client.check_health()
        except Exception as exc:
            return f"temporal: {type(exc).__name__}"
        return None if ok else "temporal: not serving"
