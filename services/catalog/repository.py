"""Every query of program versions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.catalog.models import ProgramVersion


async def lock_program(session: AsyncSession, key: str) -> None:
    """Serialise the writers of one program's versions until the transaction ends (two admins, or two
    processes seeding at once, never both take the same number)."""
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtext('program-version:' || :key))"), {"key": key}
    )


async def latest(session: AsyncSession, key: str) -> ProgramVersion | None:
    stmt = (
        select(ProgramVersion)
        .where(ProgramVersion.program == key)
        .order_by(ProgramVersion.version.desc())
        .limit(1)
    )
    return (await session.scalars(stmt)).first()


async def get(session: AsyncSession, key: str, version: int) -> ProgramVersion | None:
    stmt = select(ProgramVersion).where(ProgramVersion.program == key, ProgramVersion.version == version)
    return (await session.scalars(stmt)).first()


async def history(session: AsyncSession, key: str) -> Sequence[ProgramVersion]:
    stmt = select(ProgramVersion).where(ProgramVersion.program == key).order_by(ProgramVersion.version.desc())
    return (await session.scalars(stmt)).all()


async def add(
    session: AsyncSession,
    *,
    key: str,
    version: int,
    document: dict[str, Any],
    source: str,
    created_by: str,
    note: str | None = None,
) -> ProgramVersion:
    row = ProgramVersion(
        program=key, version=version, document=document, source=source, created_by=created_by, note=note
    )
    session.add(row)
    await session.flush()
    return row


async def counter(session: AsyncSession) -> tuple[int, int]:
    """(how many versions, the highest id): moves with every version committed, whatever the order."""
    count, top = (await session.execute(select(func.count(), func.max(ProgramVersion.id)))).one()
    return int(count), int(top or 0)


async def every_version(session: AsyncSession) -> Sequence[ProgramVersion]:
    stmt = select(ProgramVersion).order_by(ProgramVersion.program, ProgramVersion.version)
    return (await session.scalars(stmt)).all()
