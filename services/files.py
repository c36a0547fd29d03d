"""A stored file over HTTP: conditional GET (``If-None-Match`` -> 304, RFC 9110 §13.1.2), one byte range
(``Range`` -> 206 with ``Content-Range``, §14; ``If-Range``, §13.1.5; an unsatisfiable range -> a 416
problem) and ``Content-Disposition`` with an RFC 8187 ``filename*`` for names beyond ASCII (RFC 6266).

The content is streamed from the store (``services.storage``: a folder or an S3 bucket) in chunks of
``storage.CHUNK`` bytes, only the bytes the answer sends: a download holds about one chunk in memory whatever
the file's size. (``make bench``: ``document_download_mib_s``, ``document_download_rss_growth_mib``.)
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from fastapi.responses import Response, StreamingResponse

from services.errors import PROBLEM_JSON, GiantflowError
from services.storage import Storage

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$", re.IGNORECASE)


class RangeNotSatisfiable(GiantflowError):
    status, slug, title = 416, "range-not-satisfiable", "Range not satisfiable"


def etag_of(digest: str) -> str:
    """A strong entity tag from the content's digest: the same bytes, the same tag."""
    return f'"{digest}"'


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """``attachment; filename="..."; filename*=UTF-8''...``: an ASCII fallback (anything else, quotes,
    backslashes and controls as ``_``) for old clients, the exact name percent-encoded for the others."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename) or "download"
    if fallback == filename:
        return f'{disposition}; filename="{filename}"'
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _tags(header: str) -> list[str]:
    """The entity tags of an If-None-Match or If-Range value (``W/`` kept), or ``["*"]``."""
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def _matches_weakly(header: str, etag: str) -> bool:
    tags = _tags(header)
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """The one range a ``Range`` value asks for, as (first, last) byte positions within `size` bytes; None
    for a value the answer ignores (another unit, several ranges, bad syntax: the whole file is sent).
    Raises RangeNotSatisfiable when the range starts beyond the end (or asks for the last 0 bytes)."""
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        if last and int(last) < start:
            return None
        if start >= size:
            raise _unsatisfiable(size)
        return start, min(int(last), size - 1) if last else size - 1
    if not last:
        return None
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise _unsatisfiable(size)
    return max(0, size - suffix), size - 1


def _unsatisfiable(size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"The range is outside the file's {size} bytes.", headers={"Content-Range": f"bytes */{size}"}
    )


async def serve_file(
    storage: Storage,
    digest: str,
    *,
    size: int,
    media_type: str,
    filename: str,
    range_header: str | None,
    if_none_match: str | None,
    if_range: str | None,
    disposition: str = "attachment",
) -> Response:
    """The answer to a GET of the content stored under `digest` (`size` bytes recorded) given the request's
    conditional and range headers, to be saved (`attachment`) or shown (`inline`). Content missing from the
    store or of another size is the server's fault: an OSError before anything is sent (a logged 500), never
    a truncated answer; a store out of reach is a 503 (``ServiceUnavailable``)."""
    stored = await storage.size_of(digest)
    if stored != size:
        raise OSError(f"the stored content {digest} is {stored} bytes, not the {size} recorded")
    etag = etag_of(digest)
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if if_none_match is not None and _matches_weakly(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    wanted = None
    if range_header is not None and (if_range is None or if_range.strip() == etag):
        wanted = byte_range(range_header, size)
    start, last = wanted if wanted is not None else (0, size - 1)
    length = last - start + 1
    headers.update(
        {"Content-Length": str(length), "Content-Disposition": content_disposition(filename, disposition)}
    )
    if wanted is not None:
        headers["Content-Range"] = f"bytes {start}-{last}/{size}"
    return StreamingResponse(
        storage.open_range(digest, start, length),
        status_code=206 if wanted is not None else 200,
        headers=headers,
        media_type=media_type,
    )


def file_responses(media_types: list[str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route answering with ``serve_file`` (its 200, 206, 304 and 416)."""
    binary = {media: {"schema": {"type": "string", "format": "binary"}} for media in media_types}
    common = {
        "ETag": {"description": "the content's SHA-256 in quotes", "schema": {"type": "string"}},
        "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
        "Content-Disposition": {
            "description": "attachment, with filename* (RFC 8187) for names beyond ASCII",
            "schema": {"type": "string"},
        },
    }
    return {
        200: {"description": "The whole file", "content": binary, "headers": common},
        206: {
            "description": "The one byte range asked for (`Range: bytes=first-last`)",
            "content": binary,
            "headers": {
                **common,
                "Content-Range": {"description": "bytes first-last/size", "schema": {"type": "string"}},
            },
        },
        304: {"description": "Not modified: `If-None-Match` names the content's ETag"},
        416: {
            "description": "Range not satisfiable: it starts beyond the end of the file",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
            "headers": {"Content-Range": {"description": "bytes */size", "schema": {"type": "string"}}},
        },
    }
