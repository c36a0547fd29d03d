"""The rate limits hold in total across API processes: their state is in PostgreSQL (services/ratelimit.py),
so two limiters on two pools of their own - as two replicas would have - share one allowance per key."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ratelimit import PublicLimiter, SharedLimits, TooManyRequests, WriteLimiter


@pytest.fixture
async def replicas(migrated: str) -> AsyncIterator[tuple[SharedLimits, SharedLimits]]:
    first, second = SharedLimits(migrated), SharedLimits(migrated)
    yield first, second
    await first.close()
    await second.close()


def caller() -> str:
    return f"caller-{uuid.uuid4().hex[:12]}"  # the table is shared by the session: a key of this test's own


async def keys_stored(engine: AsyncEngine, *keys: str) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT key FROM rate_limits WHERE key = ANY(:keys)"), {"keys": keys})
        return {row.key for row in rows}


async def test_write_limiter_answers_429_with_retry_after(
    replicas: tuple[SharedLimits, SharedLimits],
) -> None:
    limiter = WriteLimiter(replicas[0], limit=3, window_seconds=60)  # a burst of 3, then one per 20 s
    a, b = caller(), caller()
    start = datetime.now(UTC)
    for second in range(3):
        await limiter.hit(a, now=start + timedelta(seconds=second))
    await limiter.hit(b, now=start + timedelta(seconds=2.5))  # another caller has an allowance of its own
    with pytest.raises(TooManyRequests) as info:
        await limiter.hit(a, now=start + timedelta(seconds=10))
    assert info.value.status == 429
    assert info.value.detail == "At most 3 writes per 60 s; try again in 10 s."
    assert info.value.headers == {"Retry-After": "10"}  # the first hit's share is back 20 s after it
    await limiter.hit(a, now=start + timedelta(seconds=20.5))
    with pytest.raises(TooManyRequests):
        await limiter.hit(a, now=start + timedelta(seconds=21))


async def test_the_limit_holds_across_replicas(replicas: tuple[SharedLimits, SharedLimits]) -> None:
    first, second = (WriteLimiter(limits, limit=3, window_seconds=60) for limits in replicas)
    a = caller()
    await first.hit(a)
    await second.hit(a)
    await first.hit(a)
    # Each replica has seen fewer than 3 of the caller's writes; together they have seen 3.
    for replica in (second, first):
        with pytest.raises(TooManyRequests) as info:
            await replica.hit(a)
        assert 1 <= int(info.value.headers["Retry-After"]) <= 20  # type: ignore[index]
    # Public requests are counted apart from writes, under the same key.
    public = PublicLimiter(replicas[1], limit=1)
    assert public.what == "public requests"
    await public.hit(a)
    with pytest.raises(TooManyRequests, match="At most 1 public requests per 60 s"):
        await public.hit(a)


async def test_the_table_forgets_idle_callers(
    replicas: tuple[SharedLimits, SharedLimits], migrated: str, engine: AsyncEngine
) -> None:
    limiter = WriteLimiter(replicas[0], limit=2, window_seconds=60)
    idle, active, gone = caller(), caller(), caller()
    await limiter.hit(idle, now=datetime.now(UTC) - timedelta(minutes=5))  # its allowance is whole again
    await limiter.hit(active)
    assert await keys_stored(engine, f"write:{idle}", f"write:{active}") == {
        f"write:{idle}",
        f"write:{active}",
    }
    # The sweep deletes the rows that limit nothing any more; the process holds nothing per caller.
    assert await replicas[1].sweep() >= 1
    assert await keys_stored(engine, f"write:{idle}", f"write:{active}") == {f"write:{active}"}
    # A forgotten caller has its whole allowance.
    await limiter.hit(idle)
    await limiter.hit(idle)
    with pytest.raises(TooManyRequests):
        await limiter.hit(idle)

    # A process sweeps as it hits, every `sweep_every` seconds (a minute in the API; here every hit).
    sweeping = SharedLimits(migrated, sweep_every=0)
    try:
        await limiter.hit(gone, now=datetime.now(UTC) - timedelta(hours=1))
        assert await keys_stored(engine, f"write:{gone}") == {f"write:{gone}"}
        await WriteLimiter(sweeping, limit=2).hit(caller())
        assert await keys_stored(engine, f"write:{gone}", f"write:{idle}") == {f"write:{idle}"}
    finally:
        await sweeping.close()
