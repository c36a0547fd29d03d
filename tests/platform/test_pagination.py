"""The one keyset pagination helper: both directions page through every row once, in order, ties on the
timestamp broken by id, and the last page says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications.models import Application
from services.pagination import decode_cursor, paginate, split_page
from tests.support.factories import random_uscc, seed_application


@pytest.mark.parametrize("newest_first", [False, True])
async def test_pages_cover_every_row_once_in_order(session: AsyncSession, newest_first: bool) -> None:
    uscc = random_uscc("500103")
    start = datetime(2020, 1, 1, tzinfo=UTC)
    # Two pairs share a timestamp, so the id decides their order and a cursor lands between them.
    offsets = [0, 1, 1, 2, 3, 3, 4]
    seeded = [
        await seed_application(session, uscc=uscc, batch=f"b{i}", created_at=start + timedelta(seconds=s))
        for i, s in enumerate(offsets)
    ]
    expected = sorted(((a.created_at, a.id) for a in seeded), reverse=newest_first)

    seen: list[tuple[datetime, object]] = []
    cursor: str | None = None
    for _ in range(len(seeded)):
        stmt = paginate(
            select(Application).where(Application.uscc == uscc),
            key=(Application.created_at, Application.id),
            cursor=decode_cursor(cursor),
            limit=2,
            newest_first=newest_first,
        )
        rows = list(await session.scalars(stmt))
        page, cursor = split_page(rows, 2, lambda a: (a.created_at, a.id))
        assert len(page) <= 2
        seen += [(a.created_at, a.id) for a in page]
        if cursor is None:
            break
    assert seen == expected
    assert cursor is None
