"""Rate limits (OWASP API4), answering 429 problems with Retry-After - per caller on writes, per client
address on the unauthenticated public routes - that hold in total across every API process: their state is
in PostgreSQL (``rate_limits``, services/ratelimit_models.py), one row per key, never in the process.

The rule is GCRA (the generic cell rate algorithm): a key's row holds its theoretical arrival time ``tat``;
with ``limit`` hits per ``window``, each hit moves it ``window / limit`` on from ``max(tat, now)``, and a
hit that would take it more than ``window`` ahead of now is refused. So a caller may spend its ``limit`` at
once and then one hit per ``window / limit``. A hit is one statement on the database's clock (the
replicas' clocks never disagree), atomic under the row's lock: no read-then-write race between replicas.

What it costs: one round trip per hit, on asyncpg connections of the limits' own with the statement
prepared once per connection, outside the request's transaction (in it, the row's lock would be held until
the request commits and serialize a caller's concurrent writes)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Annotated, Any, ClassVar

import structlog
from fastapi import Depends, Request

from services.auth import CurrentUser
from services.db import LOOKUP_FAILURES, RawPool
from services.deps import get_current_user
from services.errors import GiantflowError, ServiceUnavailable

log = structlog.get_logger(__name__)


class TooManyRequests(GiantflowError):
    status, slug, title = 429, "rate-limited", "Too many requests"


# One hit: take the key's allowance if it has one (insert the row, or move its tat on), else leave the row
# as it is. ``hit`` is empty when refused. The statement's snapshot may predate hits other replicas
# committed while it waited for the row's lock, so a refused hit reads the row again (``TAT``, a statement
# of its own, a new snapshot) for its Retry-After: one more round trip, on refusals only.
HIT = """
WITH hit AS (
    INSERT INTO rate_limits AS limits (key, tat)
    VALUES ($1, coalesce($2::timestamptz, statement_timestamp()) + $3::interval)
    ON CONFLICT (key) DO UPDATE
    SET tat = greatest(limits.tat, coalesce($2::timestamptz, statement_timestamp())) + $3::interval
    WHERE greatest(limits.tat, coalesce($2::timestamptz, statement_timestamp())) + $3::interval
        <= coalesce($2::timestamptz, statement_timestamp()) + $4::interval
    RETURNING limits.tat
)
SELECT EXISTS (SELECT FROM hit) AS allowed
"""
TAT = "SELECT tat, coalesce($2::timestamptz, statement_timestamp()) AS now FROM rate_limits WHERE key = $1"
# A row whose allowance is whole again says what no row says: the table holds only the keys in use.
SWEEP = "DELETE FROM rate_limits WHERE tat < statement_timestamp()"

# What the limits' connections may raise when the database is away or refuses.
FAILURES = LOOKUP_FAILURES


class SharedLimits:
    """The rate limits' state, shared through PostgreSQL: one per process (built in the API's lifespan),
    on a small asyncpg pool of its own, opened when first needed. Every ``sweep_every`` seconds one hit also
    deletes the rows whose allowance is whole again, so the table is bounded by the keys active within a
    window; the process keeps nothing per key."""

    def __init__(self, database_url: str, *, connections: int = 4, sweep_every: float = 60.0) -> None:
        self._pool = RawPool(database_url, size=connections)
        self._sweep_every = sweep_every
        self._next_sweep = time.monotonic() + sweep_every

    async def hit(self, key: str, *, limit: int, window: float, now: datetime | None = None) -> float | None:
        """Counts one hit of ``key`` against ``limit`` per ``window`` seconds: None when allowed, else the
        seconds until a hit would be. ``now`` (tests) stands in for the database's clock."""
        interval = timedelta(seconds=window / limit)
        async with self._pool.acquire() as conn:
            allowed = await conn.fetchval(HIT, key, now, interval, timedelta(seconds=window))
            row = None if allowed else await conn.fetchrow(TAT, key, now)
            if time.monotonic() >= self._next_sweep:
                self._next_sweep = time.monotonic() + self._sweep_every
                await self._sweep(conn)
        if allowed:
            return None
        if row is None:  # swept since: a hit's spacing is the wait
            return interval.total_seconds()
        wait: timedelta = row["tat"] + interval - timedelta(seconds=window) - row["now"]
        return max(wait.total_seconds(), interval.total_seconds() / 1000)

    async def sweep(self) -> int:
        """Deletes the rows whose allowance is whole again; how many."""
        async with self._pool.acquire() as conn:
            return await self._sweep(conn)

    @staticmethod
    async def _sweep(conn: Any) -> int:
        try:
            status: str = await conn.execute(SWEEP)
        except FAILURES:  # the next sweep will do
            log.warning("rate_limits_sweep_failed", exc_info=True)
            return 0
        return int(status.rsplit(" ", 1)[-1])

    async def close(self) -> None:
        await self._pool.close()


class Limiter:
    """At most ``limit`` hits per key in ``window_seconds`` (a burst of ``limit``, then one hit per
    ``window_seconds / limit``), counted in ``limits`` under keys of this limiter's ``kind``."""

    what: ClassVar[str] = "requests"
    kind: ClassVar[str] = "requests"

    def __init__(self, limits: SharedLimits, limit: int, window_seconds: float = 60.0) -> None:
        self.limits = limits
        self.limit = limit
        self.window = window_seconds

    async def hit(self, key: str, now: datetime | None = None) -> None:
        try:
            wait = await self.limits.hit(f"{self.kind}:{key}", limit=self.limit, window=self.window, now=now)
        except FAILURES as exc:
            raise ServiceUnavailable(
                "The database is unavailable; nothing was changed. Try again shortly.",
                headers={"Retry-After": "5"},
            ) from exc
        if wait is not None:
            retry = max(1, math.ceil(wait))
            raise TooManyRequests(
                f"At most {self.limit} {self.what} per {self.window:.0f} s; try again in {retry} s.",
                headers={"Retry-After": str(retry)},
            )


class WriteLimiter(Limiter):
    what = "writes"
    kind = "write"


class PublicLimiter(Limiter):
    """Requests to the public routes per client address (``client_address``); an IPv6 client is its /64,
    which one subscriber usually holds whole."""

    what = "public requests"
    kind = "public"

    def __init__(
        self,
        limits: SharedLimits,
        limit: int,
        window_seconds: float = 60.0,
        *,
        trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
    ) -> None:
        super().__init__(limits, limit, window_seconds)
        self.trusted_proxies = tuple(trusted_proxies)

    async def hit_request(self, request: Request) -> None:
        await self.hit(client_address(request, self.trusted_proxies))


def _trusted(address: str, proxies: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(request: Request, trusted_proxies: Sequence[IPv4Network | IPv6Network] = ()) -> str:
    """The client a request comes from: the socket peer, unless the peer is a trusted proxy - then the
    nearest address in X-Forwarded-For (read from the right) that is not one, since every proxy appends the
    address it heard from and only the trusted ones can be believed. IPv6 addresses as their /64."""
    peer = request.client.host if request.client else ""
    address = peer
    if trusted_proxies and _trusted(peer, trusted_proxies):
        forwarded = [
            part.strip()
            for header in request.headers.getlist("x-forwarded-for")
            for part in header.split(",")
            if part.strip()
        ]
        for hop in reversed(forwarded):
            address = hop
            if not _trusted(hop, trusted_proxies):
                break
    try:
        ip = ip_address(address)
    except ValueError:
        return address[:100] or "unknown"
    if ip.version == 6:
        return str(ip_network(f"{ip}/64", strict=False))
    return str(ip)


async def limit_writes(
    request: Request, user: Annotated[CurrentUser, Depends(get_current_user)]
) -> CurrentUser:
    limiter: WriteLimiter = request.app.state.write_limiter
    await limiter.hit(user.sub)
    return user


WriterDep = Annotated[CurrentUser, Depends(limit_writes)]


async def limit_public(request: Request) -> None:
    """A dependency of every public route: counts the request against its client address's window."""
    limiter: PublicLimiter = request.app.state.public_limiter
    await limiter.hit_request(request)
