"""The rules the API applies in the applications domain: who may see and do what, what a request may create,
and the answers it reads. Functions take the session first and the rest keyword-only; they never commit (the
request owns the transaction). What the review workflow's activities write is in ``records``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol, cast

import anyio
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import announce, certificates, evidence
from services.applications import repository as repo
from services.applications.evidence import DocumentFile, Readable, StagedUpload
from services.applications.metrics import DeclaredMetrics
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
    ApplicationRead,
    ApplicationSummary,
    BatchRead,
    DocumentFilters,
    DocumentRead,
    DraftCheck,
    DraftProblem,
    DraftUpdate,
    EnterpriseCreate,
    EnterpriseRead,
    HistoryEntry,
    HowToObject,
    ListFilters,
    ObjectionRead,
    ProgramRead,
    ProgramTierRead,
    PublicNoticeRead,
    PublicRecognitionRead,
    PublicStatus,
    QueueCounts,
    QueueFilters,
    RecognitionRead,
    ReviewQueuePage,
    ReviewTaskInfo,
    ReviewTaskRead,
    TierHeld,
)
from services.applications.screening import ScreeningResult, screen
from services.auth import CurrentUser, Role, role_check
from services.contracts import Actor, PanelPolicy, ReviewDurations, ReviewInput
from services.errors import Conflict, FieldError, Forbidden, GiantflowError, NotFound, Unprocessable
from services.idempotency import once
from services.pagination import Page, decode_cursor, split_page
from services.pools.service import memberships_of
from services.programs import (
    DEFAULT_CLAIM_TTL,
    Batch,
    IsoDuration,
    Program,
    TierPolicy,
    program_at,
    program_version,
)
from services.storage import Storage
from services.vocabulary import DRAFT, LEVELS, TIERS, Owned, Tier

ALLOWED_DOCUMENT_TYPES = {"application/pdf", "image/png", "image/jpeg"}


def actor_of(user: CurrentUser) -> Actor:
    return Actor(
        sub=user.sub,
        role=user.role.value,
        uscc=user.uscc,
        level=user.level,
        region=user.region,
        groups=list(user.groups),
        expert_id=user.expert_id,
    )


# The columns of an application its review carries as they are.
REVIEWED_COLUMNS = ("uscc", "program", "tier", "region_code")


class Reviewed(Owned, Protocol):
    """What a review starts from: the application as stored, or as the request that wrote it answered."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def region_code(self) -> str: ...
    @property
    def re_review_of(self) -> uuid.UUID | None: ...
    @property
    def program_version(self) -> int | None: ...


def review_input(application: Reviewed, program: Program) -> ReviewInput:
    """``program`` as the version that judges the application says (``program_at``)."""
    tier = program.tiers[application.tier]  # type: ignore[index]
    d = program.durations
    return ReviewInput(
        application_id=application.id,
        **{column: getattr(application, column) for column in REVIEWED_COLUMNS},
        stages=list(tier.review_levels),
        durations=ReviewDurations(
            stage_sla=d.stage_sla.timedelta.total_seconds(),
            supplement_deadline=d.supplement_deadline.timedelta.total_seconds(),
            notice_period=d.notice_period.timedelta.total_seconds(),
            supplement_reminder=d.supplement_reminder.timedelta.total_seconds(),
            expiry_reminder=d.expiry_reminder.timedelta.total_seconds(),
            re_review_window=d.re_review_window.timedelta.total_seconds(),
        ),
        escalation_group=program.escalation_group,
        re_review_of=application.re_review_of,
        program_version=application.program_version,
        panels={level: PanelPolicy(**panel.model_dump()) for level, panel in tier.panels.items()},
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
                **program.model_dump(include={"key", "name", "authority", "region_code"}),
                version=program_version(programs, program.key),
                rulesets=[
                    {"version": r.version, "effective_from": r.effective_from.isoformat()}
                    for r in program.rulesets
                ],
                notice_period=str(d.notice_period),
                stage_sla=str(d.stage_sla),
                supplement_deadline=str(d.supplement_deadline),
                validity=str(d.validity),
                claim_ttl=str(d.claim_ttl),
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


async def read_enterprise(
    session: AsyncSession, *, user: CurrentUser, uscc: str, programs: Mapping[str, Program]
) -> EnterpriseRead:
    """The enterprise with the tiers it holds now (its active, unexpired recognitions) and the pools it is in
    (each barred until when, after a revocation for fraud)."""
    enterprise = await get_enterprise(session, user=user, uscc=uscc)
    body = EnterpriseRead.model_validate(enterprise)
    tiers = await repo.current_tiers(session, enterprise.uscc, datetime.now(UTC))
    body.current_tiers = [TierHeld.model_validate(r) for r in tiers]
    body.pools = await memberships_of(session, enterprise.uscc, programs=programs)
    return body


def can_see_enterprise(user: CurrentUser, uscc: str, region_code: str) -> bool:
    if user.role is Role.enterprise:
        return user.uscc == uscc
    if user.role is Role.reviewer:
        return user.covers_region(region_code)
    return True


# --- documents ----------------------------------------------------------------------------------------------


async def receive_upload(
    upload: Readable, *, storage: Storage, filename: str | None, content_type: str | None, limit: int
) -> StagedUpload:
    """An evidence upload, streamed to a staging file and hashed (a 413 past `limit` bytes): the name the
    client gave without any folders, the media type without parameters."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()[:255] or "upload"
    media_type = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    return await evidence.stage(upload, storage=storage, filename=name, content_type=media_type, limit=limit)


def upload_fingerprint(upload: StagedUpload, *, kind: str) -> dict[str, Any]:
    """What makes two uploads the same request for the Idempotency-Key: the kind, the name, the media type
    and the content."""
    return {
        "kind": kind,
        "filename": upload.filename,
        "content_type": upload.content_type,
        "sha256": upload.sha256,
    }


async def authorize_upload(session: AsyncSession, *, user: CurrentUser) -> None:
    """Who uploads evidence: a registered enterprise (403 for other roles, 409 before registering)."""
    if user.role is not Role.enterprise or user.uscc is None:
        raise Forbidden("Only an enterprise uploads evidence.")
    if await repo.get_enterprise(session, user.uscc) is None:
        raise Conflict("Register the enterprise before uploading evidence.")


async def store_document(
    session: AsyncSession, *, user: CurrentUser, kind: str, upload: StagedUpload
) -> DocumentRead:
    """A document of the caller's enterprise (``authorize_upload`` first), its content kept in the store."""
    assert user.uscc is not None
    if upload.content_type not in ALLOWED_DOCUMENT_TYPES:
        raise Unprocessable(
            f"Evidence must be one of {', '.join(sorted(ALLOWED_DOCUMENT_TYPES))}.",
            errors=[FieldError(field="file", message=f"type {upload.content_type} is not allowed")],
        )
    if not upload.size:
        raise Unprocessable("The file is empty.", errors=[FieldError(field="file", message="empty")])
    document = Document(
        uscc=user.uscc,
        kind=kind,
        filename=upload.filename,
        content_type=upload.content_type,
        size=upload.size,
        sha256=upload.sha256,
        uploaded_by=user.sub,
    )
    session.add(document)
    await session.flush()
    await upload.keep()  # before the request commits: a document's content is stored first
    return DocumentRead.model_validate(document)


# Who reads evidence at all; which documents each may read is ``_may_read_document``.
DOCUMENT_READERS = (Role.enterprise, Role.reviewer, Role.admin)


async def _may_read_document(session: AsyncSession, user: CurrentUser, document: Document) -> bool:
    """An enterprise reads its own documents; a reviewer those cited by an application it may read (its
    region covers the application's, whatever its level - as for ``GET /applications/{id}``); an admin all."""
    if user.role is Role.admin:
        return True
    if user.role is Role.enterprise:
        return document.uscc == user.uscc
    if user.role is Role.reviewer and user.region is not None:
        return await repo.document_cited_in_region(session, document.id, user.region)
    return False


async def get_document(session: AsyncSession, *, user: CurrentUser, document_id: uuid.UUID) -> Document:
    """The document, for a caller who may read it; 404 for anyone else, as for an id that does not exist."""
    user.require(*DOCUMENT_READERS)  # before the lookup: says nothing about ids
    document = await repo.get_document(session, document_id)
    if document is None or not await _may_read_document(session, user, document):
        raise NotFound(f"No document {document_id}.")
    return document


async def read_document(session: AsyncSession, *, user: CurrentUser, document_id: uuid.UUID) -> DocumentRead:
    return DocumentRead.model_validate(await get_document(session, user=user, document_id=document_id))


async def document_file(
    session: AsyncSession, *, user: CurrentUser, document_id: uuid.UUID, storage: Storage
) -> DocumentFile:
    """Where a readable document's content is, with what its download is labelled by."""
    document = await get_document(session, user=user, document_id=document_id)
    return DocumentFile(
        storage=storage,
        size=document.size,
        sha256=document.sha256,
        content_type=document.content_type,
        filename=document.filename,
    )


async def list_documents(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: DocumentFilters,
    cursor: str | None,
    limit: int,
) -> Page[DocumentRead]:
    """The documents the caller may read (``_may_read_document``), oldest first. Filtering by an application
    the caller may not read finds nothing, as does filtering an enterprise's list by another USCC."""
    position = decode_cursor(cursor)
    user.require(*DOCUMENT_READERS)
    uscc = filters.uscc
    if user.role is Role.enterprise:
        if uscc not in (None, user.uscc):
            return Page(items=[], next_cursor=None)
        uscc = user.uscc
    if filters.application_id is not None:
        application = await repo.get_application(session, filters.application_id)
        if application is None or not can_see_application(user, application):
            return Page(items=[], next_cursor=None)
    rows = await repo.list_documents(
        session,
        uscc=uscc,
        kind=filters.kind,
        application_id=filters.application_id,
        region=(user.region or "") if user.role is Role.reviewer else None,
        cursor=position,
        limit=limit,
    )
    page, next_cursor = split_page(rows, limit, lambda d: (d.uploaded_at, d.id))
    return Page(items=[DocumentRead.model_validate(d) for d in page], next_cursor=next_cursor)


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


def check_figures(enterprise: Enterprise, metrics: DeclaredMetrics) -> None:
    """Declared figures are of years the enterprise existed in (422 otherwise)."""
    founded = enterprise.founded_on.year
    if metrics.first.year < founded:
        raise Unprocessable(
            f"The figures start in {metrics.first.year}, before the enterprise was founded ({founded}).",
            errors=[FieldError(field="metrics.years", message=f"a year before {founded}, the founding")],
        )


# --- applications -------------------------------------------------------------------------------------------


# Who may submit an application: an enterprise (for itself, checked with the body).
authorize_submission = role_check(Role.enterprise)


class FraudBarred(Conflict):
    slug, title = "fraud-bar", "Barred from applying after a revocation for fraud"


async def check_not_barred(session: AsyncSession, *, uscc: str, program: Program, now: datetime) -> None:
    """An enterprise whose recognition (in any program) was revoked for fraud may not apply to any tier for
    the program's ``durations.fraud_bar`` from the revocation (409, saying until when)."""
    revoked = await repo.last_fraud_revocation(session, uscc)
    if revoked is None or revoked.revoked_at is None:
        return
    until = program.durations.fraud_bar.add_to(revoked.revoked_at)
    if now < until:
        raise FraudBarred(
            f"Recognition {revoked.certificate_no} of {uscc} was revoked for fraud on "
            f"{revoked.revoked_at.astimezone(UTC).date().isoformat()}: the enterprise may not apply to any "
            f"tier until {until.astimezone(UTC).isoformat(timespec='seconds')} "
            f"({program.durations.fraud_bar} from the revocation)."
        )


@dataclass(frozen=True, slots=True)
class _Filing:
    """What an application is filed under: its enterprise, program, tier and batch, each known to exist;
    ``evidence``, its documents once the submission checks have found them."""

    enterprise: Enterprise
    program: Program
    tier: Tier
    policy: TierPolicy
    batch: Batch
    evidence: list[Document] = field(default_factory=list)


class Filed(Owned, Protocol):
    """What names an application's filing: a request to create one, a draft as saved, or as changed."""

    @property
    def batch(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class _Named:
    uscc: str
    program: str
    tier: str
    batch: str | None


async def _filing(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filed: Filed,
    programs: dict[str, Program],
    now: datetime,
    drafting: bool,
) -> _Filing:
    """The enterprise, program, tier and batch an application (or draft) names: the caller's own registered
    enterprise (403, 409), a known program and tier (422), and a known batch (422) - by default the batch
    open today, or for a draft the first that has not closed yet (409 when there is none)."""
    uscc, program_key, tier, batch_key = filed.uscc, filed.program, filed.tier, filed.batch
    if user.role is not Role.enterprise or user.uscc != uscc:
        raise Forbidden("Only the enterprise itself submits its applications.")
    enterprise = await repo.get_enterprise(session, uscc)
    if enterprise is None:
        raise Conflict(f"Enterprise {uscc} is not registered; register it first.")
    program = programs.get(program_key)
    if program is None:
        raise Unprocessable(
            f"There is no program {program_key!r}.",
            errors=[FieldError(field="program", message=f"known: {', '.join(sorted(programs))}")],
        )
    policy = program.tiers.get(tier)  # type: ignore[call-overload]
    if policy is None:
        raise Unprocessable(
            f"Program {program.key} has no tier {tier!r}.",
            errors=[FieldError(field="tier", message=f"offered: {', '.join(program.tiers)}")],
        )
    if batch_key is None:
        today = now.date()
        candidates = program.open_batches(today)
        if drafting:
            candidates += sorted((b for b in program.batches if b.opens_on > today), key=lambda b: b.opens_on)
        if not candidates:
            raise Conflict(f"Program {program.key} has no batch open for filing today.")
        batch_key = candidates[0].key
    try:
        batch = program.batch(batch_key)
    except (KeyError, ValueError):
        raise Unprocessable(
            f"Program {program.key} has no batch {batch_key!r}.",
            errors=[FieldError(field="batch", message="unknown batch")],
        ) from None
    return _Filing(enterprise=enterprise, program=program, tier=cast(Tier, tier), policy=policy, batch=batch)


async def _submission_checks(
    session: AsyncSession,
    filing: _Filing,
    *,
    metrics: DeclaredMetrics,
    evidence: Sequence[uuid.UUID],
    now: datetime,
    preview: bool = False,
) -> list[Callable[[], Awaitable[None]]]:
    """What a submission must pass, in the order it is refused: no fraud bar (409), the batch open today
    (409), the tier the tier requires held (409), figures of years the enterprise existed in (422), the
    enterprise's own documents (422) covering the tier's required kinds (422), and no other open application
    for the tier in the batch (409). A direct submission and a draft's run them in this order and stop at
    the first refusal; a draft's check runs them all and lists every refusal (``check_draft``)."""
    uscc, program, tier, batch = filing.enterprise.uscc, filing.program, filing.tier, filing.batch

    async def not_barred() -> None:
        await check_not_barred(session, uscc=uscc, program=program, now=now)

    async def batch_open() -> None:
        if not batch.is_open(now.date()):
            raise Conflict(
                f"Batch {batch.key} of {program.key} is not open for filing "
                f"({batch.opens_on} to {batch.closes_on})."
            )

    async def ladder() -> None:
        required = filing.policy.requires_tier
        if (
            required is not None
            and await repo.active_recognition(session, uscc=uscc, tier=required, at=now) is None
        ):
            raise Conflict(f"A {tier} application needs an active {required} recognition.")

    async def figures() -> None:
        check_figures(filing.enterprise, metrics)

    async def documents() -> None:
        found = await evidence_documents(session, uscc=uscc, ids=evidence)
        filing.evidence[:] = found
        missing_kinds = sorted(set(filing.policy.required_documents) - {d.kind for d in found})
        if missing_kinds:
            raise Unprocessable(
                f"Evidence is incomplete for {tier}: missing {', '.join(missing_kinds)}.",
                errors=[
                    FieldError(field="evidence", message=f"missing a {k} document") for k in missing_kinds
                ],
            )

    async def no_duplicate() -> None:
        if await repo.open_application_exists(
            session, uscc=uscc, program=program.key, tier=tier, batch=batch.key
        ):
            raise _duplicate(filing)

    # A submission that writes learns the last answer from the unique index of open applications as its row
    # is written (the same 409, after every other check); only a preview asks.
    checks: list[Callable[[], Awaitable[None]]] = [not_barred, batch_open, ladder, figures, documents]
    return [*checks, no_duplicate] if preview else checks


async def create_application(
    session: AsyncSession,
    *,
    user: CurrentUser,
    data: ApplicationCreate,
    programs: dict[str, Program],
    now: datetime,
) -> ApplicationRead:
    """Submit an application (its review starts once the request commits: ``workflow_client``), or with
    ``submit`` false save a draft - which is checked only for what it names (program, tier, batch, figures'
    years, its enterprise's own documents) and starts nothing."""
    filing = await _filing(
        session, user=user, filed=data, programs=programs, now=now, drafting=not data.submit
    )
    if data.submit:
        for check in await _submission_checks(
            session, filing, metrics=data.metrics, evidence=data.evidence, now=now
        ):
            await check()
        documents = filing.evidence
    else:
        check_figures(filing.enterprise, data.metrics)
        documents = await evidence_documents(session, uscc=data.uscc, ids=data.evidence)
    application = Application(
        id=uuid.uuid4(),
        uscc=data.uscc,
        program=filing.program.key,
        tier=data.tier,
        batch=filing.batch.key,
        ruleset=filing.program.ruleset_for_batch(filing.batch.key),  # in force when the batch opened
        region_code=filing.enterprise.region_code,
        status=DRAFT,
        metrics=data.metrics.model_dump(mode="json"),
        submitted_by=user.sub,
        created_at=now,
        updated_at=now,
    )
    if data.submit:
        filed(application, programs, at=now)
    try:
        async with session.begin_nested():
            session.add(application)
            await session.flush()
    except IntegrityError:
        raise _duplicate(filing) from None
    await repo.cite_documents(session, application.id, [d.id for d in documents], cited_by=user.sub, at=now)
    history = [await _submitted(session, application, user=user, now=now)] if data.submit else []
    return _created_read(application, documents=documents, history=history, user=user)


def _created_read(
    application: Application, *, documents: list[Document], history: list[Transition], user: CurrentUser
) -> ApplicationRead:
    """``application_read`` of an application this request has just written, from what it wrote rather than
    read back: no review task yet (its workflow opens the first), no objections, the documents it cites (all
    cited now, so in the order they were uploaded) and its history so far."""
    body = ApplicationRead.model_validate(application)
    body.documents = [
        DocumentRead.model_validate(d) for d in sorted(documents, key=lambda d: (d.uploaded_at, d.id))
    ]
    body.history = [_history_entry(t, user) for t in history]
    return body


def _duplicate(filing: _Filing) -> Conflict:
    return Conflict(
        f"{filing.enterprise.uscc} already has an open {filing.tier} application in batch {filing.batch.key}."
    )


async def _submitted(
    session: AsyncSession, application: Application, *, user: CurrentUser, now: datetime
) -> Transition:
    """The audit row and the event of a submission (direct, or of a draft): its history starts here."""
    row = opening(
        application, event_key=f"submitted-{application.id}", actor=(user.sub, user.role.value), at=now
    )
    session.add(row)
    await session.flush()
    await announce.submitted(session, application)
    return row


def opening(
    application: Application,
    *,
    event_key: str,
    actor: tuple[str, str],
    at: datetime,
    action: str = "submitted",
    reason: str | None = None,
) -> Transition:
    """The first audit row of an application that enters screening (filed, or opened for re-review), by
    ``actor`` (subject, role)."""
    sub, role = actor
    return Transition(
        application_id=application.id,
        event_key=event_key,
        actor=sub,
        role=role,
        action=action,
        from_status=None,
        to_status="screening",
        stage=None,
        reason=reason,
        at=at,
    )


def filed(application: Application, programs: Mapping[str, Program], *, at: datetime) -> Application:
    """``application`` filed at ``at`` - submitted at once, a draft submitted, a re-review opened: status
    ``screening``, judged by its batch's ruleset and the program's version in force, and counted from ``at``
    (lists, the reconciler and screening count from ``created_at``). A draft records no version until then."""
    program = programs[application.program]
    application.status = "screening"
    application.ruleset = program.ruleset_for_batch(application.batch)
    application.program_version = program_version(programs, program.key)
    application.created_at = application.updated_at = at
    return application


# --- drafts ----------------------------------------------------------------------------------------------


class NotADraft(Conflict):
    slug, title = "not-a-draft", "The application is not a draft"


async def own_draft(
    session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID, for_update: bool = False
) -> Application:
    """The caller's own draft: 403 for any role but an enterprise (before any lookup), 404 for an application
    that is not the caller's, 409 for one of the caller's that is no longer a draft."""
    user.require(Role.enterprise)
    application = await repo.get_application(session, application_id, for_update=for_update)
    if application is None or application.uscc != user.uscc:
        raise NotFound(f"No application {application_id}.")
    if application.status != DRAFT:
        raise NotADraft(
            f"The application is {application.status}; only a draft is edited, checked or submitted."
        )
    return application


async def update_draft(
    session: AsyncSession,
    *,
    user: CurrentUser,
    application_id: uuid.UUID,
    data: DraftUpdate,
    programs: dict[str, Program],
    now: datetime,
) -> ApplicationRead:
    """Change the caller's draft: its tier, batch, figures or evidence (each given replaces the draft's),
    checked as a new draft is."""
    application = await own_draft(session, user=user, application_id=application_id, for_update=True)
    changed = _Named(
        application.uscc, application.program, data.tier or application.tier, data.batch or application.batch
    )
    filing = await _filing(session, user=user, filed=changed, programs=programs, now=now, drafting=True)
    if data.metrics is not None:
        check_figures(filing.enterprise, data.metrics)
        application.metrics = data.metrics.model_dump(mode="json")
    if data.evidence is not None:
        documents = await evidence_documents(session, uscc=application.uscc, ids=data.evidence)
        await repo.replace_draft_evidence(
            session,
            application_id=application.id,
            document_ids=[d.id for d in documents],
            cited_by=user.sub,
            at=now,
        )
    application.tier = filing.tier
    application.batch = filing.batch.key
    application.ruleset = filing.program.ruleset_for_batch(filing.batch.key)
    application.updated_at = now
    await session.flush()
    return await application_read(session, user=user, application=application)


async def screen_application(
    session: AsyncSession, application: Application, *, programs: Mapping[str, Program], at: datetime
) -> ScreeningResult:
    """The application's figures screened as they stand (nothing stored): by the ruleset of its batch, with
    awards counted in the 3 years before its batch opened, and the tiers the enterprise holds at `at` by its
    valid recognitions (an existing little giant's route to a single championship). Without its program or
    batch (since removed), awards count in the declared years."""
    program = (
        program_at(programs, application.program, application.program_version)
        if application.program in programs
        else None
    )
    batch = next((b for b in program.batches if b.key == application.batch), None) if program else None
    held = await repo.current_tiers(session, application.uscc, at)
    return screen(
        tier=application.tier,
        ruleset=application.ruleset,
        metrics=DeclaredMetrics.model_validate(application.metrics),
        held_tiers={recognition.tier for recognition in held},
        batch_year=batch.opens_on.year if batch is not None else None,
    )


async def check_draft(
    session: AsyncSession,
    *,
    user: CurrentUser,
    application_id: uuid.UUID,
    programs: dict[str, Program],
    now: datetime,
) -> DraftCheck:
    """A preview of the caller's draft (``DraftCheck``): its screening as a submission now would screen it,
    and every refusal a submission now would meet. Nothing is written."""
    application = await own_draft(session, user=user, application_id=application_id)
    filing, metrics, cited = await _draft_as_filed(
        session, user=user, application=application, programs=programs, now=now, drafting=True
    )
    problems: list[DraftProblem] = []
    for check in await _submission_checks(
        session, filing, metrics=metrics, evidence=cited, now=now, preview=True
    ):
        try:
            await check()
        except GiantflowError as refusal:
            fields = getattr(refusal, "errors", None) or []
            problems += [DraftProblem(field=e.field, message=e.message) for e in fields] or [
                DraftProblem(field="application", message=refusal.detail)
            ]
    result = await screen_application(session, application, programs=programs, at=now)
    if not result.passed:
        problems.append(
            DraftProblem(
                field="metrics", message=f"fails {result.ruleset}: see the screening, a reason per rule"
            )
        )
    return DraftCheck(
        application_id=application.id,
        screening=result.model_dump(mode="json"),
        problems=problems,
        submittable=not problems,
    )


async def _draft_as_filed(
    session: AsyncSession,
    *,
    user: CurrentUser,
    application: Application,
    programs: dict[str, Program],
    now: datetime,
    drafting: bool,
) -> tuple[_Filing, DeclaredMetrics, list[uuid.UUID]]:
    """A draft as its submission would file it: the filing (program, tier, batch as checked now), its
    figures and the documents it cites."""
    filing = await _filing(
        session, user=user, filed=application, programs=programs, now=now, drafting=drafting
    )
    cited = [d.id for d in await repo.application_documents(session, application.id)]
    return filing, DeclaredMetrics.model_validate(application.metrics), cited


async def submit_draft(
    session: AsyncSession,
    *,
    user: CurrentUser,
    application_id: uuid.UUID,
    programs: dict[str, Program],
    now: datetime,
) -> ApplicationRead:
    """File the caller's draft as it stands: the checks of a direct submission (``_submission_checks``:
    fraud bar, batch open, ...), then the same write - status ``screening``, filed now, the history's first
    row, the event - whose review the caller starts once the request commits (``workflow_client``)."""
    application = await own_draft(session, user=user, application_id=application_id, for_update=True)
    filing, metrics, cited = await _draft_as_filed(
        session, user=user, application=application, programs=programs, now=now, drafting=False
    )
    for check in await _submission_checks(session, filing, metrics=metrics, evidence=cited, now=now):
        await check()
    try:
        async with session.begin_nested():
            filed(application, programs, at=now)
            await session.flush()
    except IntegrityError:
        raise _duplicate(filing) from None
    await _submitted(session, application, user=user, now=now)
    return await application_read(session, user=user, application=application)


async def delete_draft(session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID) -> None:
    """Delete the caller's draft (and its citations of documents, not the documents)."""
    application = await own_draft(session, user=user, application_id=application_id, for_update=True)
    if not await repo.delete_draft(session, application.id):
        raise NotADraft("The application is no longer a draft.")


def can_see(user: CurrentUser, *, uscc: str, region_code: str, draft: bool = False) -> bool:
    """Who reads an application: admins, its own enterprise, and reviewers whose region covers it - a draft
    only its enterprise and admins (nobody reviews it)."""
    if user.role is Role.admin:
        return True
    if user.role is Role.enterprise:
        return user.uscc == uscc
    if user.role is Role.reviewer:
        return not draft and user.covers_region(region_code)
    return False


def can_see_application(user: CurrentUser, application: Application) -> bool:
    return can_see(
        user, uscc=application.uscc, region_code=application.region_code, draft=application.status == DRAFT
    )


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
        application = await repo.get_application(session, application_id)
        if application is None or application.status == DRAFT:
            raise NotFound(f"No application {application_id}.")
    else:
        application = await get_application(session, user=user, application_id=application_id)
    if application.status == DRAFT:
        raise NotADraft(
            "The application is a draft and has no review yet: submit it (POST /applications/{id}/submit) "
            "or delete it.",
        )


async def authorize_objection(session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID) -> None:
    """Anyone may object to an application on public notice (it is public); any other application is
    visible only to those who may read it, so nobody else learns whether an id exists."""
    application = await repo.get_application(session, application_id)
    if application is None or (
        application.status != "public_notice" and not can_see_application(user, application)
    ):
        raise NotFound(f"No application {application_id}.")


async def check_supplement(
    session: AsyncSession,
    *,
    user: CurrentUser,
    application_id: uuid.UUID,
    evidence: Sequence[uuid.UUID],
    metrics: DeclaredMetrics | None,
) -> None:
    """Before a supplement reaches the workflow: the application must be one the caller sees (404), every
    document it cites one of the application's enterprise's own (422 naming each other id), and corrected
    figures of years the enterprise existed in (422). Nothing is written either way."""
    application = await get_application(session, user=user, application_id=application_id)
    await evidence_documents(session, uscc=application.uscc, ids=evidence)
    enterprise = await repo.get_enterprise(session, application.uscc)
    if metrics is not None and enterprise is not None:
        check_figures(enterprise, metrics)


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
    rows = await repo.list_applications(
        session, region=region, filters=wanted, cursor=position, limit=limit, drafts=region is None
    )
    page, next_cursor = split_page(rows, limit, lambda a: (a.created_at, a.id))
    return Page(items=[ApplicationSummary.model_validate(a) for a in page], next_cursor=next_cursor)


@dataclass(frozen=True, slots=True)
class NoticeDetail:
    """What a staff list of applications on public notice shows beside each (``list_applications``): the
    enterprise's name, when the notice ends and the objections filed, oldest first."""

    enterprise_name: str
    notice_ends_at: datetime | None
    objections: list[ObjectionRead]


async def notice_details(
    session: AsyncSession, *, applications: Sequence[ApplicationSummary]
) -> dict[uuid.UUID, NoticeDetail]:
    """``NoticeDetail`` of each application of a page the caller has read (``list_applications`` decided
    which it may): two queries whatever the page's size."""
    ids = [a.id for a in applications]
    if not ids:
        return {}
    objections: dict[uuid.UUID, list[ObjectionRead]] = {i: [] for i in ids}
    for objection in await repo.objections_of(session, ids):
        objections[objection.application_id].append(ObjectionRead.model_validate(objection))
    return {
        row.application_id: NoticeDetail(
            enterprise_name=row.enterprise_name,
            notice_ends_at=row.notice_ends_at,
            objections=objections[row.application_id],
        )
        for row in await repo.notice_facts(session, ids)
    }


# --- the review queue -------------------------------------------------------------------------------------


def queue_scope(user: CurrentUser) -> repo.QueueScope:
    """The caller's review queue: the open tasks at its level in its region, and those escalated to one of its
    groups (a program's backup group sees them whatever its level and region). 403 for anyone but a
    reviewer."""
    if user.role is not Role.reviewer or user.level is None or user.region is None:
        raise Forbidden("The review queue is for reviewers.")
    return repo.QueueScope(level=user.level, region=user.region, groups=user.groups)


def in_queue(user: CurrentUser, task: ReviewTask) -> bool:
    """Whether the task is (or was, if closed) in the reviewer's queue (``queue_scope``, one row)."""
    if user.role is not Role.reviewer:
        return False
    if task.stage == user.level and user.covers_region(task.region_code):
        return True
    return task.escalated_to is not None and task.escalated_to in user.groups


def holder(task: ReviewTask, now: datetime) -> str | None:
    """Who holds the task at `now`: nobody once the claim has lapsed."""
    if task.claimed_by is None or task.claim_expires_at is None or task.claim_expires_at <= now:
        return None
    return task.claimed_by


# The columns of a review task its read model shows as they are; the rest depend on the moment.
TASK_COLUMNS = (
    "id",
    "application_id",
    "uscc",
    "enterprise_name",
    "tier",
    "program",
    "stage",
    "region_code",
    "created_at",
    "due_at",
    "escalated_to",
)


def task_read(task: ReviewTask, now: datetime) -> ReviewTaskRead:
    held = holder(task, now)
    return ReviewTaskRead(
        **{column: getattr(task, column) for column in TASK_COLUMNS},
        overdue=task.overdue or task.due_at <= now,
        claimed_by=held,
        claim_expires_at=task.claim_expires_at if held else None,
    )


def queue_counts(groups: Sequence[repo.QueueGroup]) -> QueueCounts:
    """The counts of a whole queue by each filter's values (``repo.queue_counts``): every stage, tier,
    lateness and assignee is named (0 when none), programs only when the queue holds some."""
    counts = QueueCounts(
        total=0,
        stage=dict.fromkeys(LEVELS, 0),
        tier=dict.fromkeys(TIERS, 0),
        program={},
        overdue={"true": 0, "false": 0},
        assignee={"me": 0, "none": 0, "others": 0},
    )
    kinds = dict.fromkeys(("open", "overdue", "me", "other"), 0)
    for g in groups:
        kinds[g.kind] += g.tasks
        if g.kind == "open":
            for facet, value in ((counts.stage, g.stage), (counts.tier, g.tier), (counts.program, g.program)):
                facet[value] = facet.get(value, 0) + g.tasks
    counts.total = kinds["open"]
    counts.overdue = {"true": kinds["overdue"], "false": kinds["open"] - kinds["overdue"]}
    counts.assignee = {
        "me": kinds["me"],
        "none": kinds["open"] - kinds["me"] - kinds["other"],
        "others": kinds["other"],
    }
    return counts


async def review_queue(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: QueueFilters,
    cursor: str | None,
    limit: int,
) -> ReviewQueuePage:
    """A page of the caller's queue (``queue_scope``) that passes `filters`, by due date (then id), with the
    counts of the whole queue."""
    position = decode_cursor(cursor)
    scope = queue_scope(user)
    now = datetime.now(UTC)
    rows = await repo.review_queue(
        session, scope=scope, filters=filters.model_dump(), me=user.sub, now=now, cursor=position, limit=limit
    )
    page, next_cursor = split_page(rows, limit, lambda t: (t.due_at, t.id))
    counts = queue_counts(await repo.queue_counts(session, scope=scope, me=user.sub, now=now))
    return ReviewQueuePage(items=[task_read(t, now) for t in page], next_cursor=next_cursor, counts=counts)


async def queue_page(
    session: AsyncSession,
    *,
    user: CurrentUser,
    filters: QueueFilters,
    cursor: str | None,
    limit: int,
) -> tuple[int, datetime | None, ReviewQueuePage]:
    """``review_queue``'s page with what a cache of pages keeps it by (services/applications/queue_views.py):
    the queue's version, read before the rows the page shows (so a change after it makes the page stale),
    and until when the clock alone leaves the page right (its next due date or claim expiry)."""
    decode_cursor(cursor)
    scope = queue_scope(user)
    version = await repo.queue_version(session, scope=scope)
    fresh_until = await repo.queue_fresh_until(session, scope=scope, now=datetime.now(UTC))
    page = await review_queue(session, user=user, filters=filters, cursor=cursor, limit=limit)
    return version, fresh_until, page


@dataclass(frozen=True, slots=True)
class TaskHold:
    """A review task as a page of the staff console shows it: its status, who holds it at the moment asked
    (``holder``) and until when, the group it was escalated to, and whether the caller's queue holds it (so
    whether the caller may claim or release it: ``queue_task``)."""

    task_id: uuid.UUID
    status: str
    stage: str
    due_at: datetime
    holder: str | None
    until: datetime | None
    escalated_to: str | None
    in_queue: bool


def _hold(user: CurrentUser, task: ReviewTask, now: datetime) -> TaskHold:
    held = holder(task, now)
    return TaskHold(
        task_id=task.id,
        status=task.status,
        stage=task.stage,
        due_at=task.due_at,
        holder=held,
        until=task.claim_expires_at if held else None,
        escalated_to=task.escalated_to,
        in_queue=user.role is Role.admin or in_queue(user, task),
    )


async def open_task_hold(
    session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID, now: datetime
) -> TaskHold | None:
    """The open review task of an application the caller has read (``get_application``), if any."""
    task = await repo.open_task_for(session, application_id)
    return _hold(user, task, now) if task is not None else None


async def task_hold(
    session: AsyncSession, *, user: CurrentUser, task_id: uuid.UUID, now: datetime
) -> TaskHold | None:
    """A task of the caller's queue (an admin: any), open or closed; None for any other, as for an id that
    does not exist."""
    task = await repo.get_task(session, task_id)
    if task is None or (user.role is not Role.admin and not in_queue(user, task)):
        return None
    return _hold(user, task, now)


async def queue_task(session: AsyncSession, *, user: CurrentUser, task_id: uuid.UUID) -> ReviewTask:
    """An open task of the caller's queue (an admin: any task); 404 for a task not in it, 409 for one that
    is closed (decided, returned, withdrawn)."""
    task = await repo.get_task(session, task_id)
    if task is None or (user.role is not Role.admin and not in_queue(user, task)):
        raise NotFound(f"No review task {task_id}.")
    if task.status != "open":
        raise _refused(task)
    return task


def _refused(task: ReviewTask) -> Conflict:
    """Why a task cannot be claimed, released or decided by the caller: it is closed, or someone holds it."""
    if task.status != "open":
        return Conflict(f"The review task is {task.status}; only an open task is claimed or released.")
    until = task.claim_expires_at.isoformat() if task.claim_expires_at else "it is released"
    return Conflict(f"Another reviewer ({task.claimed_by}) holds this review task until {until}.")


# Who claims a task: a reviewer whose queue holds it; who releases one: its holder, or an admin (any).
authorize_claim = role_check(Role.reviewer)
authorize_release = role_check(Role.reviewer, Role.admin)


async def claim_task(
    session: AsyncSession,
    *,
    user: CurrentUser,
    task_id: uuid.UUID,
    programs: dict[str, Program],
    now: datetime,
) -> ReviewTaskRead:
    """Hold a task of the caller's queue for the program's ``claim_ttl``: nobody else may claim or decide it
    until it is released, decided or the claim lapses. Claiming one's own task again renews the claim; one
    another reviewer holds is a 409."""
    task = await queue_task(session, user=user, task_id=task_id)
    program = programs.get(task.program)
    ttl = program.durations.claim_ttl if program else IsoDuration.parse(DEFAULT_CLAIM_TTL)
    claimed = await repo.set_claim(
        session, task.id, holder=user.sub, until=now + ttl.timedelta, now=now, over=user.sub
    )
    return await _claim_set(session, task, claimed, now)


async def release_task(
    session: AsyncSession, *, user: CurrentUser, task_id: uuid.UUID, now: datetime
) -> ReviewTaskRead:
    """Give up a claim: the holder's own (a task nobody holds stays so), or any claim for an admin; a task
    another reviewer holds is a 409."""
    task = await queue_task(session, user=user, task_id=task_id)
    over = None if user.role is Role.admin else user.sub
    released = await repo.set_claim(session, task.id, holder=None, until=None, now=now, over=over)
    return await _claim_set(session, task, released, now)


async def hold(
    session: AsyncSession,
    user: CurrentUser,
    key: str | None,
    *,
    task_id: uuid.UUID,
    verb: Literal["claim", "release"],
    programs: dict[str, Program],
    now: datetime,
) -> Any:
    """Claim or release a task once per caller and Idempotency-Key (``services.idempotency.once``), the role
    check first: under the API's name, ``POST /review-tasks/{id}/{verb}``, whichever door - the API or the
    console's form - the request came through, so that a key used at one is replayed at the other."""
    return await once(
        session,
        user,
        key,
        endpoint=f"POST /review-tasks/{task_id}/{verb}",
        payload={},
        authorize=lambda: (authorize_claim if verb == "claim" else authorize_release)(user),
        act=lambda: (
            claim_task(session, user=user, task_id=task_id, programs=programs, now=now)
            if verb == "claim"
            else release_task(session, user=user, task_id=task_id, now=now)
        ),
    )


async def _claim_set(
    session: AsyncSession, task: ReviewTask, changed: ReviewTask | None, now: datetime
) -> ReviewTaskRead:
    """The task as ``repo.set_claim`` left it; None when it was held by another, or closed, since it was
    read: a 409 saying which."""
    if changed is None:
        await session.refresh(task)
        raise _refused(task)
    return task_read(changed, now)


async def check_claim(
    session: AsyncSession, *, user: CurrentUser, application_id: uuid.UUID, now: datetime
) -> None:
    """Before a reviewer's decision: the open task, if it is in the caller's queue, is held by nobody else
    (409 otherwise). A reviewer whose queue does not hold it is left to the workflow's validator (403)."""
    task = await repo.open_task_for(session, application_id)
    if task is not None and in_queue(user, task) and holder(task, now) not in (None, user.sub):
        raise _refused(task)


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


async def renewable_recognition(
    session: AsyncSession,
    *,
    user: CurrentUser,
    recognition_id: uuid.UUID,
    metrics: DeclaredMetrics,
    evidence: Sequence[uuid.UUID],
) -> Recognition:
    """The caller's own active recognition, for its re-review (403 for any role but an enterprise, before
    any lookup; 404 for another's; 409 unless active), with figures of years the enterprise existed in and its
    own documents (422). Whether its window is open is the recognition's workflow's to say (409)."""
    user.require(Role.enterprise)
    recognition = await get_recognition(session, user=user, recognition_id=recognition_id)
    if recognition.status != "active":
        raise Conflict(f"The recognition is {recognition.status}; only an active one is re-reviewed.")
    if recognition.application_id is None:
        raise Conflict(
            "This recognition was imported from a ministry's list: the ministry re-reviews it; its next list "
            "(or an application) renews it."
        )
    enterprise = await repo.get_enterprise(session, recognition.uscc)
    assert enterprise is not None  # a foreign key
    check_figures(enterprise, metrics)
    await evidence_documents(session, uscc=recognition.uscc, ids=evidence)
    return recognition


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


@dataclass(frozen=True, slots=True)
class RecognitionCounts:
    """The recognitions a list shows, counted by tier and by province (region code ``500000``), most first."""

    by_tier: list[tuple[str, int]]
    by_province: list[tuple[str, int]]
    total: int


async def recognition_counts(
    session: AsyncSession, *, user: CurrentUser, filters: dict[str, Any]
) -> RecognitionCounts:
    """What ``list_recognitions`` lists with the same `filters` and caller, counted (the same access rule)."""
    _may_read_recognitions(user)
    wanted = dict(filters)
    valid_on = wanted.pop("valid_on", None)
    if user.role is Role.enterprise:
        if wanted.get("uscc") not in (None, user.uscc):
            return RecognitionCounts(by_tier=[], by_province=[], total=0)
        wanted["uscc"] = user.uscc
    rows = await repo.recognition_counts(session, filters=wanted, valid_on=valid_on)
    by_tier: dict[str, int] = {}
    by_province: dict[str, int] = {}
    for row in rows:
        by_tier[row.tier] = by_tier.get(row.tier, 0) + row.recognitions
        by_province[row.province] = by_province.get(row.province, 0) + row.recognitions

    def most_first(counts: dict[str, int]) -> list[tuple[str, int]]:
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    return RecognitionCounts(
        by_tier=most_first(by_tier), by_province=most_first(by_province), total=sum(by_tier.values())
    )


# --- certificates and what anyone may read ------------------------------------------------------------------


class CertificateRevoked(Conflict):
    slug, title = "certificate-revoked", "The recognition is revoked"


# Who downloads a certificate: its enterprise and admins.
CERTIFICATE_READERS = (Role.enterprise, Role.admin)


async def certificate(
    session: AsyncSession,
    *,
    user: CurrentUser,
    recognition_id: uuid.UUID,
    programs: dict[str, Program],
    verify_url: Callable[[str], str],
) -> certificates.Certificate:
    """The recognition's certificate (services/applications/certificates.py), its QR code and link pointing
    at ``verify_url(certificate_no)``: for its enterprise and admins (403 for other roles, before any lookup;
    404 for another enterprise's). An expired recognition keeps its certificate - the dates on it say when
    it held. A revoked one has none (409): a document that reads as a valid recognition is not handed out
    once the authority has withdrawn it, and the copies already out there verify as ``revoked``."""
    user.require(*CERTIFICATE_READERS)
    recognition = await get_recognition(session, user=user, recognition_id=recognition_id)
    if recognition.status == "revoked":
        raise CertificateRevoked(
            f"Recognition {recognition.certificate_no} was revoked; its certificate is no longer issued."
        )
    enterprise = await repo.get_enterprise(session, recognition.uscc)
    assert enterprise is not None  # a foreign key
    program = programs.get(recognition.program)
    tier = program.tiers.get(recognition.tier) if program else None  # type: ignore[call-overload]
    data = certificates.CertificateData(
        certificate_no=recognition.certificate_no,
        enterprise_name=enterprise.name,
        uscc=recognition.uscc,
        tier=recognition.tier,
        tier_name=tier.name if tier else recognition.tier,
        valid_from=recognition.valid_from,
        valid_until=recognition.valid_until,
        program_name=program.name if program else recognition.program,
        authority=program.authority if program else recognition.program,
        verify_url=verify_url(recognition.certificate_no),
    )
    # Rendering takes tens of milliseconds of CPU: off the event loop.
    return await anyio.to_thread.run_sync(certificates.issue, data)


def public_status(recognition: Recognition, now: datetime, *, renewing: bool = False) -> PublicStatus:
    """``valid``, ``expired`` (its validity ended, whether or not its workflow has marked it yet - unless its
    re-review is undecided (`renewing`): the title holds until the decision) or ``revoked``."""
    if recognition.status == "revoked":
        return "revoked"
    if recognition.status == "expired" or (recognition.valid_until <= now and not renewing):
        return "expired"
    return "valid"


async def verify_certificate(
    session: AsyncSession, *, certificate_no: str, now: datetime
) -> PublicRecognitionRead:
    """What anyone may learn from a certificate number: the enterprise's name, the tier, the validity and
    whether the recognition holds at `now`; 404 for a number no recognition holds."""
    found = await repo.recognition_by_certificate(session, certificate_no)
    if found is None:
        raise NotFound(f"No certificate {certificate_no}.")
    recognition, enterprise_name = found
    return PublicRecognitionRead(
        enterprise_name=enterprise_name,
        tier=cast(Tier, recognition.tier),
        valid_from=recognition.valid_from,
        valid_until=recognition.valid_until,
        status=public_status(
            recognition,
            now,
            renewing=recognition.valid_until <= now
            and recognition.status == "active"
            and await repo.re_review_pending(session, recognition.id),
        ),
    )


OBJECTION_TEXT = (
    "Anyone may file a real-name objection, with its evidence, while the notice lasts: signed in with any "
    'account, POST {"reason": ...} to the path. The authority verifies every objection; an upheld objection '
    "rejects the application."
)
OBJECTION_TEXT_ZH = (
    '公示期内，任何人均可实名提出异议并附证据：登录后向该路径提交（POST）{"reason": ...}。'
    "认定机构逐一核实，异议成立的，申请不予认定。"
)


async def public_notices(
    session: AsyncSession,
    *,
    tier: str | None,
    uscc: str | None,
    cursor: str | None,
    limit: int,
    programs: dict[str, Program],
    objection_path: Callable[[uuid.UUID], str],
) -> Page[PublicNoticeRead]:
    """The applications on public notice (公示), the notice ending soonest first: the enterprise's name and
    USCC, the tier, when the notice ends and how to object (``objection_path(application_id)``, the program's
    authority) - no figures, documents or reviews."""
    position = decode_cursor(cursor)
    rows = await repo.on_notice(session, tier=tier, uscc=uscc, cursor=position, limit=limit)
    page, next_cursor = split_page(rows, limit, lambda r: (r.notice_ends_at, r.application_id))
    items = []
    for row in page:
        program = programs.get(row.program)
        items.append(
            PublicNoticeRead(
                enterprise_name=row.enterprise_name,
                uscc=row.uscc,
                tier=cast(Tier, row.tier),
                notice_ends_at=row.notice_ends_at,
                how_to_object=HowToObject(
                    path=objection_path(row.application_id),
                    authority=program.authority if program else row.program,
                    text=OBJECTION_TEXT,
                    text_zh=OBJECTION_TEXT_ZH,
                ),
            )
        )
    return Page(items=items, next_cursor=next_cursor)
