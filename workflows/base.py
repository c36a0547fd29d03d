"""What every activity class shares: the process's resources, and one database transaction per attempt."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from services.resources import Resources

T = TypeVar("T")


class Activities:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    async def _in_transaction(self, step: Callable[..., Awaitable[T]], /, **data: Any) -> T:
        """``step(session, **data)`` in one transaction: an attempt's (committed when it returns)."""
        async with self.resources.sessionmaker.begin() as session:
            return await step(session, **data)
