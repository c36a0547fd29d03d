"""Long-lived resources built once per process: engine, sessionmaker, Temporal client, httpx client, the
evidence store, and the API's caches of rendered application views and review-queue pages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import TLSConfig

from services.config import Settings
from services.db import RawPool, create_engine, create_sessionmaker
from services.storage import Storage, build_storage

if TYPE_CHECKING:
    from pathlib import Path

    from temporalio.runtime import Runtime

    from services.applications.queue_views import QueuePages
    from services.applications.views import ApplicationViews
    from services.catalog.registry import ProgramRegistry
    from services.credit.inbox import SharedPages
    from services.programs import Program


def temporal_tls(settings: Settings) -> TLSConfig | None:
    """The TLS the settings ask for (their files read now), or None: plaintext, unless an API key is set -
    the SDK then uses TLS with the system's CAs (Temporal Cloud)."""
    if not settings.temporal_uses_tls:
        return None

    def read(path: Path | None) -> bytes | None:
        return None if path is None else path.read_bytes()

    return TLSConfig(
        server_root_ca_cert=read(settings.temporal_tls_ca),
        domain=settings.temporal_tls_server_name,
        client_cert=read(settings.temporal_tls_cert),
        client_private_key=read(settings.temporal_tls_key),
    )


async def connect_temporal(
    settings: Settings, *, lazy: bool = True, runtime: Runtime | None = None
) -> Client:
    """The process's Temporal client; with tracing, its calls (and a worker's tasks) are traced
    (services/telemetry.py). ``runtime``: the worker's, whose metrics it serves (services/metrics.py)."""
    from temporalio.contrib.pydantic import pydantic_data_converter

    from services.telemetry import client_interceptors

    api_key = settings.temporal_api_key
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        api_key=api_key.get_secret_value() if api_key is not None else None,
        tls=temporal_tls(settings),
        data_converter=pydantic_data_converter,
        lazy=lazy,
        interceptors=client_interceptors(),
        runtime=runtime,
    )


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    temporal: Client
    http: httpx.AsyncClient
    owns: bool = field(default=True)
    # A fixed set of programs (tests) answered instead of the registry's.
    _programs: dict[str, Any] | None = field(default=None, repr=False)
    _registry: ProgramRegistry | None = field(default=None, repr=False)
    _views: ApplicationViews | None = field(default=None, repr=False)
    _queue_pages: QueuePages | None = field(default=None, repr=False)
    _payout_pages: SharedPages | None = field(default=None, repr=False)
    _storage: Storage | None = field(default=None, repr=False)
    _probe: RawPool | None = field(default=None, repr=False)

    @property
    def programs(self) -> dict[str, Program]:
        """The programs in force, read from memory: the program files until ``program_registry.start()`` has
        read the database's versions, then those, swapped within a second of a new one
        (services/catalog/registry.py)."""
        if self._programs is not None:
            return self._programs
        return self.program_registry.book

    @property
    def program_registry(self) -> ProgramRegistry:
        """The programs' registry, made on first use (a malformed program file already stopped start-up in
        the CLI); the API's lifespan and the worker ``start()`` it."""
        if self._registry is None:
            from services.catalog.registry import ProgramRegistry

            self._registry = ProgramRegistry(self.engine, self.settings.programs_dir)
        return self._registry

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

    @property
    def payout_pages(self) -> SharedPages:
        """The finance inbox's shared page reads (``GET /payouts``, services/credit/inbox.py), made on first
        use; its version checks connect only when a read asks."""
        if self._payout_pages is None:
            from services.credit.inbox import SharedPages

            self._payout_pages = SharedPages(self.sessionmaker, self.settings.effective_database_url)
        return self._payout_pages

    @property
    def storage(self) -> Storage:
        """Where evidence content lives (services/storage.py: the data folder or an S3 bucket), made on
        first use; an S3 client connects on its first request."""
        if self._storage is None:
            self._storage = build_storage(self.settings)
        return self._storage

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
        registry, self._registry = self._registry, None
        if registry is not None:
            await registry.close()
        pages, self._queue_pages = self._queue_pages, None
        if pages is not None:  # before the views: it looks up on their connections
            await pages.close()
        payout_pages, self._payout_pages = self._payout_pages, None
        if payout_pages is not None:
            await payout_pages.close()
        views, self._views = self._views, None
        if views is not None:  # made by these resources, whoever owns the engine
            await views.close()
        storage, self._storage = self._storage, None
        if storage is not None:
            await storage.close()
        probe, self._probe = self._probe, None
        if probe is not None:
            await probe.close()
        if self.owns:
            await self.http.aclose()
            await self.engine.dispose()

    async def database_ready(self) -> str | None:
        """None when the database answers ``SELECT 1`` on the probe's own connection, else why not. Not on a
        connection of the engine's pool: a pool whose every connection is checked out by requests is load, not
        an unreachable database, and must not take the instance out of its load balancer."""
        if self._probe is None:
            self._probe = RawPool(self.settings.effective_database_url, size=1)
        try:
            async with asyncio.timeout(3):
                await self._probe.fetchval("SELECT 1")
        except Exception as exc:
            return f"database: {type(exc).__name__}"
        return None

    async def storage_ready(self) -> str | None:
        """None when the evidence store answers (S3: the bucket exists and these credentials reach it)."""
        return await self.storage.ready()

    async def temporal_ready(self) -> str | None:
        try:
            async with asyncio.timeout(3):
                ok = await self.temporal.service_client.check_health()
        except Exception as exc:
            return f"temporal: {type(exc).__name__}"
        return None if ok else "temporal: not serving"
