"""Rate limits (OWASP API4): a sliding window in this process, answering 429 problems with Retry-After - per
caller on writes, per client address on the unauthenticated public routes. Behind several API processes each
keeps its own window; put a shared limiter at the gateway for a global one."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import Annotated, ClassVar

from fastapi import Depends, Request

from services.auth import CurrentUser
from services.deps import get_current_user
from services.errors import GiantflowError


class TooManyRequests(GiantflowError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_seconds`. The table holds at most `max_keys` keys: past
    that, keys whose hits have all left the window go first, then the longest-known ones (their clients start
    afresh - an in-process limiter gives way rather than grow without bound)."""

    what: ClassVar[str] = "requests"

    def __init__(self, limit: int, window_seconds: float = 60.0, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window_seconds
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._make_room(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            retry = max(1, math.ceil(hits[0] + self.window - now))
            raise TooManyRequests(
                f"At most {self.limit} {self.what} per {self.window:.0f} s; try again in {retry} s.",
                headers={"Retry-After": str(retry)},
            )
        hits.append(now)

    def _make_room(self, now: float) -> None:
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]:
            del self._hits[key]
        for key in list(self._hits)[: max(0, len(self._hits) - self.max_keys + 1)]:
            del self._hits[key]


class WriteLimiter(SlidingWindowLimiter):
    what = "writes"


class PublicLimiter(SlidingWindowLimiter):
    """Requests to the public routes per client address (``client_address``); an IPv6 client is its /64,
    which one subscriber usually holds whole."""

    what = "public requests"

    def __init__(
        self,
        limit: int,
        window_seconds: float = 60.0,
        *,
        trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
        max_keys: int = 100_000,
    ) -> None:
        super().__init__(limit, window_seconds, max_keys=max_keys)
        self.trusted_proxies = tuple(trusted_proxies)

    def hit_request(self, request: Request) -> None:
        self.hit(client_address(request, self.trusted_proxies))


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
    limiter.hit(user.sub)
    return user


WriterDep = Annotated[CurrentUser, Depends(limit_writes)]


async def limit_public(request: Request) -> None:
    """A dependency of every public route: counts the request against its client address's window."""
    limiter: PublicLimiter = request.app.state.public_limiter
    limiter.hit_request(request)
