"""The hot read path of ``GET /applications/{id}``: rendered views cached per application and audience, each
tagged with the application's ``version`` (bumped by database triggers on every change the view could show).

A request looks the application up by primary key - owner, region and version, one indexed row over a small
asyncpg pool of its own - checks the caller may read it, and answers the cached bytes when the version still
matches. Anything else (no cached view, an older version, a row this pool cannot see, an error) goes the
ordinary way through the ORM session, which renders and caches again. So the cache can only ever save work:
it never answers a view older than the committed row, and who may read what is decided by the same rule as
on the ORM path (``service.can_see``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg
import asyncpg.prepared_stmt
import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import CurrentUser, Role

log = structlog.get_logger(__name__)

Audience = Literal["enterprise", "staff"]  # enterprises see reviewers' names and notes masked
LOOKUP = "SELECT uscc, region_code, version FROM applications WHERE id = $1"
_Held = tuple[asyncpg.Connection, asyncpg.prepared_stmt.PreparedStatement]


@dataclass(frozen=True, slots=True)
class Access:
    uscc: str
    region_code: str
    version: int


def audience(user: CurrentUser) -> Audience:
    return "enterprise" if user.role is Role.enterprise else "staff"


class ApplicationViews:
    def __init__(
        self,
        database_url: str,
        open_session: Callable[[], AsyncSession],
        *,
        size: int = 2048,
        connections: int = 16,
    ) -> None:
        # The ordinary path's sessions: `async with views.open_session() as session` on a miss.
        self.open_session = open_session
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._size, self._connections = size, connections
        self._views: OrderedDict[tuple[uuid.UUID, Audience], tuple[int, bytes]] = OrderedDict()
        # Idle connections, each with LOOKUP prepared; at most `connections` exist, and a caller finding none
        # idle waits in line for the next one handed back. A free list rather than asyncpg's Pool: these
        # connections only ever run LOOKUP, so there is no session state to reset between uses, and the
        # lookup is the one round trip of a cached answer.
        self._idle: list[_Held] = []
        self._waiting: deque[asyncio.Future[_Held | None]] = deque()
        self._opened = 0
        self._closed = False

    async def _checkout(self) -> _Held | None:
        if self._idle:
            return self._idle.pop()
        if self._opened >= self._connections:
            waiter: asyncio.Future[_Held | None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                return await waiter  # a connection handed back, or None: its owner broke it, open anew
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._hand_on(waiter.result())  # handed to us just as we were cancelled: pass it on
                raise
        self._opened += 1
        try:
            conn = await asyncpg.connect(self._dsn, timeout=5, command_timeout=5)
            return conn, await conn.prepare(LOOKUP)
        except BaseException:
            self._opened -= 1
            self._hand_on(None)
            raise

    def _hand_on(self, held: _Held | None) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(held)
                return
        if held is not None:
            self._idle.append(held)

    def _checkin(self, held: _Held, *, broken: bool) -> None:
        if broken or self._closed:
            self._opened -= 1
            held[0].terminate()
            self._hand_on(None)
        else:
            self._hand_on(held)

    async def access(self, application_id: uuid.UUID) -> Access | None:
        """The application's owner, region and version as committed, or None when unknown or unreachable
        (the caller then takes the ordinary path, which answers the error properly)."""
        try:
            held = await self._checkout()
            while held is None:
                held = await self._checkout()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("view_lookup_failed", error=type(exc).__name__)
            return None
        broken = True
        try:
            row = await held[1].fetchrow(application_id)  # the connection's command_timeout bounds it
            broken = False
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("view_lookup_failed", error=type(exc).__name__)
            return None
        finally:
            self._checkin(held, broken=broken)
        return None if row is None else Access(row["uscc"], row["region_code"], row["version"])

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
        idle, self._idle = self._idle, []
        self._opened -= len(idle)
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
