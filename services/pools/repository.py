"""Every query of the pools domain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.pagination import Cursor, paginate
from services.pools.models import PoolBar, PoolImport, PoolImportError, PoolMember
from services.pools.rules import Member, Refusal
from services.vocabulary import region_prefix

UNFINISHED = ("queued", "running")
VALUES = ("name", "region_code", "industry", "tier_aimed", "notes")


async def add_import(session: AsyncSession, job: PoolImport) -> PoolImport:
    session.add(job)
    await session.flush()
    return job


async def get_import(session: AsyncSession, import_id: uuid.UUID) -> PoolImport | None:
    return await session.get(PoolImport, import_id)


async def claim(
    session: AsyncSession, import_id: uuid.UUID, *, owner: str, lease: timedelta, max_attempts: int
) -> PoolImport | None:
    """Take the job's lease if it is unfinished and the lease is ``owner``'s or has run out (one conditional
    UPDATE: two processes never hold it together); None when another holds it or it is done."""
    stmt = (
        update(PoolImport)
        .where(
            PoolImport.id == import_id,
            PoolImport.status.in_(UNFINISHED),
            PoolImport.attempts < max_attempts,
            or_(
                PoolImport.lease_owner == owner,
                PoolImport.lease_until.is_(None),
                PoolImport.lease_until < func.now(),
            ),
        )
        .values(
            lease_owner=owner,
            lease_until=func.now() + lease,
            status="running",
            attempts=PoolImport.attempts + 1,
        )
        .returning(PoolImport)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()


async def lock_for_chunk(session: AsyncSession, import_id: uuid.UUID) -> PoolImport | None:
    stmt = (
        select(PoolImport)
        .where(PoolImport.id == import_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one_or_none()


async def job_rows(session: AsyncSession, import_id: uuid.UUID) -> list[Any] | None:
    rows: list[Any] | None = await session.scalar(select(PoolImport.rows).where(PoolImport.id == import_id))
    return rows


async def abandoned(session: AsyncSession, *, limit: int) -> Sequence[uuid.UUID]:
    """Unfinished jobs whose lease has run out (the process running them died), oldest first."""
    stmt = (
        select(PoolImport.id)
        .where(
            PoolImport.status.in_(UNFINISHED),
            or_(PoolImport.lease_until.is_(None), PoolImport.lease_until < func.now()),
        )
        .order_by(PoolImport.created_at)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


# One statement of fixed shape for any number of rows (arrays, unnested): compiled and prepared once, where a
# multi-row VALUES is compiled anew for each chunk (measured: most of an import's time went there).
UPSERT = text(
    """
    INSERT INTO pool_members (id, program, uscc, name, region_code, industry, tier_aimed, notes, import_id)
    SELECT gen_random_uuid(), :program, m.uscc, m.name, m.region_code, m.industry, m.tier_aimed, m.notes,
           CAST(:import_id AS uuid)
    FROM unnest(CAST(:uscc AS varchar[]), CAST(:name AS varchar[]), CAST(:region_code AS varchar[]),
                CAST(:industry AS varchar[]), CAST(:tier_aimed AS varchar[]), CAST(:notes AS varchar[]))
         AS m(uscc, name, region_code, industry, tier_aimed, notes)
    ON CONFLICT (program, uscc) DO UPDATE SET
        name = excluded.name, region_code = excluded.region_code, industry = excluded.industry,
        tier_aimed = excluded.tier_aimed, notes = excluded.notes, import_id = excluded.import_id,
        version = pool_members.version + 1, updated_at = now()
    WHERE (pool_members.name, pool_members.region_code, pool_members.industry, pool_members.tier_aimed,
           pool_members.notes)
          IS DISTINCT FROM (excluded.name, excluded.region_code, excluded.industry, excluded.tier_aimed,
                            excluded.notes)
    RETURNING xmax = 0
    """
)


async def upsert_members(
    session: AsyncSession, *, program: str, import_id: uuid.UUID, members: Sequence[Member]
) -> tuple[int, int]:
    """Insert or update the members by (program, uscc); a row equal to the stored one is not touched (no
    version, no updated_at). Returns (created, updated)."""
    if not members:
        return 0, 0
    params: dict[str, Any] = {"program": program, "import_id": import_id}
    params.update({column: [getattr(m, column) for m in members] for column in ("uscc", *VALUES)})
    inserted = (await session.scalars(UPSERT, params)).all()
    created = sum(1 for flag in inserted if flag)
    return created, len(inserted) - created


async def add_refusals(session: AsyncSession, import_id: uuid.UUID, refusals: Sequence[Refusal]) -> None:
    if refusals:
        await session.execute(
            insert(PoolImportError),
            [
                {
                    "import_id": import_id,
                    "line": r.line,
                    "field": r.field,
                    "reason": r.reason,
                    "value": r.value,
                }
                for r in refusals
            ],
        )


async def refusals(
    session: AsyncSession, import_id: uuid.UUID, *, limit: int | None
) -> Sequence[PoolImportError]:
    stmt = (
        select(PoolImportError)
        .where(PoolImportError.import_id == import_id)
        .order_by(PoolImportError.line, PoolImportError.id)
        .limit(limit)
    )
    return (await session.scalars(stmt)).all()


async def stream_refusals(session: AsyncSession, import_id: uuid.UUID) -> AsyncIterator[PoolImportError]:
    stmt = (
        select(PoolImportError)
        .where(PoolImportError.import_id == import_id)
        .order_by(PoolImportError.line, PoolImportError.id)
        .execution_options(yield_per=1000)
    )
    async for row in await session.stream_scalars(stmt):
        yield row


async def count_refusals(session: AsyncSession, import_id: uuid.UUID) -> int:
    stmt = select(func.count()).select_from(PoolImportError).where(PoolImportError.import_id == import_id)
    return int(await session.scalar(stmt) or 0)


async def list_members(
    session: AsyncSession,
    *,
    program: str,
    scope: str | None,
    region: str | None,
    tier: str | None,
    q: str | None,
    cursor: Cursor | None,
    limit: int,
) -> Sequence[PoolMember]:
    """A page of a program's pool, oldest first; ``scope`` and ``region`` are region claims (a code ending
    in 0000 covers its province, 00 its city; 000000 everything)."""
    stmt = select(PoolMember).where(PoolMember.program == program)
    for claim in (scope, region):
        if claim is not None:
            stmt = stmt.where(PoolMember.region_code.startswith(region_prefix(claim), autoescape=True))
    if tier is not None:
        stmt = stmt.where(PoolMember.tier_aimed == tier)
    if q:
        stmt = stmt.where(
            or_(
                PoolMember.uscc.startswith(q.upper(), autoescape=True),
                PoolMember.name.icontains(q, autoescape=True),
            )
        )
    stmt = paginate(
        stmt, key=(PoolMember.created_at, PoolMember.id), cursor=cursor, limit=limit, newest_first=False
    )
    return (await session.scalars(stmt)).all()


async def memberships(session: AsyncSession, uscc: str, *, lock: bool = False) -> Sequence[PoolMember]:
    """The enterprise's memberships; ``lock``: FOR SHARE, so that a bar being written waits for the caller's
    transaction, or the caller for the bar (``bar``)."""
    stmt = (
        select(PoolMember).where(PoolMember.uscc == uscc).order_by(PoolMember.created_at, PoolMember.program)
    )
    if lock:
        stmt = stmt.with_for_update(read=True)
    return (await session.scalars(stmt)).all()


async def bar(
    session: AsyncSession, *, uscc: str, since: datetime, reason: str, recognition_id: uuid.UUID
) -> None:
    """Bar the enterprise from its pools' benefits from ``since`` (a later bar moves an earlier one, never
    back). Its memberships are locked first: a bridge loan being qualified by one (``memberships(lock=True)``)
    commits before the bar, or reads it."""
    await session.execute(select(PoolMember.id).where(PoolMember.uscc == uscc).with_for_update())
    stmt = insert(PoolBar).values(uscc=uscc, since=since, reason=reason, recognition_id=recognition_id)
    stmt = stmt.on_conflict_do_update(
        index_elements=[PoolBar.uscc],
        set_={"since": since, "reason": reason, "recognition_id": recognition_id},
        where=PoolBar.since < since,
    )
    await session.execute(stmt)


async def bar_of(session: AsyncSession, uscc: str) -> PoolBar | None:
    return await session.get(PoolBar, uscc, populate_existing=True)


async def barred_by(session: AsyncSession, recognition_id: uuid.UUID) -> PoolBar | None:
    """The bar the revocation of ``recognition_id`` wrote, if it is still the enterprise's."""
    return await session.scalar(select(PoolBar).where(PoolBar.recognition_id == recognition_id))
