"""Background tasks that live as long as their owner or a block: started, then cancelled and awaited, so
nothing is left running (or unawaited) when the owner closes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to stop) and wait until it has finished; its cancellation is the
    expected end, not an error."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@contextlib.asynccontextmanager
async def alongside(work: Coroutine[Any, Any, Any], *, name: str | None = None) -> AsyncIterator[None]:
    """Run ``work`` in the background while the block runs; stopped when the block ends, however it ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        await stop(task)
