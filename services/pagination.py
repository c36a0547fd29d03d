"""Keyset pagination: an opaque cursor of (created_at, id)."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import AwareDatetime, BaseModel, BeforeValidator

from services.errors import FieldError, Unprocessable

MAX_PAGE = 200
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}")]
CursorQuery = Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")]


def encode_cursor(at: datetime, ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{ident}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, ident = raw.split("|")
        parsed = datetime.fromisoformat(at)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed, uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError):
        raise Unprocessable(
            "The cursor is not one this service issued.",
            errors=[FieldError(field="cursor", message="invalid cursor")],
        ) from None


T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    """One page of a list; `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


def split_page(
    rows: Sequence[R], limit: int, position: Callable[[R], tuple[datetime, uuid.UUID]]
) -> tuple[Sequence[R], str | None]:
    """The rows of this page (queried with one extra row) and the cursor of the next page, if any."""
    if len(rows) > limit:
        return rows[:limit], encode_cursor(*position(rows[limit - 1]))
    return rows, None


RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"


def _rfc3339(value: object) -> object:
    """Times in queries are RFC 3339 with an offset (API.md); pydantic alone would also take a bare number
    as a Unix timestamp (`make fuzz` found `?valid_on=-3990260844` accepted)."""
    if isinstance(value, str) and not re.fullmatch(RFC3339, value):
        raise ValueError("a time is RFC 3339 with an offset, e.g. 2026-11-22T08:00:00+08:00")
    return value


Rfc3339Query = Annotated[
    AwareDatetime | None,
    BeforeValidator(_rfc3339),
    Query(
        description="RFC 3339 with an offset", json_schema_extra={"format": "date-time", "pattern": RFC3339}
    ),
]
