"""A per-caller limit on writes (OWASP API4): a sliding window in this process, answering 429 problems
with Retry-After. Behind several API processes each keeps its own window; put a shared limiter at the
gateway for a global one."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from typing import Annotated

from fastapi import Depends, Request

from services.auth import CurrentUser
from services.deps import get_current_user
from services.errors import GiantflowError


class TooManyRequests(GiantflowError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class WriteLimiter:
    def __init__(self, limit: int, window_seconds: float = 60.0) -> None:
        self.limit = limit
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = defaultdict(deque)

    def hit(self, caller: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        hits = self._hits[caller]
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            retry = max(1, math.ceil(hits[0] + self.window - now))
            raise TooManyRequests(
                f"At most {self.limit} writes per {self.window:.0f} s; try again in {retry} s.",
                headers={"Retry-After": str(retry)},
            )
        hits.append(now)


async def limit_writes(
    request: Request, user: Annotated[CurrentUser, Depends(get_current_user)]
) -> CurrentUser:
    limiter: WriteLimiter = request.app.state.write_limiter
    limiter.hit(user.sub)
    return user


WriterDep = Annotated[CurrentUser, Depends(limit_writes)]
