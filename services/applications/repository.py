"""Every query of the applications domain."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, cast

from sqlalchemy import (
    CursorResult,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from services.applications.models import (
    OPEN_STATUSES,
    Application,
    ApplicationDocument,
    CertificateSequence,
    Document,
    Enterprise,
    Objection,
    Recognition,
    ReviewQueueCount,
    ReviewTask,
    Transition,
)
from services.pagination import Cursor, paginate
from services.vocabulary import DRAFT, region_prefix


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


def renewing() -> Any:
    """The recognition (``Recognition.id``) has a re-review under way: filed in its window, undecided."""
    return exists().where(Application.re_review_of == Recognition.id, Application.status.in_(OPEN_STATUSES))


def held_at(at: datetime) -> Any:
    """The recognition holds at `at`: active, and within its validity - or past it with its re-review
    undecided (the title holds until the decision)."""
    return and_(Recognition.status == "active", or_(Recognition.valid_until > at, renewing()))


async def re_review_pending(session: AsyncSession, recognition_id: uuid.UUID) -> bool:
    stmt = select(renewing()).where(Recognition.id == recognition_id)
    return bool((await session.execute(stmt)).scalar())


async def active_recognition(
    session: AsyncSession, *, uscc: str, tier: str, at: datetime
) -> Recognition | None:
    stmt = select(Recognition).where(Recognition.uscc == uscc, Recognition.tier == tier, held_at(at)).limit(1)
    return (await session.execute(stmt)).scalar_one_or_none()


async def documents_for(session: AsyncSession, *, uscc: str, ids: Sequence[uuid.UUID]) -> list[Document]:
    if not ids:
        return []
    stmt = select(Document).where(Document.uscc == uscc, Document.id.in_(ids))
    return list((await session.execute(stmt)).scalars())


async def application_documents(session: AsyncSession, application_id: uuid.UUID) -> list[Document]:
    """The documents an application cites, in the order it cited them."""
    stmt = (
        select(Document)
        .join(ApplicationDocument, ApplicationDocument.document_id == Document.id)
        .where(ApplicationDocument.application_id == application_id)
        .order_by(ApplicationDocument.cited_at, Document.uploaded_at, Document.id)
    )
    return list((await session.execute(stmt)).scalars())


async def cite_documents(
    session: AsyncSession,
    application_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID],
    *,
    cited_by: str,
    at: datetime,
    source: str = "application",
) -> set[uuid.UUID]:
    """Link the documents to the application as its evidence (``source``: with the application, or with a
    supplement); returns those it did not cite already."""
    if not document_ids:
        return set()
    stmt = (
        insert(ApplicationDocument)
        .values(
            [
                {
                    "application_id": application_id,
                    "document_id": document_id,
                    "source": source,
                    "cited_by": cited_by,
                    "cited_at": at,
                }
                for document_id in dict.fromkeys(document_ids)
            ]
        )
        .on_conflict_do_nothing(index_elements=["application_id", "document_id"])
        .returning(ApplicationDocument.document_id)
    )
    return set((await session.execute(stmt)).scalars())


async def get_document(session: AsyncSession, document_id: uuid.UUID) -> Document | None:
    return await session.get(Document, document_id)


def _cited_in_region(region: str) -> Any:
    """The document (``Document.id``) is cited by a submitted application in `region` (the region rule): a
    draft's evidence is its enterprise's alone until the draft is submitted."""
    return exists().where(
        ApplicationDocument.document_id == Document.id,
        Application.id == ApplicationDocument.application_id,
        Application.status != DRAFT,
        in_region(Application.region_code, region),
    )


async def document_cited_in_region(session: AsyncSession, document_id: uuid.UUID, region: str) -> bool:
    stmt = select(_cited_in_region(region)).where(Document.id == document_id)
    return bool((await session.execute(stmt)).scalar())


async def list_documents(
    session: AsyncSession,
    *,
    uscc: str | None,
    kind: str | None,
    application_id: uuid.UUID | None,
    region: str | None,
    cursor: Cursor | None,
    limit: int,
) -> list[Document]:
    """Oldest first, paged (services/pagination.py, by upload time): of enterprise `uscc`, of `kind`, cited by
    application `application_id`, cited by an application in `region` - each if given."""
    stmt = select(Document)
    if uscc is not None:
        stmt = stmt.where(Document.uscc == uscc)
    if kind is not None:
        stmt = stmt.where(Document.kind == kind)
    if application_id is not None:
        stmt = stmt.join(ApplicationDocument, ApplicationDocument.document_id == Document.id).where(
            ApplicationDocument.application_id == application_id
        )
    if region is not None:
        stmt = stmt.where(_cited_in_region(region))
    stmt = paginate(
        stmt, key=(Document.uploaded_at, Document.id), cursor=cursor, limit=limit, newest_first=False
    )
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
    if not prefix:
        return true()  # the whole country
    return column == prefix if len(prefix) == 6 else column.like(f"{prefix}%")


async def list_applications(
    session: AsyncSession,
    *,
    region: str | None,
    filters: dict[str, Any],
    cursor: Cursor | None,
    limit: int,
    drafts: bool = True,
) -> list[Application]:
    """Oldest first, paged (services/pagination.py): in `region` if given, with the columns in `filters`
    equal to their values (None: any); without drafts unless `drafts`."""
    extra = [in_region(Application.region_code, region)] if region is not None else []
    if not drafts:
        extra.append(Application.status != DRAFT)
    return await _oldest_first(session, Application, filters, extra, cursor, limit)


async def transitions_for(session: AsyncSession, application_id: uuid.UUID) -> list[Transition]:
    stmt = select(Transition).where(Transition.application_id == application_id).order_by(Transition.id)
    return list((await session.execute(stmt)).scalars())


async def open_task_for(session: AsyncSession, application_id: uuid.UUID) -> ReviewTask | None:
    stmt = select(ReviewTask).where(ReviewTask.application_id == application_id, ReviewTask.status == "open")
    return (await session.execute(stmt)).scalar_one_or_none()


@dataclass(frozen=True, slots=True)
class QueueScope:
    """Whose queue: the open tasks of stage `level` in `region` (the region rule), and those escalated to one
    of `groups`."""

    level: str
    region: str
    groups: tuple[str, ...] = ()

    def condition(self) -> Any:
        return and_(ReviewTask.status == "open", self.covers(ReviewTask))

    def covers(self, rows: Any) -> Any:
        """The scope on rows with stage, region and escalation columns (tasks, their counts)."""
        mine = and_(rows.stage == self.level, in_region(rows.region_code, self.region))
        if self.groups:
            mine = or_(mine, rows.escalated_to.in_(self.groups))
        return mine


def overdue_at(now: datetime) -> Any:
    """A task is overdue once its SLA has passed (escalation flags it too)."""
    return or_(ReviewTask.overdue, ReviewTask.due_at <= now)


def unclaimed_at(now: datetime) -> Any:
    """Nobody holds the task: never claimed, released, or the claim lapsed."""
    return or_(ReviewTask.claimed_by.is_(None), ReviewTask.claim_expires_at <= now)


def held_by(holder: str, now: datetime) -> Any:
    return and_(ReviewTask.claimed_by == holder, ReviewTask.claim_expires_at > now)


def _queue_filters(filters: dict[str, Any], *, me: str, now: datetime) -> list[Any]:
    clauses = [
        getattr(ReviewTask, name) == filters[name]
        for name in ("program", "tier", "stage")
        if filters.get(name) is not None
    ]
    if filters.get("overdue") is not None:
        clauses.append(overdue_at(now) if filters["overdue"] else ~overdue_at(now))
    if filters.get("assignee") == "me":
        clauses.append(held_by(me, now))
    elif filters.get("assignee") == "none":
        clauses.append(unclaimed_at(now))
    if filters.get("q"):
        q: str = filters["q"]
        clauses.append(
            or_(
                ReviewTask.uscc.startswith(q.upper(), autoescape=True),
                func.lower(ReviewTask.enterprise_name).startswith(q.lower(), autoescape=True),
            )
        )
    return clauses


async def review_queue(
    session: AsyncSession,
    *,
    scope: QueueScope,
    filters: dict[str, Any],
    me: str,
    now: datetime,
    cursor: Cursor | None,
    limit: int,
) -> list[ReviewTask]:
    """The open tasks of the queue `scope` that pass `filters` (program, tier, stage, overdue, assignee -
    ``me``: held by `me`, ``none``: by nobody - and q, a USCC or enterprise name prefix), by due date,
    paged (services/pagination.py)."""
    stmt = select(ReviewTask).where(scope.condition(), *_queue_filters(filters, me=me, now=now))
    stmt = paginate(
        stmt, key=(ReviewTask.due_at, ReviewTask.id), cursor=cursor, limit=limit, newest_first=False
    )
    return list((await session.execute(stmt)).scalars())


class QueueGroup(NamedTuple):
    """How many tasks of a queue of one stage, tier and program are `kind`: ``open`` (all of them),
    ``overdue``, or held (an unlapsed claim) by ``me`` or by an ``other`` reviewer."""

    kind: str
    stage: str
    tier: str
    program: str
    tasks: int


async def queue_counts(
    session: AsyncSession, *, scope: QueueScope, me: str, now: datetime
) -> list[QueueGroup]:
    """The whole queue `scope` counted in one statement by stage, tier and program: its open and overdue
    tasks from the counts the database keeps (``ReviewQueueCount``), plus the tasks past due that no
    escalation has flagged yet (a moment's worth) and the claims that have not lapsed (a few), from the
    tasks themselves. Its cost follows those, not the size of the queue."""
    counted, tasks = ReviewQueueCount, ReviewTask
    facets = (counted.stage, counted.tier, counted.program)
    kept = [scope.covers(counted), counted.tasks > 0]
    by_task = (tasks.stage, tasks.tier, tasks.program)
    # Past due, not flagged: read through the index of such tasks alone (a materialized CTE, whose conditions
    # that index matches; the planner, which cannot know that flags follow due dates, would otherwise read
    # every past-due task of the region to find none).
    stages = tasks.stage == scope.level
    late = (
        select(tasks.stage, tasks.region_code, tasks.escalated_to, tasks.tier, tasks.program)
        .where(
            tasks.status == "open",
            ~tasks.overdue,
            tasks.due_at <= now,
            or_(stages, tasks.escalated_to.in_(scope.groups)) if scope.groups else stages,
        )
        .cte("late")
        .prefix_with("MATERIALIZED")
    )
    stmt = union_all(
        select(literal("open"), *facets, func.sum(counted.tasks)).where(*kept).group_by(*facets),
        select(literal("overdue"), *facets, func.sum(counted.tasks))
        .where(*kept, counted.overdue)
        .group_by(*facets),
        select(literal("overdue"), late.c.stage, late.c.tier, late.c.program, func.count())
        .where(scope.covers(late.c))
        .group_by(late.c.stage, late.c.tier, late.c.program),
        select(holder := case((tasks.claimed_by == me, "me"), else_="other"), *by_task, func.count())
        .where(scope.condition(), tasks.claimed_by.is_not(None), tasks.claim_expires_at > now)
        .group_by(holder, *by_task),
    )
    return [QueueGroup(*row) for row in (await session.execute(stmt)).all()]


# A queue's version: the changes counted on the rows of review_queue_counts it covers, a sum that grows with
# every change to one of its open tasks (the trigger review_tasks_count, in the transaction that makes it).
# Raw SQL ($1: stage, $2 and $3: the region's range of codes, $4: groups), so that the cache of queue pages
# (services/applications/queue_views.py) runs the very same query on connections of its own; the rows of
# the stage in the region (a range of the key), plus those escalated to a group and not among them.
_IN_REGION = "stage = $1 AND region_code >= $2 AND region_code < $3"
QUEUE_VERSION = (
    f"SELECT (SELECT coalesce(sum(changes), 0) FROM review_queue_counts WHERE {_IN_REGION}) + "
    "(SELECT coalesce(sum(changes), 0) FROM review_queue_counts "
    f"WHERE escalated_to = ANY($4::text[]) AND NOT ({_IN_REGION}))"
)


QueueVersionArgs = tuple[str, str, str, tuple[str, ...]]


def queue_version_args(scope: QueueScope) -> QueueVersionArgs:
    prefix = region_prefix(scope.region)  # "~" sorts after every digit (the database's collation is C)
    return scope.level, prefix, f"{prefix}~", scope.groups


async def queue_version(session: AsyncSession, *, scope: QueueScope) -> int:
    level, low, high, groups = queue_version_args(scope)
    connection = await session.connection()
    result = await connection.exec_driver_sql(QUEUE_VERSION, (level, low, high, list(groups)))
    return int(result.scalar_one())


async def queue_fresh_until(session: AsyncSession, *, scope: QueueScope, now: datetime) -> datetime | None:
    """Until when what the queue `scope` shows at `now` stays right by the clock alone: its next due date
    (a task turns overdue) or claim expiry (a claim lapses) after `now`; None if there is neither."""
    due = select(func.min(ReviewTask.due_at)).where(scope.condition(), ReviewTask.due_at > now)
    lapse = select(func.min(ReviewTask.claim_expires_at)).where(
        scope.condition(), ReviewTask.claimed_by.is_not(None), ReviewTask.claim_expires_at > now
    )
    times = (await session.execute(select(due.scalar_subquery(), lapse.scalar_subquery()))).one()
    return min((t for t in times if t is not None), default=None)


async def get_task(session: AsyncSession, task_id: uuid.UUID) -> ReviewTask | None:
    return await session.get(ReviewTask, task_id)


async def set_claim(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    holder: str | None,
    until: datetime | None,
    now: datetime,
    over: str | None,
) -> ReviewTask | None:
    """Claim the open task for `holder` until `until`, or release it (`holder` None), unless someone other
    than `over` holds it (an unlapsed claim; `over` None: whoever holds it). One conditional UPDATE, so of
    two reviewers claiming at once only one wins. The task as it now is, or None when refused."""
    stmt = (
        update(ReviewTask)
        .where(ReviewTask.id == task_id, ReviewTask.status == "open")
        .values(claimed_by=holder, claim_expires_at=until)
        .returning(ReviewTask)
        .execution_options(populate_existing=True)
    )
    if over is not None:
        stmt = stmt.where(or_(unclaimed_at(now), ReviewTask.claimed_by == over))
    return (await session.execute(stmt)).scalar_one_or_none()


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
) -> bool:
    """Close the application's open task, and with it any claim on it. A decision (`decided_by` set) closes
    it only if nobody else holds it (an unlapsed claim at `at`). Whether a task was closed."""
    stmt = (
        update(ReviewTask)
        .where(ReviewTask.application_id == application_id, ReviewTask.status == "open")
        .values(
            status=status,
            decision=decision,
            decided_by=decided_by,
            closed_at=at,
            claimed_by=None,
            claim_expires_at=None,
        )
    )
    if decided_by is not None:
        stmt = stmt.where(or_(unclaimed_at(at), ReviewTask.claimed_by == decided_by))
    result = cast(CursorResult[Any], await session.execute(stmt))
    return result.rowcount > 0


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


async def objections_of(session: AsyncSession, application_ids: Sequence[uuid.UUID]) -> list[Objection]:
    """The objections of several applications, oldest first: one query."""
    stmt = (
        select(Objection)
        .where(Objection.application_id.in_(application_ids))
        .order_by(Objection.filed_at, Objection.id)
    )
    return list((await session.execute(stmt)).scalars())


class NoticeFacts(NamedTuple):
    application_id: uuid.UUID
    enterprise_name: str
    notice_ends_at: datetime | None


async def notice_facts(session: AsyncSession, application_ids: Sequence[uuid.UUID]) -> list[NoticeFacts]:
    """The enterprise's name and the notice's end of several applications: one query."""
    stmt = (
        select(Application.id, Enterprise.name, Application.notice_ends_at)
        .join(Enterprise, Enterprise.uscc == Application.uscc)
        .where(Application.id.in_(application_ids))
    )
    return [NoticeFacts._make(row) for row in (await session.execute(stmt)).all()]


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


class RecognitionCount(NamedTuple):
    """How many recognitions of one tier were granted in one province (``500000``: Chongqing)."""

    tier: str
    province: str
    recognitions: int


async def recognition_counts(
    session: AsyncSession, *, filters: dict[str, Any], valid_on: datetime | None
) -> list[RecognitionCount]:
    """The recognitions ``list_recognitions`` lists with the same `filters`, counted in one statement by tier
    and by the province of the application each was granted on (its region code's first two digits +
    ``0000``). Each recognition reaches its application through the applications' primary key; a `uscc`
    filter walks ix_recognitions_uscc, a `certificate_no` its unique index. A few rows come back (tiers x
    provinces), never the recognitions themselves."""
    extra = [Recognition.valid_from <= valid_on, Recognition.valid_until > valid_on] if valid_on else []
    clauses = [getattr(Recognition, name) == value for name, value in filters.items() if value is not None]
    # An imported recognition has no application: its enterprise's region counts instead.
    region = func.coalesce(Application.region_code, Enterprise.region_code)
    province = func.substr(region, 1, 2).concat("0000")
    stmt = (
        select(Recognition.tier, province, func.count())
        .outerjoin(Application, Application.id == Recognition.application_id)
        .join(Enterprise, Enterprise.uscc == Recognition.uscc)
        .where(*clauses, *extra)
        .group_by(Recognition.tier, province)
        .order_by(Recognition.tier, province)
    )
    return [RecognitionCount(str(t), str(p), int(n)) for t, p, n in (await session.execute(stmt)).all()]


async def replace_draft_evidence(
    session: AsyncSession,
    *,
    application_id: uuid.UUID,
    document_ids: Sequence[uuid.UUID],
    cited_by: str,
    at: datetime,
) -> None:
    """A draft's evidence becomes exactly `document_ids` (those it no longer cites are let go)."""
    await session.execute(
        delete(ApplicationDocument).where(
            ApplicationDocument.application_id == application_id,
            ApplicationDocument.document_id.not_in(document_ids) if document_ids else true(),
        )
    )
    await cite_documents(session, application_id, document_ids, cited_by=cited_by, at=at)


async def delete_draft(session: AsyncSession, application_id: uuid.UUID) -> bool:
    """Delete a draft and its citations (a draft has no review, history or recognition); whether one was."""
    await session.execute(
        delete(ApplicationDocument).where(
            ApplicationDocument.application_id == application_id,
            exists().where(Application.id == application_id, Application.status == DRAFT),
        )
    )
    result = cast(
        CursorResult[Any],
        await session.execute(
            delete(Application).where(Application.id == application_id, Application.status == DRAFT)
        ),
    )
    return result.rowcount > 0


async def re_review_of(session: AsyncSession, recognition_id: uuid.UUID) -> Application | None:
    stmt = select(Application).where(Application.re_review_of == recognition_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def applications_without_workflow(
    session: AsyncSession, *, older_than: datetime, limit: int = 100
) -> list[Application]:
    """Submitted applications filed before `older_than` whose review is not known to run (never a draft:
    it has no review until it is submitted). Walks ix_applications_unstarted."""
    stmt = (
        select(Application)
        .where(
            Application.workflow_started.is_(False),
            Application.status != DRAFT,
            Application.created_at < older_than,
        )
        .order_by(Application.created_at)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def last_fraud_revocation(session: AsyncSession, uscc: str) -> Recognition | None:
    """The enterprise's most recent recognition revoked for fraud, in any program."""
    stmt = (
        select(Recognition)
        .where(Recognition.uscc == uscc, Recognition.revoked_for == "fraud")
        .order_by(Recognition.revoked_at.desc())
        .limit(1)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def titles_for_update(session: AsyncSession, uscc: str) -> list[Recognition]:
    """Every recognition of the enterprise (any program, tier or source), locked in id order and read afresh:
    what a revocation for fraud revokes, so two at once for one enterprise wait for each other, never
    deadlock, and neither revokes a title the other already did."""
    stmt = (
        select(Recognition)
        .where(Recognition.uscc == uscc)
        .order_by(Recognition.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars())


async def revoked_untold(session: AsyncSession, *, before: datetime, limit: int = 100) -> list[Recognition]:
    """Titles revoked before ``before`` whose workflows were not told (``stop_sent_at``), oldest first."""
    stmt = (
        select(Recognition)
        .where(
            Recognition.status == "revoked",
            Recognition.stop_sent_at.is_(None),
            Recognition.revoked_at < before,
        )
        .order_by(Recognition.revoked_at, Recognition.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars())


async def mark_stop_sent(session: AsyncSession, ids: Sequence[uuid.UUID], *, at: datetime) -> None:
    """The titles' workflows were told of their revocation (only the first telling is kept)."""
    await session.execute(
        update(Recognition)
        .where(Recognition.id.in_(ids), Recognition.stop_sent_at.is_(None))
        .values(stop_sent_at=at)
    )


async def revoked_together(session: AsyncSession, revoked: Recognition) -> list[Recognition]:
    """The enterprise's other recognitions revoked for fraud at the same moment as `revoked`: the titles its
    revocation for fraud revoked with it."""
    stmt = (
        select(Recognition)
        .where(
            Recognition.uscc == revoked.uscc,
            Recognition.id != revoked.id,
            Recognition.revoked_for == "fraud",
            Recognition.revoked_at == revoked.revoked_at,
        )
        .order_by(Recognition.id)
    )
    return list((await session.execute(stmt)).scalars())


async def current_tiers(session: AsyncSession, uscc: str, at: datetime) -> list[Recognition]:
    stmt = select(Recognition).where(Recognition.uscc == uscc, held_at(at)).order_by(Recognition.valid_from)
    return list((await session.execute(stmt)).scalars())


# --- what anyone may read: public verification and notices ------------------------------------------------


async def recognition_by_certificate(
    session: AsyncSession, certificate_no: str
) -> tuple[Recognition, str] | None:
    """The recognition holding certificate `certificate_no`, with its enterprise's name."""
    stmt = (
        select(Recognition, Enterprise.name)
        .join(Enterprise, Enterprise.uscc == Recognition.uscc)
        .where(Recognition.certificate_no == certificate_no)
    )
    row = (await session.execute(stmt)).first()
    return None if row is None else (row[0], row[1])


class OnNotice(NamedTuple):
    """An application on public notice, as much of it as the public list shows."""

    application_id: uuid.UUID
    uscc: str
    tier: str
    program: str
    notice_ends_at: datetime
    enterprise_name: str


async def on_notice(
    session: AsyncSession, *, tier: str | None, uscc: str | None, cursor: Cursor | None, limit: int
) -> list[OnNotice]:
    """The applications on public notice, the notice ending soonest first, paged (services/pagination.py, by
    notice end): of `tier`, of enterprise `uscc`, each if given. Walks ix_applications_on_notice."""
    ends = cast(QueryableAttribute[datetime], Application.notice_ends_at)  # never null in these rows
    stmt = (
        select(
            Application.id,
            Application.uscc,
            Application.tier,
            Application.program,
            Application.notice_ends_at,
            Enterprise.name,
        )
        .join(Enterprise, Enterprise.uscc == Application.uscc)
        .where(Application.status == "public_notice", Application.notice_ends_at.is_not(None))
    )
    if tier is not None:
        stmt = stmt.where(Application.tier == tier)
    if uscc is not None:
        stmt = stmt.where(Application.uscc == uscc)
    stmt = paginate(stmt, key=(ends, Application.id), cursor=cursor, limit=limit, newest_first=False)
    return [OnNotice._make(row) for row in (await session.execute(stmt)).all()]


# --- the worker's gauges (workflows/gauges.py): each a count over an index or a small table ----------------


async def count_by_status(session: AsyncSession) -> dict[str, int]:
    """Submitted applications by status (an index-only scan of ix_applications_status): drafts are their
    enterprises' own business, not the service's load."""
    rows = await session.execute(
        select(Application.status, func.count())
        .where(Application.status != DRAFT)
        .group_by(Application.status)
    )
    return {row[0]: row[1] for row in rows}


async def count_overdue_tasks(session: AsyncSession, now: datetime) -> int:
    """Open review tasks past their SLA: those escalation flagged (the queue counts' rows) and those whose due
    date passed a moment ago, before their timer fired (ix_review_tasks_open_unflagged_due)."""
    flagged = select(func.coalesce(func.sum(ReviewQueueCount.tasks), 0)).where(ReviewQueueCount.overdue)
    unflagged = (
        select(func.count())
        .select_from(ReviewTask)
        .where(ReviewTask.status == "open", ~ReviewTask.overdue, ReviewTask.due_at <= now)
    )
    return int(await session.scalar(flagged) or 0) + int(await session.scalar(unflagged) or 0)
