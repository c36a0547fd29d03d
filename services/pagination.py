"""Keyset pagination: an opaque cursor of (created_at, id). Every list pages the same way: its repository
query goes through `paginate` (one row beyond the page, one sort rule), its service turns the rows into a
`Page` with `split_page`. A list shown in segments (the finance inbox: awaiting approval, then the rest) pages
each segment so, and its cursor also names the segment (`encode_segment_cursor`)."""

from __future__ import annotations

import base64
import operator
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import AwareDatetime, BaseModel, BeforeValidator
from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import QueryableAttribute

from services.errors import FieldError, Unprocessable

MAX_PAGE = 200
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size, at most {MAX_PAGE}")]
CursorQuery = Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")]


Cursor = tuple[datetime, uuid.UUID]
"""Where a page ended: the (created_at, id) of its last row."""


def encode_cursor(at: datetime, ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{ident}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Cursor | None:
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
        raise _not_issued() from None


def _not_issued() -> Unprocessable:
    return Unprocessable(
        "The cursor is not one this service issued.",
        errors=[FieldError(field="cursor", message="invalid cursor")],
    )


T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S", bound=Select[*tuple[Any, ...]])


def paginate(
    stmt: S,
    *,
    key: tuple[QueryableAttribute[datetime], QueryableAttribute[uuid.UUID]],
    cursor: Cursor | None,
    limit: int,
    newest_first: bool,
) -> S:
    """`stmt` as one page of a list ordered by `key` (a timestamp and the id that breaks its ties), newest
    first or oldest first: only the rows past `cursor` in that order, sorted so, and `limit` + 1 of them, the
    extra row telling `split_page` that another page follows."""
    at, ident = key
    past = operator.lt if newest_first else operator.gt
    if cursor is not None:
        cursor_at, cursor_id = cursor
        stmt = stmt.where(or_(past(at, cursor_at), and_(at == cursor_at, past(ident, cursor_id))))
    order = (at.desc(), ident.desc()) if newest_first else (at.asc(), ident.asc())
    return stmt.order_by(*order).limit(limit + 1)


SegmentCursor = tuple[int, Cursor]
"""Where a page of a list shown in segments ended (segment 0's rows, then segment 1's, ..., each segment
paged by (created_at, id) with `paginate`): its last row's segment and position in it."""


def encode_segment_cursor(segment: int, cursor: str | None) -> str | None:
    """The next page's cursor of a segmented list: `cursor` (from `split_page`, null on the last page) of a
    page whose last row is in `segment`."""
    return None if cursor is None else f"{segment}.{cursor}"


def decode_segment_cursor(cursor: str | None) -> SegmentCursor | None:
    if cursor is None:
        return None
    segment, _, position = cursor.partition(".")
    decoded = decode_cursor(position) if re.fullmatch("[0-9]", segment) else None
    if decoded is None:
        raise _not_issued()
    return int(segment), decoded


class Page(BaseModel, Generic[T]):
    """One page of a list; `next_cursor` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


def split_page(
    rows: Sequence[R], limit: int, position: Callable[[R], Cursor]
) -> tuple[Sequence[R], str | None]:
    """The rows of this page, from a `paginate` query with the same `limit`, and the cursor of the next page
    (null on the last); `position` reads a row's key."""
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


ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


def _iso_date(value: object) -> object:
    """Dates in queries are ``YYYY-MM-DD`` (API.md); pydantic alone would also take a number as a Unix
    timestamp (`?from=0` was 1970-01-01)."""
    if isinstance(value, str) and not re.fullmatch(ISO_DATE, value):
        raise ValueError("a date is YYYY-MM-DD, e.g. 2026-11-22")
    return value


# A date in a query: ``Annotated[IsoDate | None, Query(...)]``.
IsoDate = Annotated[date, BeforeValidator(_iso_date)]


Rfc3339Query = Annotated[
    AwareDatetime | None,
    BeforeValidator(_rfc3339),
    Query(
        description="RFC 3339 with an offset", json_schema_extra={"format": "date-time", "pattern": RFC3339}
    ),
]
