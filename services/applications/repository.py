"""Every query of the applications domain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications.models import (
    Application,
    CertificateSequence,
    Document,
    Enterprise,
    Objection,
    Recognition,
    ReviewTask,
    Transition,
)
from services.pagination import Cursor, paginate
from services.vocabulary import region_prefix


async def insert_enterprise(session: AsyncSession, values: dict[str, Any]) -> bool:
    result = await session.execute(
        insert(Enterprise)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["uscc"])
        .returning(Enterprise.uscc)
    )
    return result.scalar_one_or_none() is not None


async def get_enterprise(session: AsyncSession, uscc: str) -> Enterprise | None:
    return await session.get(Enterprise, uscc)


async def get_application(
    session: AsyncSession, application_id: uuid.UUID, *, for_update: bool = False
) -> Application | None:
    stmt = select(Application).where(Application.id == application_id)
    if for_update:
        stmt = stmt.with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def open_application_exists(
    session: AsyncSession, *, uscc: str, program: str, tier: str, batch: str
) -> bool:
    stmt = (
        select(func.count())
        .select_from(Application)
        .where(
            Application.uscc == uscc,
            Application.program == program,
            Application.tier == tier,
            Application.batch == batch,
            Application.status.in_(("screening", "in_review", "returned", "public_notice")),
        )
    )
    return bool((await session.execute(stmt)).scalar_one())


async def active_recognition(
    session: AsyncSession, *, uscc: str, tier: str, at: datetime
) -> Recognition | None:
    stmt = (
        select(Recognition)
        .where(
            Recognition.uscc == uscc,
            Recognition.tier == tier,
            Recognition.status == "active",
            Recognition.valid_until > at,
        )
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def documents_for(session: AsyncSession, *, uscc: str, ids: Sequence[uuid.UUID]) -> list[Document]:
    if not ids:
        return []
    stmt = select(Document).where(Document.uscc == uscc, Document.id.in_(ids))
    return list((await session.execute(stmt)).scalars())


async def application_documents(session: AsyncSession, application_id: uuid.UUID) -> list[Document]:
    stmt = select(Document).where(Document.application_id == application_id).order_by(Document.uploaded_at)
    return list((await session.execute(stmt)).scalars())


_M = TypeVar("_M", Application, Recognition)


async def _oldest_first(
    session: AsyncSession,
    model: type[_M],
    filters: dict[str, Any],
    extra: list[Any],
    cursor: Cursor | None,
    limit: int,
) -> list[_M]:
    """A page of `model`'s rows, oldest first (services/pagination.py), whose columns equal the values in
    `filters` (None: any) and which meet the `extra` conditions."""
    clauses = [getattr(model, name) == value for name, value in filters.items() if value is not None]
    stmt = paginate(
        select(model).where(*clauses, *extra),
        key=(model.created_at, model.id),
        cursor=cursor,
        limit=limit,
        newest_first=False,
    )
    return list((await session.execute(stmt)).scalars())


def in_region(column: Any, region: str) -> Any:
    """The region rule (services.vocabulary.region_prefix) as a condition on a division-code column."""
    prefix = region_prefix(region)
    return column == prefix if len(prefix) == 6 else column.like(f"{prefix}%")


async def list_applications(
    session: AsyncSession,
    *,
    region: str | None,
    filters: dict[str, Any],
    cursor: Cursor | None,
    limit: int,
) -> list[Application]:
    """Oldest first, paged (services/pagination.py): in `region` if given, with the columns in `filters`
    equal to their values (None: any)."""
    extra = [in_region(Application.region_code, region)] if region is not None else []
    return await _oldest_first(session, Application, filters, extra, cursor, limit)


async def transitions_for(session: AsyncSession, application_id: uuid.UUID) -> list[Transition]:
    stmt = select(Transition).where(Transition.application_id == application_id).order_by(Transition.id)
    return list((await session.execute(stmt)).scalars())


async def open_task_for(session: AsyncSession, application_id: uuid.UUID) -> ReviewTask | None:
    stmt = select(ReviewTask).where(ReviewTask.application_id == application_id, ReviewTask.status == "open")
    return (await session.execute(stmt)).scalar_one_or_none()


async def review_queue(
    session: AsyncSession,
    *,
    stage: str,
    region: str,
    cursor: Cursor | None,
    limit: int,
) -> list[tuple[ReviewTask, Application]]:
    """The open tasks of `stage` in `region`, oldest first, paged (services/pagination.py)."""
    stmt = (
        select(ReviewTask, Application)
        .join(Application, Application.id == ReviewTask.application_id)
        .where(
            ReviewTask.status == "open", ReviewTask.stage == stage, in_region(ReviewTask.region_code, region)
        )
    )
    stmt = paginate(
        stmt, key=(ReviewTask.created_at, ReviewTask.id), cursor=cursor, limit=limit, newest_first=False
    )
    rows = (await session.execute(stmt)).all()
    return [(row[0], row[1]) for row in rows]


async def transition_exists(session: AsyncSession, event_key: str) -> bool:
    stmt = select(func.count()).select_from(Transition).where(Transition.event_key == event_key)
    return bool((await session.execute(stmt)).scalar_one())


async def close_open_task(
    session: AsyncSession,
    application_id: uuid.UUID,
    *,
    status: str,
    decision: str | None,
    decided_by: str | None,
    at: datetime,
) -> None:
    await session.execute(
        update(ReviewTask)
        .where(ReviewTask.application_id == application_id, ReviewTask.status == "open")
        .values(status=status, decision=decision, decided_by=decided_by, closed_at=at)
    )


async def escalate_open_task(session: AsyncSession, application_id: uuid.UUID, *, escalated_to: str) -> None:
    await session.execute(
        update(ReviewTask)
        .where(ReviewTask.application_id == application_id, ReviewTask.status == "open")
        .values(overdue=True, escalated_to=escalated_to)
    )


async def get_objection(session: AsyncSession, objection_id: uuid.UUID) -> Objection | None:
    return await session.get(Objection, objection_id)


async def objections_for(session: AsyncSession, application_id: uuid.UUID) -> list[Objection]:
    stmt = select(Objection).where(Objection.application_id == application_id).order_by(Objection.filed_at)
    return list((await session.execute(stmt)).scalars())


async def next_certificate_number(session: AsyncSession, *, program: str, year: int, tier: str) -> int:
    stmt = (
        insert(CertificateSequence)
        .values(program=program, year=year, tier=tier, last=1)
        .on_conflict_do_update(
            index_elements=["program", "year", "tier"], set_={"last": CertificateSequence.last + 1}
        )
        .returning(CertificateSequence.last)
    )
    return int((await session.execute(stmt)).scalar_one())


async def recognition_for_application(session: AsyncSession, application_id: uuid.UUID) -> Recognition | None:
    stmt = select(Recognition).where(Recognition.application_id == application_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_recognition(session: AsyncSession, recognition_id: uuid.UUID) -> Recognition | None:
    return await session.get(Recognition, recognition_id)


async def list_recognitions(
    session: AsyncSession,
    *,
    filters: dict[str, Any],
    valid_on: datetime | None,
    cursor: Cursor | None,
    limit: int,
) -> list[Recognition]:
    """Oldest first, paged (services/pagination.py): valid at `valid_on` if given, with the columns in
    `filters` equal to their values (None: any)."""
    extra = [Recognition.valid_from <= valid_on, Recognition.valid_until > valid_on] if valid_on else []
    return await _oldest_first(session, Recognition, filters, extra, cursor, limit)


async def re_review_of(session: AsyncSession, recognition_id: uuid.UUID) -> Application | None:
    stmt = select(Application).where(Application.re_review_of == recognition_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def applications_without_workflow(
    session: AsyncSession, *, older_than: datetime, limit: int = 100
) -> list[Application]:
    stmt = (
        select(Application)
        .where(Application.workflow_started.is_(False), Application.created_at < older_than)
        .order_by(Application.created_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def current_tiers(session: AsyncSession, uscc: str, at: datetime) -> list[Recognition]:
    stmt = (
        select(Recognition)
        .where(Recognition.uscc == uscc, Recognition.status == "active", Recognition.valid_until > at)
        .order_by(Recognition.valid_from)
    )
    return list((await session.execute(stmt)).scalars())
