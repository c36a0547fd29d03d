"""Rules of the applications domain. Functions take the session first and the rest keyword-only; they
never commit (the request, or the activity attempt, owns the transaction)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import repository as repo
from services.applications.models import (
    Application,
    Document,
    Enterprise,
    Objection,
    Recognition,
    ReviewTask,
    Transition,
)
from services.applications.schemas import (
    ApplicationCreate,
    ApplicationSummary,
    EnterpriseCreate,
    ListFilters,
    RecognitionRead,
    ReviewTaskRead,
)
from services.applications.screening import screen
from services.auth import CurrentUser, Role
from services.contracts import (
    Actor,
    EscalationInput,
    ObjectionUpdate,
    RecognitionChange,
    RecognitionOutcome,
    RecognizeInput,
    ReReviewInput,
    ReReviewOutcome,
    ReviewDurations,
    ReviewInput,
    ScreenAndEnterInput,
    ScreenOutcome,
    TransitionInput,
)
from services.errors import Conflict, FieldError, Forbidden, NotFound, Unprocessable
from services.pagination import Page, decode_cursor, split_page
from services.programs import Program
from services.vocabulary import region_prefix

ALLOWED_DOCUMENT_TYPES = {"application/pdf", "image/png", "image/jpeg"}


def actor_of(user: CurrentUser) -> Actor:
    return Actor(sub=user.sub, role=user.role.value, uscc=user.uscc, level=user.level, region=user.region)


def review_input(application: Application, program: Program) -> ReviewInput:
    tier = program.tiers[application.tier]  # type: ignore[index]
    d = program.durations
    return ReviewInput(
        application_id=str(application.id),
        uscc=application.uscc,
        program=application.program,
        tier=application.tier,
        region_code=application.region_code,
        stages=list(tier.review_levels),
        durations=ReviewDurations(
            stage_sla=d.stage_sla.timedelta.total_seconds(),
            supplement_deadline=d.supplement_deadline.timedelta.total_seconds(),
            notice_period=d.notice_period.timedelta.total_seconds(),
        ),
        escalation_group=program.escalation_group,
    )


# --- enterprises -------------------------------------------------------------------------------------------


async def register_enterprise(
    session: AsyncSession, *, user: CurrentUser, data: EnterpriseCreate
) -> Enterprise:
    if user.role is Role.enterprise and user.uscc != data.uscc:
        raise Forbidden("An enterprise token may only register its own USCC.")
    created = await repo.insert_enterprise(session, {**data.model_dump(), "registered_by": user.sub})
    if not created:
        raise Conflict(f"An enterprise with USCC {data.uscc} is already registered.")
    enterprise = await repo.get_enterprise(session, data.uscc)
    assert enterprise is not None
    return enterprise


async def get_enterprise(session: AsyncSession, *, user: CurrentUser, uscc: str) -> Enterprise:
    enterprise = await repo.get_enterprise(session, uscc)
    if enterprise is None or not can_see_enterprise(user, enterprise.uscc, enterprise.region_code):
        raise NotFound(f"No enterprise {uscc}.")
    return enterprise


def can_see_enterprise(user: CurrentUser, uscc: str, region_code: str) -> bool:
    if user.role is Role.enterprise:
        return user.uscc == uscc
    if user.role is Role.reviewer:
        return user.covers_region(region_code)
    return True


# --- documents ----------------------------------------------------------------------------------------------


async def store_document(
    session: AsyncSession,
    *,
    user: CurrentUser,
    data_dir: Path,
    kind: str,
    filename: str,
    content_type: str,
    content: bytes,
) -> Document:
    if user.role is not Role.enterprise or user.uscc is None:
        raise Forbidden("Only an enterprise uploads evidence.")
    if await repo.get_enterprise(session, user.uscc) is None:
        raise Conflict("Register the enterprise before uploading evidence.")
    if content_type not in ALLOWED_DOCUMENT_TYPES:
        raise Unprocessable(
            f"Evidence must be one of {', '.join(sorted(ALLOWED_DOCUMENT_TYPES))}.",
            errors=[FieldError(field="file", message=f"type {content_type} is not allowed")],
        )
    if not content:
        raise Unprocessable("The file is empty.", errors=[FieldError(field="file", message="empty")])
    digest = hashlib.sha256(content).hexdigest()
    folder = data_dir / "documents" / digest[:2]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / digest
    if not target.exists():
        tmp = folder / f".{digest}.{uuid.uuid4().hex}"
        tmp.write_bytes(content)
        tmp.replace(target)
    document = Document(
        uscc=user.uscc,
        kind=kind,
        filename=filename[:255],
        content_type=content_type,
        size=len(content),
        sha256=digest,
        uploaded_by=user.sub,
    )
    session.add(document)
    await session.flush()
    return document


async def evidence_documents(session: AsyncSession, *, uscc: str, ids: Sequence[uuid.UUID]) -> list[Document]:
    """The documents of enterprise `uscc` that `ids` cite as evidence. An id that is not one of them is a 422
    naming it - another enterprise's document too, refused exactly like one that does not exist, so nobody
    learns that it does."""
    documents = await repo.documents_for(session, uscc=uscc, ids=ids)
    found = {d.id for d in documents}
    missing_ids = [str(i) for i in ids if i not in found]
    if missing_ids:
        raise Unprocessable(
            "Some evidence documents do not exist.",
            errors=[FieldError(field="evidence", message=f"unknown document {i}") for i in missing_ids],
        )
    return documents


# --- applications -------------------------------------------------------------------------------------------


async def create_application(
    session: AsyncSession,
    *,
    user: CurrentUser,
    data: ApplicationCreate,
    programs: dict[str, Program],
    now: datetime,
) -> Application:
    if user.role is not Role.enterprise or user.uscc != data.uscc:
        raise Forbidden("Only the enterprise itself submits its applications.")
    enterprise = await repo.get_enterprise(session, data.uscc)
    if enterprise is None:
        raise Conflict(f"Enterprise {data.uscc} is not registered; register it first.")
    program = programs.get(data.program)
    if program is None:
        raise Unprocessable(
            f"There is no program {data.program!r}.",
            errors=[FieldError(field="program", message=f"known: {', '.join(sorted(programs))}")],
        )
    tier = program.tiers.get(data.tier)
    if tier is None:
        raise Unprocessable(
            f"Program {program.key} has no tier {data.tier!r}.",
            errors=[FieldError(field="tier", message=f"offered: {', '.join(program.tiers)}")],
        )
    batch_key = data.batch
    if batch_key is None:
        open_batches = program.open_batches(now.date())
        if not open_batches:
            raise Conflict(f"Program {program.key} has no batch open for filing today.")
        batch_key = open_batches[0].key
    try:
        batch = program.batch(batch_key)
    except (KeyError, ValueError):
        raise Unprocessable(
            f"Program {program.key} has no batch {batch_key!r}.",
            errors=[FieldError(field="batch", message="unknown batch")],
        ) from None
    if not batch.is_open(now.date()):
        raise Conflict(
            f"Batch {batch.key} of {program.key} is not open for filing "
            f"({batch.opens_on} to {batch.closes_on})."
        )
    if (
        tier.requires_tier is not None
        and await repo.active_recognition(session, uscc=data.uscc, tier=tier.requires_tier, at=now) is None
    ):
        raise Conflict(f"A {data.tier} application needs an active {tier.requires_tier} recognition.")
    documents = await evidence_documents(session, uscc=data.uscc, ids=data.evidence)
    if any(d.application_id is not None for d in documents):
        raise Conflict("An evidence document already belongs to another application.")
    missing_kinds = sorted(set(tier.required_documents) - {d.kind for d in documents})
    if missing_kinds:
        raise Unprocessable(
            f"Evidence is incomplete for {data.tier}: missing {', '.join(missing_kinds)}.",
            errors=[FieldError(field="evidence", message=f"missing a {k} document") for k in missing_kinds],
        )
    if await repo.open_application_exists(
        session, uscc=data.uscc, program=program.key, tier=data.tier, batch=batch.key
    ):
        raise Conflict(f"{data.uscc} already has an open {data.tier} application in batch {batch.key}.")
    application = Application(
        id=uuid.uuid4(),
        uscc=data.uscc,
        program=program.key,
        tier=data.tier,
        batch=batch.key,
        ruleset=program.ruleset_for(now.date()),
        region_code=enterprise.region_code,
        status="screening",
        metrics=data.metrics.model_dump(mode="json"),
        submitted_by=user.sub,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(application)
            await session.flush()
    except IntegrityError:
        raise Conflict(
            f"{data.uscc} already has an open {data.tier} application in batch {batch.key}."
        ) from None
    for document in documents:
        document.application_id = application.id
    session.add(
        Transition(
            application_id=application.id,
            event_key=f"submitted-{application.id}",
            actor=user.sub,
            role=user.role.value,
            action="submitted",
            from_status=None,
            to_status="screening",
            stage=None,
            reason=None,
            at=now,
        )
    )
    await session.flush()
    return application


def can_see(user: CurrentUser, *, uscc: str, region_code: str) -> bool:
    """Who reads an application: admins, its own enterprise, and reviewers whose region covers it."""
    if user.role is Role.admin:
        return True
    if user.role is Role.enterprise:
        return user.uscc == uscc
    if user.role is Role.reviewer:
        return user.covers_region(region_code)
    return False


def can_see_application(user: CurrentUser, application: Application) -> bool:
    return can_see(user, uscc=application.uscc, region_code=application.region_code)


async def get_application(
    session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID
) -> Application:
    application = await repo.get_application(session, application_id)
    if application is None or not can_see_application(user, application):
        raise NotFound(f"No application {application_id}.")
    return application


async def check_supplement(
    session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID, evidence: Sequence[uuid.UUID]
) -> None:
    """Before a supplement reaches the workflow: the application must be one the caller sees (404), and every
    document it cites one of the application's enterprise's own (422 naming each other id). Nothing is
    written either way."""
    application = await get_application(session, user=user, application_id=application_id)
    await evidence_documents(session, uscc=application.uscc, ids=evidence)


async def list_applications(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: ListFilters,
    cursor: str | None,
    limit: int,
) -> Page[ApplicationSummary]:
    position = decode_cursor(cursor)
    clauses: list[Any] = []
    if user.role is Role.enterprise:
        clauses.append(Application.uscc == user.uscc)
    elif user.role is Role.reviewer:
        clauses.append(region_clause(Application.region_code, user))
    elif user.role is not Role.admin:
        raise Forbidden("Applications are read by their enterprise, reviewers and admins.")
    for name in ("status", "tier", "stage", "program", "uscc"):
        value = getattr(filters, name)
        if value is not None:
            clauses.append(getattr(Application, name) == value)
    rows = await repo.list_applications(session, filters=clauses, cursor=position, limit=limit)
    page, next_cursor = split_page(rows, limit, lambda a: (a.created_at, a.id))
    return Page(items=[ApplicationSummary.model_validate(a) for a in page], next_cursor=next_cursor)


def region_clause(column: Any, user: CurrentUser) -> Any:
    prefix = region_prefix(user.region or "")
    return column == prefix if len(prefix) == 6 else column.like(f"{prefix}%")


async def history(session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID) -> list[Transition]:
    return await repo.transitions_for(session, application_id)


async def review_queue(
    session: AsyncSession, *, user: CurrentUser, cursor: str | None, limit: int
) -> Page[ReviewTaskRead]:
    position = decode_cursor(cursor)
    if user.role is not Role.reviewer or user.level is None:
        raise Forbidden("The review queue is for reviewers.")
    rows = await repo.review_queue(
        session,
        stage=user.level,
        region_filter=region_clause(ReviewTask.region_code, user),
        cursor=position,
        limit=limit,
    )
    page, next_cursor = split_page(rows, limit, lambda row: (row[0].created_at, row[0].id))
    now = datetime.now(UTC)
    items = [
        ReviewTaskRead(
            application_id=a.id,
            uscc=a.uscc,
            tier=a.tier,
            program=a.program,
            stage=t.stage,
            region_code=t.region_code,
            created_at=t.created_at,
            due_at=t.due_at,
            overdue=t.overdue or t.due_at <= now,
            escalated_to=t.escalated_to,
        )
        for t, a in page
    ]
    return Page(items=items, next_cursor=next_cursor)


async def objection_application(
    session: AsyncSession, *, user: CurrentUser, objection_id: uuid.UUID
) -> tuple[Objection, Application]:
    objection = await repo.get_objection(session, objection_id)
    application = await repo.get_application(session, objection.application_id) if objection else None
    if objection is None or application is None or not can_see_application(user, application):
        raise NotFound(f"No objection {objection_id}.")
    return objection, application


async def get_recognition(
    session: AsyncSession, *, user: CurrentUser, recognition_id: uuid.UUID
) -> Recognition:
    recognition = await repo.get_recognition(session, recognition_id)
    if recognition is None or (user.role is Role.enterprise and recognition.uscc != user.uscc):
        raise NotFound(f"No recognition {recognition_id}.")
    return recognition


async def list_recognitions(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: dict[str, Any],
    cursor: str | None,
    limit: int,
) -> Page[RecognitionRead]:
    position = decode_cursor(cursor)
    clauses: list[Any] = []
    if user.role is Role.enterprise:
        clauses.append(Recognition.uscc == user.uscc)
    for name, value in filters.items():
        if value is None:
            continue
        if name == "valid_on":
            clauses += [Recognition.valid_from <= value, Recognition.valid_until > value]
        else:
            clauses.append(getattr(Recognition, name) == value)
    rows = await repo.list_recognitions(session, filters=clauses, cursor=position, limit=limit)
    page, next_cursor = split_page(rows, limit, lambda r: (r.created_at, r.id))
    return Page(items=[RecognitionRead.model_validate(r) for r in page], next_cursor=next_cursor)


# --- what the review workflow's activities do, one transaction per attempt ----------------------------------


async def record_screening(session: AsyncSession, *, application_id: uuid.UUID) -> ScreenOutcome:
    from services.applications.metrics import DeclaredMetrics

    application = await repo.get_application(session, application_id, for_update=True)
    if application is None:
        raise LookupError(f"application {application_id} does not exist")
    result = screen(
        tier=application.tier,
        ruleset=application.ruleset,
        metrics=DeclaredMetrics.model_validate(application.metrics),
    )
    application.screening = result.model_dump(mode="json")
    return ScreenOutcome(passed=result.passed, ruleset=result.ruleset)


SYSTEM_ACTOR = Actor(sub="system", role="system")


async def screen_and_enter(session: AsyncSession, *, data: ScreenAndEnterInput) -> ScreenOutcome:
    """The review's first step in one transaction: the screening result, ``workflow_started`` (the workflow
    is evidently running), and the transition to the first stage's queue - or to ``ineligible``."""
    application_id = uuid.UUID(data.application_id)
    if await repo.transition_exists(session, data.event_key):  # a retry of an attempt that committed
        application = await repo.get_application(session, application_id)
        screening = application.screening if application is not None else None
        assert screening is not None, "a screened transition without a screening result"
        return ScreenOutcome(passed=screening["passed"], ruleset=screening["ruleset"])
    outcome = await record_screening(session, application_id=application_id)
    await session.execute(
        update(Application).where(Application.id == application_id).values(workflow_started=True)
    )
    await apply_transition(
        session,
        data=TransitionInput(
            application_id=data.application_id,
            event_key=data.event_key,
            actor=SYSTEM_ACTOR,
            action="screened",
            from_status="screening",
            to_status="in_review" if outcome.passed else "ineligible",
            stage=data.open_task.stage if outcome.passed else None,
            reason=f"passed {outcome.ruleset}"
            if outcome.passed
            else f"failed {outcome.ruleset}; see the screening result",
            at=data.at,
            open_task=data.open_task if outcome.passed else None,
        ),
    )
    return outcome


def _audit(
    data: TransitionInput | EscalationInput | ObjectionUpdate | RecognitionChange,
    *,
    application_id: uuid.UUID,
    actor: Actor,
    action: str,
    from_status: str | None,
    to_status: str,
    stage: str | None,
    reason: str | None,
    internal_note: str | None = None,
) -> Transition:
    return Transition(
        application_id=application_id,
        event_key=data.event_key,
        actor=actor.sub,
        role=actor.role,
        action=action,
        from_status=from_status,
        to_status=to_status,
        stage=stage,
        reason=reason,
        internal_note=internal_note,
        at=data.at,
    )


async def apply_transition(session: AsyncSession, *, data: TransitionInput) -> None:
    if await repo.transition_exists(session, data.event_key):
        return
    application_id = uuid.UUID(data.application_id)
    application = await repo.get_application(session, application_id, for_update=True)
    if application is None:
        raise LookupError(f"application {application_id} does not exist")
    application.status = data.to_status
    application.stage = data.stage if data.to_status in ("in_review", "returned") else None
    application.supplement_due_at = data.supplement_due_at
    application.updated_at = data.at
    if data.close_task_as is not None:
        decided = data.close_task_as in ("approve", "reject", "return")
        await repo.close_open_task(
            session,
            application_id,
            status="decided" if decided else "closed",
            decision=data.close_task_as if decided else None,
            decided_by=data.actor.sub if decided else None,
            at=data.at,
        )
    if data.open_task is not None:
        session.add(
            ReviewTask(
                application_id=application_id,
                stage=data.open_task.stage,
                region_code=data.open_task.region_code,
                status="open",
                due_at=data.open_task.due_at,
                created_at=data.at,
            )
        )
    session.add(
        _audit(
            data,
            application_id=application_id,
            actor=data.actor,
            action=data.action,
            from_status=data.from_status,
            to_status=data.to_status,
            stage=data.stage,
            reason=data.reason,
            internal_note=data.internal_note,
        )
    )
    await session.flush()


async def escalate(session: AsyncSession, *, data: EscalationInput) -> None:
    if await repo.transition_exists(session, data.event_key):
        return
    application_id = uuid.UUID(data.application_id)
    await repo.escalate_open_task(session, application_id, escalated_to=data.escalated_to)
    session.add(
        _audit(
            data,
            application_id=application_id,
            actor=Actor(sub="system", role="system"),
            action="sla_escalated",
            from_status="in_review",
            to_status="in_review",
            stage=data.stage,
            reason=f"stage SLA passed; escalated to {data.escalated_to}",
        )
    )
    await session.flush()


async def record_objection(session: AsyncSession, *, data: ObjectionUpdate) -> None:
    if await repo.transition_exists(session, data.event_key):
        return
    application_id, objection_id = uuid.UUID(data.application_id), uuid.UUID(data.objection_id)
    if data.resolution == "open":
        session.add(
            Objection(
                id=objection_id,
                application_id=application_id,
                filed_by=data.actor.sub,
                filed_role=data.actor.role,
                reason=data.reason,
                status="open",
                filed_at=data.at,
            )
        )
        action = "objection_filed"
    else:
        objection = await repo.get_objection(session, objection_id)
        if objection is None:
            raise LookupError(f"objection {objection_id} does not exist")
        objection.status = data.resolution
        objection.resolved_by = data.actor.sub
        objection.resolution_reason = data.reason
        objection.resolved_at = data.at
        action = f"objection_{data.resolution}"
    session.add(
        _audit(
            data,
            application_id=application_id,
            actor=data.actor,
            action=action,
            from_status="public_notice",
            to_status="public_notice",
            stage=None,
            reason=data.reason,
        )
    )
    await session.flush()


async def recognize(
    session: AsyncSession, *, data: RecognizeInput, programs: dict[str, Program]
) -> RecognitionOutcome:
    application_id = uuid.UUID(data.application_id)
    existing = await repo.recognition_for_application(session, application_id)
    if existing is None:
        application = await repo.get_application(session, application_id, for_update=True)
        if application is None:
            raise LookupError(f"application {application_id} does not exist")
        program = programs[application.program]
        year = data.at.astimezone(UTC).year
        sequence = await repo.next_certificate_number(
            session, program=program.key, year=year, tier=application.tier
        )
        existing = Recognition(
            application_id=application_id,
            uscc=application.uscc,
            program=program.key,
            tier=application.tier,
            certificate_no=f"{program.key.upper()}-{year}-{application.tier.upper()}-{sequence:05d}",
            valid_from=data.at,
            valid_until=program.durations.validity.add_to(data.at),
            status="active",
        )
        session.add(existing)
        session.add(
            Transition(
                application_id=application_id,
                event_key=data.event_key,
                actor="system",
                role="system",
                action="recognized",
                from_status="public_notice",
                to_status="recognized",
                stage=None,
                reason=f"notice period passed; certificate {existing.certificate_no}",
                at=data.at,
            )
        )
        application.status = "recognized"
        application.stage = None
        application.updated_at = data.at
        await session.flush()
    return RecognitionOutcome(
        recognition_id=str(existing.id),
        certificate_no=existing.certificate_no,
        valid_from=existing.valid_from,
        valid_until=existing.valid_until,
    )


async def change_recognition(session: AsyncSession, *, data: RecognitionChange) -> None:
    if await repo.transition_exists(session, data.event_key):
        return
    recognition = await repo.get_recognition(session, uuid.UUID(data.recognition_id))
    if recognition is None:
        raise LookupError(f"recognition {data.recognition_id} does not exist")
    if recognition.status == "active":
        recognition.status = data.status
        if data.status == "revoked":
            recognition.revoked_reason = data.reason
            recognition.revoked_by = data.actor.sub
            recognition.revoked_at = data.at
    session.add(
        _audit(
            data,
            application_id=uuid.UUID(data.application_id),
            actor=data.actor,
            action=f"recognition_{data.status}",
            from_status="recognized",
            to_status="recognized",
            stage=None,
            reason=data.reason,
        )
    )
    await session.flush()


async def open_re_review(
    session: AsyncSession, *, data: ReReviewInput, programs: dict[str, Program]
) -> ReReviewOutcome:
    recognition_id = uuid.UUID(data.recognition_id)
    existing = await repo.re_review_of(session, recognition_id)
    original = await repo.get_application(session, uuid.UUID(data.application_id))
    if original is None:
        raise LookupError(f"application {data.application_id} does not exist")
    program = programs.get(original.program)
    if existing is None:
        if program is None:
            return ReReviewOutcome(application_id="", review=None)
        open_batches = program.open_batches(data.at.date())
        batch = open_batches[0].key if open_batches else original.batch
        existing = Application(
            id=uuid.uuid4(),
            uscc=original.uscc,
            program=original.program,
            tier=original.tier,
            batch=batch,
            ruleset=program.ruleset_for(data.at.date()),
            region_code=original.region_code,
            status="screening",
            metrics=original.metrics,
            submitted_by="system",
            re_review_of=recognition_id,
            workflow_started=True,
            created_at=data.at,
            updated_at=data.at,
        )
        session.add(existing)
        await session.flush()
        session.add(
            Transition(
                application_id=existing.id,
                event_key=f"re-review-{recognition_id}",
                actor="system",
                role="system",
                action="opened_for_re_review",
                from_status=None,
                to_status="screening",
                stage=None,
                reason=f"recognition {recognition_id} expired; re-review (复核)",
                at=data.at,
            )
        )
        await session.flush()
    assert program is not None
    return ReReviewOutcome(application_id=str(existing.id), review=review_input(existing, program))
