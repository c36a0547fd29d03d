"""The hot read path of ``GET /payouts`` (the finance inbox), all of it: a route class that answers before
FastAPI solves any dependency, and pages read once for the concurrent requests for the same page.

Checkers poll the same first page of the inbox (``?status=awaiting_approval``), and the ordinary path costs
the API about 3 ms of CPU a request - FastAPI solving the dependencies, a session, the query, a read model
per payout - so a few dozen officers would queue behind one another. Here the requests for one page that
arrive while its query is not sent yet share it: one session, one query; a page read again and found the
same keeps what was rendered for it; each caller then only gets its own ``can_approve`` flags, and callers
with the same flags the same bytes. A caller only ever joins a query sent after it asked, so its answer is
never older than the payouts committed when its request arrived - the answer the ordinary path gives, from
the same service functions (``service.inbox_rows``, ``can_approve``, ``inbox_page``) and the same
validation of the query (FastAPI's own, of the route's parameters).

What it buys, measured on 2 cores (``payouts_inbox_p99_ms`` in docs/performance.md: a finance officer's first
page of 50 payouts awaiting approval, wrk with 16 connections, a year of payouts and 100,000 ledger lines):
the ordinary path answered about 270 requests/s with a p99 of about 110 ms (about 3 ms of API CPU a
request); this path about 1,300 to 2,000 requests/s with a p99 of 16 to 23 ms (about 0.4 to 0.5 ms). On a
slower day of the same machine (the bare endpoint at 4,250 requests/s instead of 7,350), 1,050 requests/s
and a p99 of 30-34 ms with two reads in flight, each in a transaction of its own; 1,300 and 19 ms with three
in flight, each one statement in autocommit (one round trip instead of BEGIN, query, ROLLBACK). Each read
first asks the payouts' version (migration d0c5e0000006) and reads its page again only when it moved:
1,250 requests/s, p99 20-22 ms there, the page query gone from the reads; what is left is the request
itself and one small query per batch of waiting callers.

Only a request the shortcut can fully judge goes this way: a bearer token this API has verified and
remembers, of a role that reads credit data, and a query FastAPI validates without an error, each parameter
given once; an enterprise naming another enterprise, a cursor this service did not issue, a failed read -
anything else takes the ordinary handler, which answers exactly as it would have.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import Request, params
from fastapi._compat import ModelField
from fastapi.dependencies.utils import get_flat_params, request_params_to_args
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.auth import CurrentUser
from services.batching import SharedLookups
from services.credit import payouts, repository, service
from services.credit.schemas import ListFilters
from services.db import LOOKUP_FAILURES, RawPool
from services.deps import remembered_user
from services.errors import GiantflowError
from services.pagination import SegmentCursor, decode_segment_cursor
from services.shortcuts import ShortcutRoute

log = structlog.get_logger(__name__)

READERS = frozenset(service.READERS)
FILTERS = frozenset(ListFilters.model_fields)
FOREVER = datetime.max.replace(tzinfo=UTC)


@dataclass
class SharedPage:
    """A page as every reader allowed to see it sees it, kept while its reads find the same rows: the bodies
    rendered for it by the callers' ``can_approve`` flags (the 8 last), and each caller's flags until the
    next approval deadline of the page could change them (the 64 last callers)."""

    rows: service.InboxRows
    version: int  # the payouts' version (``service.inbox_version``) read just before the rows
    bodies: dict[tuple[bool, ...], bytes] = field(default_factory=dict)
    flags: dict[CurrentUser, tuple[tuple[bool, ...], datetime]] = field(default_factory=dict)

    def body(self, user: CurrentUser) -> bytes:
        at = payouts.now()
        known = self.flags.get(user)
        if known is None or at >= known[1]:
            deadlines = (deadline for _, _, deadline, _ in self.rows.deciding if deadline > at)
            known = (tuple(service.can_approve(user, self.rows, at)), min(deadlines, default=FOREVER))
            self.flags[user] = known
            _bound(self.flags, 64)
        body = self.bodies.get(known[0])
        if body is None:
            body = self.bodies[known[0]] = service.inbox_page(self.rows, known[0]).model_dump_json().encode()
            _bound(self.bodies, 8)
        return body


def _bound(kept: dict[Any, Any], size: int) -> None:
    while len(kept) > size:
        del kept[next(iter(kept))]  # the oldest


# A page asked for: the filters as (name, value) pairs, the cursor as given and as decoded, the limit.
Key = tuple[tuple[tuple[str, Any], ...], str | None, SegmentCursor | None, int]


class SharedPages(SharedLookups[Key, SharedPage]):
    """The pages being asked for through one app's sessions, each read once for the requests waiting for
    it; at most ``width`` reads in flight (three measured best on 2 CPUs: one or two leave the database idle
    between reads, four gain nothing). Each read asks the payouts' version first, on a connection of
    asyncpg's own pool (one round trip, none of a session's work), and opens a session only for the pages
    whose version moved."""

    failures = (OSError, SQLAlchemyError, TimeoutError, GiantflowError, *LOOKUP_FAILURES)

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        database_url: str,
        *,
        width: int = 3,
        remembered: int = 16,
    ) -> None:
        super().__init__(lookups=width)
        self._sessions, self._remembered = sessions, remembered
        # The last page read of each key (``remembered`` keys at most), with the bodies rendered for it.
        self._recent: OrderedDict[Key, SharedPage] = OrderedDict()
        self._versions = RawPool(database_url, size=width)

    async def page(
        self, *, filters: ListFilters, cursor: str | None, after: SegmentCursor | None, limit: int
    ) -> SharedPage | None:
        """The page of ``filters`` (as the reader may see them) after ``cursor``, from a query sent after
        this call; None when it could not be read (the caller takes the ordinary path)."""
        return await self._shared((tuple(filters), cursor, after, limit))

    async def _fetch_batch(self, keys: list[Key]) -> dict[Key, SharedPage]:
        # The key is the whole question: a batch never looks anything up beside it (two batches in flight
        # may ask for the same page).
        found: dict[Key, SharedPage] = {}
        # Read before any page: a page is at least as new as the version read before it, so a page read at
        # the version still current is right now, and is not read again.
        version = int(await self._versions.fetchval(repository.INBOX_VERSION_SQL))
        stale = []
        for key in keys:
            before = self._recent.get(key)
            if before is not None and before.version == version:
                self._recent.move_to_end(key)
                found[key] = before
            else:
                stale.append(key)
        if not stale:
            return found
        # Each statement on its own, in autocommit: one round trip each, not BEGIN, the query, ROLLBACK.
        async with self._sessions() as session:
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            for key in stale:
                filtered_by, _, after, limit = key
                filters = ListFilters(**dict(filtered_by))
                rows = await service.inbox_rows(session, filters=filters, after=after, limit=limit)
                found[key] = self._same_as_before(key, rows, version)
        return found

    async def close(self) -> None:
        await self._stop_lookups()
        await self._versions.close()

    def _same_as_before(self, key: Key, rows: service.InboxRows, version: int) -> SharedPage:
        """The page just read, with the bodies already rendered for it when the read before found the very
        same rows: a page nobody decided on since is rendered once, not once a read."""
        before = self._recent.pop(key, None)
        if before is not None and before.rows == rows:
            page, page.version = before, version
        else:
            page = SharedPage(rows, version)
        self._recent[key] = page
        while len(self._recent) > self._remembered:
            self._recent.popitem(last=False)
        return page


@dataclass(frozen=True)
class Asked:
    """What a request for the inbox asks, as the route's parameters validate it."""

    filters: ListFilters
    cursor: str | None
    after: SegmentCursor | None
    limit: int


class InboxRoute(ShortcutRoute):
    """``GET /payouts``'s route class: a request the shortcut can judge is answered from a shared page
    before FastAPI solves any dependency; anything else takes the route's ordinary handler."""

    # The queries validated so far (the last 256), by their raw text: None for those the shortcut leaves to
    # the ordinary handler. Validating is a pure function of the text.
    _known: OrderedDict[bytes, Asked | None]
    _fields: list[ModelField]  # the route's query parameters, worked out on first use

    def _asked(self, request: Request) -> Asked | None:
        if not hasattr(self, "_known"):
            self._known, self._fields = OrderedDict(), []
        known, fields = self._known, self._fields
        raw: bytes = request.scope.get("query_string", b"")
        if raw in known:
            known.move_to_end(raw)
            return known[raw]
        if not fields:
            fields.extend(
                p for p in get_flat_params(self.dependant) if isinstance(p.field_info, params.Query)
            )
        names = {field.alias for field in fields}
        given = request.query_params
        found: Asked | None = None
        if all(name in names and len(given.getlist(name)) == 1 for name in given):
            values, errors = request_params_to_args(fields, given)
            if not errors:
                try:
                    found = Asked(
                        filters=ListFilters(**{k: v for k, v in values.items() if k in FILTERS}),
                        cursor=values["cursor"],
                        after=decode_segment_cursor(values["cursor"]),
                        limit=values["limit"],
                    )
                except GiantflowError:  # a cursor this service did not issue
                    pass
        known[raw] = found
        if len(known) > 256:
            known.popitem(last=False)
        return found

    async def shortcut(self, request: Request) -> bytes | None:
        user = remembered_user(request)
        if user is None or user.role not in READERS:
            return None
        query = self._asked(request)
        narrowed = None if query is None else service.scoped(user, query.filters)
        if query is None or narrowed is None:
            return None
        pages: SharedPages = request.app.state.resources.payout_pages
        page = await pages.page(filters=narrowed, cursor=query.cursor, after=query.after, limit=query.limit)
        return None if page is None else page.body(user)
