"""Copying one object's attributes into another's constructor: ``Read(**fields_of(row, NAMES), extra=...)``
where a response model takes most of its fields from a row (or settings) of the same names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["fields_of"]


def fields_of(obj: object, names: Iterable[str]) -> dict[str, Any]:
    """``{name: obj.name}`` for each of ``names``, in their order."""
    return {name: getattr(obj, name) for name in names}
