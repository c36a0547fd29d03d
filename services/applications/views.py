"""The hot read path of ``GET /applications/{id}``, all of it: rendered views cached per application and
audience, each tagged with the application's ``version`` (bumped by database triggers on every change the view
could show); the version lookup; and the route class that answers from the cache before FastAPI solves any
dependency. The process's one ``ApplicationViews`` is held by ``Resources`` (``resources.views``).

What it buys, measured (docs/performance.md, "Read API"): the cache took the read from 255 to 1,102
requests/s; the lookup on asyncpg connections of its own with the statement prepared, shared by the requests
waiting at the same moment, and the route class answering before any dependency took the full run's
``read_api_ratio`` from 0.287 to 0.422 (p99 12 ms).

A request looks the application up by primary key - owner, region and version, one indexed row, in a query it
shares with the other requests waiting at that moment, over asyncpg's pool - checks the caller may read it,
and answers the cached bytes when the version still matches. Anything else (no cached view, an older version,
a row the lookup cannot see, an error) renders through the ORM and caches again. So the cache can only ever
save work: it never answers a view older than the committed row, and who may read what is decided by the same
rule as on the ORM path (``service.can_see``). A request looks the row up once: a miss in the route class's
shortcut hands its lookup to the ordinary handler (``request.state``).
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import structlog
from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import service
from services.auth import CurrentUser, Role
from services.batching import SharedLookups
from services.db import LOOKUP_FAILURES, RawPool
from services.deps import remembered_user
from services.shortcuts import ShortcutRoute

log = structlog.get_logger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Audience = Literal["enterprise", "staff"]  # enterprises see reviewers' names and notes masked
LOOKUP = (
    "SELECT id, uscc, region_code, status = 'draft' AS draft, version FROM applications "
    "WHERE id = ANY($1::uuid[])"
)


@dataclass(frozen=True, slots=True)
class Access:
    uscc: str
    region_code: str
    version: int
    draft: bool = False  # a draft is read by its enterprise and admins only


# Who may read an application at all; which ones each may see is ``service.can_see``.
READERS = frozenset({Role.enterprise, Role.reviewer, Role.admin})


def audience(user: CurrentUser) -> Audience:
    return "enterprise" if user.role is Role.enterprise else "staff"


class ApplicationViews(SharedLookups[uuid.UUID, Access]):
    failures = LOOKUP_FAILURES

    def __init__(
        self,
        database_url: str,
        open_session: Callable[[], AsyncSession],
        *,
        size: int = 2048,
        lookups: int = 2,
    ) -> None:
        super().__init__(lookups=lookups)
        # The ordinary path's sessions: `async with self.open_session() as session` on a miss.
        self.open_session = open_session
        self._lookups_pool = RawPool(database_url, size=lookups)  # opened when first needed
        self._size = size
        self._views: OrderedDict[tuple[uuid.UUID, Audience], tuple[int, bytes]] = OrderedDict()

    # --- the version lookup ---------------------------------------------------------------------------------

    async def access(self, application_id: uuid.UUID) -> Access | None:
        """The application's owner, region and version as committed, or None when unknown or unreachable
        (the caller then takes the ordinary path, which answers the error properly). Concurrent callers
        share lookups (``SharedLookups``): their ids go out together in one query."""
        return await self._shared(application_id)

    async def _fetch_batch(self, keys: list[uuid.UUID]) -> dict[uuid.UUID, Access]:
        async with (await self.lookup_pool()).acquire() as conn:
            rows = await self._fetch(conn, keys)
        return {
            row["id"]: Access(row["uscc"], row["region_code"], row["version"], row["draft"]) for row in rows
        }

    async def lookup_pool(self) -> Any:
        """asyncpg's pool of the lookups (services/db.py ``RawPool``), made on the first lookup. The cache of
        queue pages checks its versions on it too (services/applications/queue_views.py)."""
        return await self._lookups_pool.pool()

    @staticmethod
    async def _fetch(conn: Any, ids: list[uuid.UUID]) -> list[Any]:
        # Prepared once per connection, on its first lookup, and kept (asyncpg's statement cache): a
        # statement prepared by hand would not outlive the connection's return to the pool.
        rows: list[Any] = await conn.fetch(LOOKUP, ids)
        return rows

    # --- the cache ------------------------------------------------------------------------------------------

    def _answer(self, user: CurrentUser, application_id: uuid.UUID, access: Access | None) -> bytes | None:
        """The cached view ``user`` may read, as current as ``access``, or None: not theirs to see, unknown,
        not cached or stale. None says nothing more; the ordinary path decides."""
        if access is None or not service.can_see(
            user, uscc=access.uscc, region_code=access.region_code, draft=access.draft
        ):
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

    # --- the two ways a request is answered -----------------------------------------------------------------

    async def shortcut(self, request: Request) -> bytes | None:
        """The route class's answer, before any dependency: for a request that carries no query, a bearer
        token this API has verified and remembers, and a canonical id, the cached view when there is one.
        None for anything else - the ordinary handler then answers exactly as it would have, reusing this
        request's lookup if one was made."""
        if request.scope.get("query_string"):
            return None
        user = remembered_user(request)
        if user is None or user.role not in READERS:
            return None
        raw = request.path_params.get("application_id", "")
        try:
            application_id = uuid.UUID(raw)
        except ValueError:
            return None
        if str(application_id) != raw:  # only the canonical spelling; the ordinary path judges the others
            return None
        access = await self.access(application_id)
        request.state.application_access = access
        return self._answer(user, application_id, access)

    async def read(self, request: Request, user: CurrentUser, application_id: uuid.UUID) -> bytes:
        """The ordinary handler's answer: from the cache when it can be, rendered through the ORM otherwise
        (and cached)."""
        user.require(*READERS)  # before the lookup: says nothing about ids
        if hasattr(request.state, "application_access"):  # the shortcut looked it up for this request
            access: Access | None = request.state.application_access
        else:
            access = await self.access(application_id)
        cached = self._answer(user, application_id, access)
        if cached is not None:
            return cached
        async with self.open_session() as session:  # a read: closed without a commit
            application = await service.get_application(session, user=user, application_id=application_id)
            version = (
                application.version
            )  # read before the rows the view shows: a later change makes it stale
            view = await service.application_read(session, user=user, application=application)
        body = view.model_dump_json(by_alias=True).encode()
        self.store(application_id, audience(user), version, body)
        return body

    async def close(self) -> None:
        await self._stop_lookups()
        await self._lookups_pool.close()


class CachedRoute(ShortcutRoute):
    """A route class whose shortcut is the cache ``Resources`` holds as ``cache``: the bytes it can answer
    before FastAPI solves any dependency; anything else - a miss included - takes the route's ordinary
    handler (services/shortcuts.py)."""

    cache: ClassVar[str]  # the attribute of ``Resources`` holding the cache, e.g. "views"

    async def shortcut(self, request: Request) -> bytes | None:
        answer: bytes | None = await getattr(request.app.state.resources, self.cache).shortcut(request)
        return answer


class CachedViewRoute(CachedRoute):
    """``GET /applications/{id}``'s route class: ``ApplicationViews.shortcut`` answers from the view cache
    before FastAPI solves any dependency; anything else - a miss included - takes the route's ordinary
    handler, which answers exactly as it would have: the shortcut can only answer what the ordinary path
    answers from the same cache."""

    cache = "views"
