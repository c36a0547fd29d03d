"""The rules the API applies in the applications domain: who may see and do what, what a request may create,
and the answers it reads. Functions take the session first and the rest keyword-only; they never commit (the
request owns the transaction). What the review workflow's activities write is in ``records``."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import repository as repo
from services.applications.models import (
    Application,
    Document,
    Enterprise,
    Objection,
    Recognition,
    Transition,
)
from services.applications.schemas import (
    ApplicationCreate,
    ApplicationRead,
    ApplicationSummary,
    BatchRead,
    DocumentRead,
    EnterpriseCreate,
    EnterpriseRead,
    HistoryEntry,
    ListFilters,
    ObjectionRead,
    ProgramRead,
    ProgramTierRead,
    RecognitionRead,
    ReviewTaskInfo,
    ReviewTaskRead,
    TierHeld,
)
from services.auth import CurrentUser, Role, role_check
from services.contracts import Actor, ReviewDurations, ReviewInput
from services.errors import Conflict, FieldError, Forbidden, NotFound, Unprocessable
from services.pagination import Page, decode_cursor, split_page
from services.programs import Program

ALLOWED_DOCUMENT_TYPES = {"application/pdf", "image/png", "image/jpeg"}


def actor_of(user: CurrentUser) -> Actor:
    return Actor(sub=user.sub, role=user.role.value, uscc=user.uscc, level=user.level, region=user.region)


def review_input(application: Application, program: Program) -> ReviewInput:
    tier = program.tiers[application.tier]  # type: ignore[index]
    d = program.durations
    return ReviewInput(
        application_id=application.id,
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


# --- programs ----------------------------------------------------------------------------------------------


def list_programs(programs: dict[str, Program]) -> list[ProgramRead]:
    """Every program with its rulesets, durations, tiers, listing rewards and the batches open today."""
    today = datetime.now(UTC).date()
    out = []
    for program in programs.values():
        d = program.durations
        out.append(
            ProgramRead(
                key=program.key,
                name=program.name,
                authority=program.authority,
                region_code=program.region_code,
                rulesets=[
                    {"version": r.version, "effective_from": r.effective_from.isoformat()}
                    for r in program.rulesets
                ],
                notice_period=str(d.notice_period),
                stage_sla=str(d.stage_sla),
                supplement_deadline=str(d.supplement_deadline),
                validity=str(d.validity),
                tiers=[
                    ProgramTierRead(
                        key=key,
                        name=t.name,
                        review_levels=list(t.review_levels),
                        requires_tier=t.requires_tier,
                        required_documents=list(t.required_documents),
                        credit_line_limit=f"{t.credit_line_limit:.2f}" if t.credit_line_limit else None,
                    )
                    for key, t in program.tiers.items()
                ],
                listing_rewards={board: f"{amount:.2f}" for board, amount in program.listing_rewards.items()},
                open_batches=[
                    BatchRead(key=b.key, opens_on=b.opens_on, closes_on=b.closes_on)
                    for b in program.open_batches(today)
                ],
            )
        )
    return out


# --- enterprises -------------------------------------------------------------------------------------------


# Who may register an enterprise: the enterprise itself (its USCC is checked with the body), an admin.
authorize_registration = role_check(Role.enterprise, Role.admin)


async def register_enterprise(
    session: AsyncSession, *, user: CurrentUser, data: EnterpriseCreate
) -> EnterpriseRead:
    if user.role is Role.enterprise and user.uscc != data.uscc:
        raise Forbidden("An enterprise token may only register its own USCC.")
    created = await repo.insert_enterprise(session, {**data.model_dump(), "registered_by": user.sub})
    if not created:
        raise Conflict(f"An enterprise with USCC {data.uscc} is already registered.")
    enterprise = await repo.get_enterprise(session, data.uscc)
    assert enterprise is not None
    return EnterpriseRead.model_validate(enterprise)


async def get_enterprise(session: AsyncSession, *, user: CurrentUser, uscc: str) -> Enterprise:
    enterprise = await repo.get_enterprise(session, uscc)
    if enterprise is None or not can_see_enterprise(user, enterprise.uscc, enterprise.region_code):
        raise NotFound(f"No enterprise {uscc}.")
    return enterprise


async def read_enterprise(session: AsyncSession, *, user: CurrentUser, uscc: str) -> EnterpriseRead:
    """The enterprise with the tiers it holds now (its active, unexpired recognitions)."""
    enterprise = await get_enterprise(session, user=user, uscc=uscc)
    body = EnterpriseRead.model_validate(enterprise)
    tiers = await repo.current_tiers(session, enterprise.uscc, datetime.now(UTC))
    body.current_tiers = [TierHeld.model_validate(r) for r in tiers]
    return body


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
) -> DocumentRead:
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
    return DocumentRead.model_validate(document)


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


# Who may submit an application: an enterprise (for itself, checked with the body).
authorize_submission = role_check(Role.enterprise)


async def create_application(
    session: AsyncSession,
    *,
    user: CurrentUser,
    data: ApplicationCreate,
    programs: dict[str, Program],
    now: datetime,
) -> ApplicationRead:
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
    return await application_read(session, user=user, application=application)


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


async def application_read(
    session: AsyncSession, *, user: CurrentUser, application: Application
) -> ApplicationRead:
    """The application as ``user`` reads it: its open task, documents, objections and history - with the
    reviewers' names and internal notes masked for an enterprise."""
    body = ApplicationRead.model_validate(application)
    task = await repo.open_task_for(session, application.id)
    body.task = ReviewTaskInfo.model_validate(task) if task else None
    body.documents = [
        DocumentRead.model_validate(d) for d in await repo.application_documents(session, application.id)
    ]
    body.objections = [
        ObjectionRead.model_validate(o) for o in await repo.objections_for(session, application.id)
    ]
    body.history = [_history_entry(t, user) for t in await repo.transitions_for(session, application.id)]
    return body


def _history_entry(transition: Transition, user: CurrentUser) -> HistoryEntry:
    entry = HistoryEntry.model_validate(transition)
    if user.role is Role.enterprise:
        entry.internal_note = None
        if transition.role == "reviewer":
            entry.actor = "reviewer"
    return entry


async def authorize_action(session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID) -> None:
    """Who may act on an application's review. A reviewer outside its level or region learns that it exists
    (the workflow's validator answers 403, as the review rules require); every other caller who may not see
    it gets 404."""
    if user.role is Role.reviewer:
        if await repo.get_application(session, application_id) is None:
            raise NotFound(f"No application {application_id}.")
    else:
        await get_application(session, user=user, application_id=application_id)


async def authorize_objection(session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID) -> None:
    """Anyone may object to an application on public notice (it is public); any other application is
    visible only to those who may read it, so nobody else learns whether an id exists."""
    application = await repo.get_application(session, application_id)
    if application is None or (
        application.status != "public_notice" and not can_see_application(user, application)
    ):
        raise NotFound(f"No application {application_id}.")


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
    if user.role not in (Role.enterprise, Role.reviewer, Role.admin):
        raise Forbidden("Applications are read by their enterprise, reviewers and admins.")
    wanted = filters.model_dump()
    if user.role is Role.enterprise:
        if wanted["uscc"] not in (None, user.uscc):
            return Page(items=[], next_cursor=None)  # another enterprise's: none of the caller's
        wanted["uscc"] = user.uscc
    region = (user.region or "") if user.role is Role.reviewer else None
    rows = await repo.list_applications(session, region=region, filters=wanted, cursor=position, limit=limit)
    page, next_cursor = split_page(rows, limit, lambda a: (a.created_at, a.id))
    return Page(items=[ApplicationSummary.model_validate(a) for a in page], next_cursor=next_cursor)


async def review_queue(
    session: AsyncSession, *, user: CurrentUser, cursor: str | None, limit: int
) -> Page[ReviewTaskRead]:
    position = decode_cursor(cursor)
    if user.role is not Role.reviewer or user.level is None:
        raise Forbidden("The review queue is for reviewers.")
    rows = await repo.review_queue(
        session,
        stage=user.level,
        region=user.region or "",
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


def _may_read_recognitions(user: CurrentUser) -> None:
    if user.role is Role.reviewer:
        raise Forbidden("Recognitions are read by their enterprise, finance and admins.")


async def get_recognition(
    session: AsyncSession, *, user: CurrentUser, recognition_id: uuid.UUID
) -> Recognition:
    recognition = await repo.get_recognition(session, recognition_id)
    if recognition is None or (user.role is Role.enterprise and recognition.uscc != user.uscc):
        raise NotFound(f"No recognition {recognition_id}.")
    return recognition


async def read_recognition(
    session: AsyncSession, *, user: CurrentUser, recognition_id: uuid.UUID
) -> RecognitionRead:
    _may_read_recognitions(user)
    return RecognitionRead.model_validate(
        await get_recognition(session, user=user, recognition_id=recognition_id)
    )


async def revocable_recognition(
    session: AsyncSession, *, user: CurrentUser, recognition_id: uuid.UUID
) -> Recognition:
    """The recognition an admin revokes: only an active one can be (409 otherwise)."""
    user.require(Role.admin)
    recognition = await get_recognition(session, user=user, recognition_id=recognition_id)
    if recognition.status != "active":
        raise Conflict(f"The recognition is {recognition.status}; only an active one can be revoked.")
    return recognition


async def list_recognitions(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: dict[str, Any],
    cursor: str | None,
    limit: int,
) -> Page[RecognitionRead]:
    _may_read_recognitions(user)
    position = decode_cursor(cursor)
    wanted = dict(filters)
    valid_on = wanted.pop("valid_on", None)
    if user.role is Role.enterprise:
        if wanted.get("uscc") not in (None, user.uscc):
            return Page(items=[], next_cursor=None)  # another enterprise's: none of the caller's
        wanted["uscc"] = user.uscc
    rows = await repo.list_recognitions(
        session, filters=wanted, valid_on=valid_on, cursor=position, limit=limit
    )
    page, next_cursor = split_page(rows, limit, lambda r: (r.created_at, r.id))
    return Page(items=[RecognitionRead.model_validate(r) for r in page], next_cursor=next_cursor)
