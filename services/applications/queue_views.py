"""The hot read path of ``GET /review-tasks``, all of it: pages rendered per caller and query string, each
tagged with its queue's version and the moment the clock alone would change it; the version check; and the
route class that answers from the cache before FastAPI solves any dependency. The process's one
``QueuePages`` is held by ``Resources`` (``resources.queue_pages``).

A queue's version is the sum of the ``changes`` the database counts on the rows of ``review_queue_counts`` the
queue covers (``repository.QUEUE_VERSION``): the trigger that keeps those rows bumps one with every change to
an open task of theirs - a task opened, closed, moved, escalated, claimed or released - in the transaction
that makes it, so the sum grows with every committed change to the queue. A page stays right until then or
until the clock passes its queue's next due date (a task turns overdue) or claim expiry (a claim lapses),
whichever comes first.

A request whose bearer token this API has verified and remembers, for a query string it has rendered for the
same caller, reads the version (one indexed sum over a few hundred rows, on the asyncpg connections of the
application views' lookups) and answers the cached bytes when it still matches and the clock has not passed.
Anything else renders through the ordinary handler (``service.queue_page``: version first, then the rows) and
caches again. So the cache can only ever save work: it never answers a page older than the changes committed
when the request arrived, and the query string it answers for has passed the ordinary route's checks before.

What it buys, measured with ``bench/review_queue.py`` on a 2-CPU machine (a provincial reviewer's filtered
first page of 50, with the counts): rendered every time, 130-190 requests/s (p99 120-330 ms) with 600 tasks in
the queue; answered from the cache, 3,300 requests/s (p99 9 ms, ``review_queue_ratio`` 0.39) in a
BENCH_SCALE=0.1 run of ``make bench``, and 4,000 (ratio 0.37-0.39, p99 7 ms) with the full 6,000 on a quiet
machine (2,700-3,000, ratio 0.24-0.31, while another test suite ran beside it). The version lookups shared by
the requests waiting at the same moment (``SharedLookups``, one in flight) took it from 2,600 to 3,600
requests/s at 600 tasks, against 4,250 with no version check at all.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import repository as repo
from services.applications import service
from services.applications.schemas import QueueFilters
from services.applications.views import CachedRoute
from services.auth import CurrentUser, Role, TokenVerifier
from services.batching import SharedLookups
from services.db import LOOKUP_FAILURES

Key = tuple[CurrentUser, bytes]  # the caller (its whole identity and groups) and the raw query string


class QueuePages(SharedLookups[repo.QueueVersionArgs, int]):
    failures = LOOKUP_FAILURES

    def __init__(self, pool: Callable[[], Awaitable[Any]], *, size: int = 256, lookups: int = 1) -> None:
        super().__init__(lookups=lookups)
        self._pool = pool  # asyncpg's pool of the application views' lookups
        self._size = size
        # key -> (the queue's version, fresh until (epoch seconds; inf: no clock limit), the page's bytes)
        self._pages: OrderedDict[Key, tuple[int, float, bytes]] = OrderedDict()

    async def version(self, user: CurrentUser) -> int | None:
        """The caller's queue's version as committed now, or None when it cannot be read (the caller then
        takes the ordinary path, which answers properly). Callers of one queue waiting at the same moment
        share one query (``SharedLookups``)."""
        return await self._shared(repo.queue_version_args(service.queue_scope(user)))

    async def _fetch_batch(self, keys: list[repo.QueueVersionArgs]) -> dict[repo.QueueVersionArgs, int]:
        versions = {}
        async with (await self._pool()).acquire() as conn:
            for level, low, high, groups in keys:
                value = await conn.fetchval(repo.QUEUE_VERSION, level, low, high, list(groups))
                versions[level, low, high, groups] = int(value)
        return versions

    async def close(self) -> None:
        await self._stop_lookups()

    async def shortcut(self, request: Request) -> bytes | None:
        """The route class's answer, before any dependency: for a reviewer whose bearer token this API
        remembers, a page cached for the same caller and query string, when its queue's version still
        matches and the clock has not passed its limit. None for anything else."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        verifier: TokenVerifier = request.app.state.verifier
        user = verifier.remembered(token)
        if user is None or user.role is not Role.reviewer:
            return None
        key = (user, request.scope.get("query_string", b""))
        entry = self._pages.get(key)
        if entry is None:
            return None
        version, fresh_until, body = entry
        if time.time() >= fresh_until or await self.version(user) != version:
            return None
        self._pages.move_to_end(key)
        return body

    async def read(
        self,
        request: Request,
        session: AsyncSession,
        *,
        user: CurrentUser,
        filters: QueueFilters,
        cursor: str | None,
        limit: int,
    ) -> bytes:
        """The ordinary handler's answer: rendered (``service.queue_page``) and cached."""
        version, fresh_until, page = await service.queue_page(
            session, user=user, filters=filters, cursor=cursor, limit=limit
        )
        body = page.model_dump_json().encode()
        self.store((user, request.scope.get("query_string", b"")), version, fresh_until, body)
        return body

    def store(self, key: Key, version: int, fresh_until: datetime | None, body: bytes) -> None:
        current = self._pages.get(key)
        if current is not None and current[0] > version:
            return  # a concurrent request already cached a newer page
        limit = fresh_until.timestamp() if fresh_until is not None else float("inf")
        self._pages[key] = (version, limit, body)
        self._pages.move_to_end(key)
        while len(self._pages) > self._size:
            self._pages.popitem(last=False)


class CachedQueueRoute(CachedRoute):
    """``GET /review-tasks``' route class: ``QueuePages.shortcut`` answers from the cache of pages before
    FastAPI solves any dependency; anything else - a miss included - takes the route's ordinary handler,
    which answers exactly as it would have: the shortcut only answers a query string the ordinary path has
    checked and rendered for the same caller."""

    cache = "queue_pages"
