"""Activities of the credit domain (benefits, disbursements). Filled in by the credit issue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.resources import Resources


class CreditActivities:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def all(self) -> list[Callable[..., Any]]:
        return []
