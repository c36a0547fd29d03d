"""Lookups shared by the requests waiting at the same moment: the one batching both domains' read shortcuts
use (the application views, the review-queue pages, the payouts inbox)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedLookups(Generic[K, V]):
    """Lookups shared by the callers waiting at the same moment: the keys asked for go out together, once one
    of `lookups` slots is free, in one batch (``_fetch_batch``). A caller only ever joins a batch sent after
    it asked, so what it gets is never older than what was committed when its request arrived; it gets None
    when the key is unknown, the lookup failed or the lookups are closed. Used by the application views, the
    review-queue pages and the payouts inbox. ``failures``: what a lookup may raise (logged).
    """

    failures: tuple[type[BaseException], ...] = (OSError, TimeoutError)

    def __init__(self, *, lookups: int) -> None:
        self._lookups = lookups
        # Keys whose callers wait for a lookup not sent yet; at most `lookups` are in flight.
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._flush_scheduled = False
        self._closed = False

    async def _shared(self, key: K) -> V | None:
        if self._closed:
            return None
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append(future)
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

    async def _lookup(self, batch: dict[K, list[asyncio.Future[V | None]]]) -> None:
        found: dict[K, V] = {}
        try:
            found = await self._fetch_batch(list(batch))  # the connection's command_timeout bounds it
        except self.failures as exc:
            log.warning("shared_lookup_failed", lookups=type(self).__name__, error=type(exc).__name__)
        finally:
            # Whatever happened, nobody is left waiting: a caller without an answer goes the ordinary way.
            for key, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(found.get(key))

    async def _fetch_batch(self, keys: list[K]) -> dict[K, V]:
        raise NotImplementedError

    async def _stop_lookups(self) -> None:
        self._closed = True
        pending, self._pending = self._pending, {}
        for futures in pending.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        if self._in_flight:  # each bounded by the connection's command_timeout
            await asyncio.wait(set(self._in_flight), timeout=10)
