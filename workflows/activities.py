"""Activities of the review workflow."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.resources import Resources


class ReviewActivities:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def all(self) -> list[Callable[..., Any]]:
        return []
