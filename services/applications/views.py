"""The hot read path of ``GET /applications/{id}``: rendered views cached per application and audience, each
tagged with the application's ``version`` (bumped by database triggers on every change the view could show).

A request looks the application up by primary key - owner, region and version, one indexed row, in a query it
shares with the other requests waiting at that moment, over asyncpg connections of its own - checks the
caller may read it, and answers the cached bytes when the version still matches. Anything else (no cached
view, an older version, a row the lookup cannot see, an error) goes the ordinary way through the ORM session,
which renders and caches again. So the cache can only ever save work: it never answers a view older than the
committed row, and who may read what is decided by the same rule as on the ORM path (``service.can_see``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

import asyncpg
import asyncpg.prepared_stmt
import structlog
from fastapi import Depends, Request
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications.service import can_see
from services.auth import CurrentUser, Role

log = structlog.get_logger(__name__)

Audience = Literal["enterprise", "staff"]  # enterprises see reviewers' names and notes masked
LOOKUP = "SELECT id, uscc, region_code, version FROM applications WHERE id = ANY($1::uuid[])"
_Held = tuple[asyncpg.Connection, asyncpg.prepared_stmt.PreparedStatement]


@dataclass(frozen=True, slots=True)
class Access:
    uscc: str
    region_code: str
    version: int


# Who may read an application at all; which ones each may see is ``service.can_see``.
READERS = frozenset({Role.enterprise, Role.reviewer, Role.admin})


def audience(user: CurrentUser) -> Audience:
    return "enterprise" if user.role is Role.enterprise else "staff"


class ApplicationViews:
    def __init__(
        self,
        database_url: str,
        open_session: Callable[[], AsyncSession],
        *,
        size: int = 2048,
        lookups: int = 2,
    ) -> None:
        # The ordinary path's sessions: `async with views.open_session() as session` on a miss.
        self.open_session = open_session
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._size, self._lookups = size, lookups
        self._views: OrderedDict[tuple[uuid.UUID, Audience], tuple[int, bytes]] = OrderedDict()
        # Ids whose callers wait for a lookup not sent yet; at most `lookups` are in flight, each on a
        # connection of its own with LOOKUP prepared (idle ones wait in `_idle`).
        self._pending: dict[uuid.UUID, list[asyncio.Future[Access | None]]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False
        self._idle: list[_Held] = []
        self._closed = False

    async def access(self, application_id: uuid.UUID) -> Access | None:
        """The application's owner, region and version as committed, or None when unknown or unreachable
        (the caller then takes the ordinary path, which answers the error properly).

        Concurrent callers share lookups: their ids go out together in one query once one of the `lookups`
        slots is free. A caller only ever joins a query sent after it asked, so the version it gets is never
        older than the one committed when its request arrived."""
        if self._closed:
            return None
        future: asyncio.Future[Access | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(application_id, []).append(future)
        self._schedule_flush()
        return await future

    def _schedule_flush(self) -> None:
        if self._pending and len(self._in_flight) < self._lookups and not self._flush_scheduled:
            self._flush_scheduled = True
            # On the loop's next turn, so callers that arrive in this one go out in the same query.
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or len(self._in_flight) >= self._lookups:
            return
        batch, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._lookup(batch))
        self._in_flight.add(task)
        task.add_done_callback(self._lookup_done)

    def _lookup_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not self._closed:
            self._schedule_flush()

    async def _lookup(self, batch: dict[uuid.UUID, list[asyncio.Future[Access | None]]]) -> None:
        found: dict[uuid.UUID, Access] = {}
        held: _Held | None = None
        try:
            held = self._idle.pop() if self._idle else await self._connect()
            rows = await held[1].fetch(list(batch))  # the connection's command_timeout bounds it
            found = {row["id"]: Access(row["uscc"], row["region_code"], row["version"]) for row in rows}
            if self._closed:
                held[0].terminate()
            else:
                self._idle.append(held)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("view_lookup_failed", error=type(exc).__name__)
            if held is not None:
                held[0].terminate()
        finally:
            # Whatever happened, nobody is left waiting: a caller without an answer goes the ordinary way.
            for application_id, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(application_id))

    async def _connect(self) -> _Held:
        conn = await asyncpg.connect(self._dsn, timeout=5, command_timeout=5)
        try:
            return conn, await conn.prepare(LOOKUP)
        except BaseException:
            conn.terminate()
            raise

    async def answer(self, user: CurrentUser, application_id: uuid.UUID) -> bytes | None:
        """The cached view ``user`` may read, as current as the committed row, or None: not a reader, not
        theirs to see, unknown, not cached or stale. None says nothing more; the ordinary path decides."""
        if user.role not in READERS:
            return None
        access = await self.access(application_id)
        if access is None or not can_see(user, uscc=access.uscc, region_code=access.region_code):
            return None
        return self.cached(application_id, audience(user), access.version)

    def cached(self, application_id: uuid.UUID, who: Audience, version: int) -> bytes | None:
        entry = self._views.get((application_id, who))
        if entry is None or entry[0] != version:
            return None
        self._views.move_to_end((application_id, who))
        return entry[1]

    def store(self, application_id: uuid.UUID, who: Audience, version: int, body: bytes) -> None:
        key = (application_id, who)
        current = self._views.get(key)
        if current is not None and current[0] > version:
            return  # a concurrent request already cached a newer view
        self._views[key] = (version, body)
        self._views.move_to_end(key)
        while len(self._views) > self._size:
            self._views.popitem(last=False)

    async def close(self) -> None:
        self._closed = True
        pending, self._pending = self._pending, {}
        for futures in pending.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        if self._in_flight:  # each bounded by the connection's command_timeout
            await asyncio.wait(set(self._in_flight), timeout=10)
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)


async def get_application_views(request: Request) -> ApplicationViews:
    views: ApplicationViews = request.app.state.application_views
    return views


ViewsDep = Annotated[ApplicationViews, Depends(get_application_views)]
