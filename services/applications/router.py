"""HTTP routes of the applications domain: parse, call a service, return. Creations run once per
Idempotency-Key (``once``); the review actions do so in ``reviews``, which keys them by the application they
act on. The hot cached read, ``GET /applications/{id}``, is answered by services/applications/views.py.
The routes are grouped by resource, one router each under its OpenAPI tag (``ROUTERS``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.responses import Response

from services.applications import reviews, service
from services.applications import workflow_client as wf
from services.applications.queue_views import CachedQueueRoute
from services.applications.schemas import (
    KIND_PATTERN,
    NO_NUL,
    USCC_PATTERN,
    ApplicationCreate,
    ApplicationRead,
    ApplicationSummary,
    Assignee,
    DecisionCreate,
    DocumentFilters,
    DocumentRead,
    DraftCheck,
    DraftUpdate,
    EnterpriseCreate,
    EnterpriseRead,
    ListFilters,
    ObjectionCreate,
    ObjectionFiled,
    ProgramRead,
    QueueFilters,
    RecognitionRead,
    ReReviewCreate,
    ReReviewFiledRead,
    ResolutionCreate,
    ReviewQueuePage,
    ReviewStateRead,
    ReviewTaskRead,
    RevocationCreate,
    StageName,
    StatusName,
    SupplementCreate,
    WithdrawCreate,
)
from services.applications.views import CachedViewRoute
from services.deps import (
    CurrentUserDep,
    ListingDep,
    ResourcesDep,
    SessionDep,
    StrictQueryRoute,
    TemporalDep,
)
from services.errors import READ_ERRORS, READ_ONE_ERRORS, problem_responses
from services.files import file_responses
from services.idempotency import IdempotencyKey
from services.pagination import Page, Rfc3339Query
from services.ratelimit import WriterDep
from services.vocabulary import Tier
from services.writes import Write, WriteDep

CREATE_ERRORS = problem_responses(401, 403, 409, 413, 422, 429, 503)
"""A creation that stores a file or starts a workflow (503: the store or Temporal unreachable)."""


def _resource(tag: str) -> APIRouter:
    """The routes of one resource, under its OpenAPI tag."""
    return APIRouter(tags=[tag], route_class=StrictQueryRoute)


applications_api = _resource("applications")
programs_api = _resource("programs")
enterprises_api = _resource("enterprises")
documents_api = _resource("documents")
reviews_api = _resource("reviews")
recognitions_api = _resource("recognitions")


# --- the hottest read first: routes are matched in order ------------------------------------------------


async def read_application(
    request: Request, application_id: uuid.UUID, user: CurrentUserDep, resources: ResourcesDep
) -> Response:
    """The hottest read: answered from the version-checked cache of rendered views when it can be, rendered
    through the ORM otherwise (services/applications/views.py)."""
    body = await resources.views.read(request, user, application_id)
    return Response(body, media_type="application/json")


applications_api.add_api_route(
    "/applications/{application_id}",
    read_application,
    methods=["GET"],
    response_model=ApplicationRead,
    responses=READ_ONE_ERRORS,
    route_class_override=CachedViewRoute,
)


# --- programs --------------------------------------------------------------------------------------------


@programs_api.get("/programs", response_model=list[ProgramRead], responses=problem_responses(422))
async def list_programs(resources: ResourcesDep) -> list[ProgramRead]:
    return service.list_programs(resources.programs)


# --- enterprises -----------------------------------------------------------------------------------------


@enterprises_api.post(
    "/enterprises",
    status_code=201,
    response_model=EnterpriseRead,
    responses=problem_responses(401, 403, 409, 413, 422, 429),
)
async def register_enterprise(data: EnterpriseCreate, write: WriteDep) -> Any:
    return await write.once(
        endpoint="POST /enterprises",
        payload=data,
        status_code=201,
        authorize=lambda: service.authorize_registration(write.user),
        act=lambda: service.register_enterprise(write.session, user=write.user, data=data),
    )


@enterprises_api.get(
    "/enterprises/{uscc}",
    response_model=EnterpriseRead,
    responses=problem_responses(401, 404, 422),
)
async def read_enterprise(
    uscc: Annotated[str, Path(pattern=USCC_PATTERN)],
    user: CurrentUserDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> EnterpriseRead:
    return await service.read_enterprise(session, user=user, uscc=uscc, programs=resources.programs)


# --- documents -------------------------------------------------------------------------------------------


@documents_api.post("/documents", status_code=201, response_model=DocumentRead, responses=CREATE_ERRORS)
async def upload_document(
    write: WriteDep,
    resources: ResourcesDep,
    kind: Annotated[str, Form(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")],
    file: Annotated[UploadFile, File(description="PDF, PNG or JPEG evidence")],
) -> Any:
    settings = resources.settings
    upload = await service.receive_upload(
        file,
        storage=resources.storage,
        filename=file.filename,
        content_type=file.content_type,
        limit=settings.max_upload_bytes,
    )
    with upload:  # the staged copy goes either way (into the store if the document was written)
        return await write.once(
            endpoint="POST /documents",
            payload=service.upload_fingerprint(upload, kind=kind),
            status_code=201,
            authorize=lambda: service.authorize_upload(write.session, user=write.user),
            act=lambda: service.store_document(write.session, user=write.user, kind=kind, upload=upload),
        )


@documents_api.get("/documents", response_model=Page[DocumentRead], responses=READ_ERRORS)
async def list_documents(
    listing: ListingDep,
    application_id: uuid.UUID | None = None,
    kind: Annotated[str | None, Query(pattern=KIND_PATTERN)] = None,
    uscc: Annotated[str | None, Query(pattern=USCC_PATTERN)] = None,
) -> Page[DocumentRead]:
    """Evidence documents the caller may read: an enterprise its own, a reviewer those cited by applications
    in its region, an admin all; oldest first."""
    return await service.list_documents(
        listing.session,
        user=listing.user,
        filters=DocumentFilters(application_id=application_id, kind=kind, uscc=uscc),
        **listing.page,
    )


@documents_api.get("/documents/{document_id}", response_model=DocumentRead, responses=READ_ONE_ERRORS)
async def read_document(document_id: uuid.UUID, user: CurrentUserDep, session: SessionDep) -> DocumentRead:
    return await service.read_document(session, user=user, document_id=document_id)


@documents_api.get(
    "/documents/{document_id}/content",
    response_class=Response,
    responses={
        **file_responses(sorted(service.ALLOWED_DOCUMENT_TYPES)),
        **problem_responses(401, 403, 404, 422, 503),
    },
)
async def document_content(
    document_id: uuid.UUID,
    user: CurrentUserDep,
    session: SessionDep,
    resources: ResourcesDep,
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=2000)] = None,
    if_range: Annotated[str | None, Header(alias="If-Range", max_length=200)] = None,
) -> Response:
    """The document's content, streamed: `ETag` (its SHA-256), `If-None-Match` (304), one byte range
    (`Range: bytes=first-last`, 206; outside the file: 416), `Content-Disposition: attachment`."""
    stored = await service.document_file(
        session, user=user, document_id=document_id, storage=resources.storage
    )
    return await stored.answer(range_header=range_header, if_none_match=if_none_match, if_range=if_range)


# --- applications ----------------------------------------------------------------------------------------


@applications_api.post(
    "/applications",
    status_code=201,
    response_model=ApplicationRead,
    responses=CREATE_ERRORS,
)
async def submit_application(
    data: ApplicationCreate, write: WriteDep, resources: ResourcesDep, temporal: TemporalDep
) -> Any:
    """Submit an application: its review (screening first) starts at once. With `"submit": false`, save a
    `draft` instead, which starts nothing: only its enterprise (and admins) see it, until it is submitted."""
    return await write.once(
        endpoint="POST /applications",
        payload=data,
        status_code=201,
        authorize=lambda: service.authorize_submission(write.user),
        act=lambda: service.create_application(
            write.session, user=write.user, data=data, programs=resources.programs, now=datetime.now(UTC)
        ),
        then=_review_starter(write.session, temporal, resources),
    )


def _review_starter(
    session: SessionDep, temporal: TemporalDep, resources: ResourcesDep
) -> Callable[[ApplicationRead], Awaitable[None]]:
    """The write-then-start protocol's second half for a submitted application (commit, then start its
    review: ``workflow_client.start_after_commit``); a draft starts nothing."""

    async def start(body: ApplicationRead) -> None:
        if body.status != "draft":
            await wf.start_after_commit(
                session,
                temporal,
                application=body,
                programs=resources.programs,
                task_queue=resources.settings.temporal_task_queue,
            )

    return start


# --- drafts: saved, edited, checked and submitted by their enterprise -------------------------------------

DRAFT_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 429)


@applications_api.patch(
    "/applications/{application_id}",
    response_model=ApplicationRead,
    responses=DRAFT_ERRORS,
)
async def update_draft(
    application_id: uuid.UUID,
    data: DraftUpdate,
    user: WriterDep,
    session: SessionDep,
    resources: ResourcesDep,
) -> ApplicationRead:
    """Change the caller's draft: `tier`, `batch`, `metrics`, `evidence` (each given replaces the draft's).
    409 once it is submitted."""
    return await service.update_draft(
        session,
        user=user,
        application_id=application_id,
        data=data,
        programs=resources.programs,
        now=datetime.now(UTC),
    )


@applications_api.delete(
    "/applications/{application_id}",
    status_code=204,
    response_class=Response,
    responses=DRAFT_ERRORS,
)
async def delete_draft(application_id: uuid.UUID, user: WriterDep, session: SessionDep) -> Response:
    """Delete the caller's draft (its documents stay). 409 once it is submitted: withdraw it instead."""
    await service.delete_draft(session, user=user, application_id=application_id)
    return Response(status_code=204)


@applications_api.post(
    "/applications/{application_id}/check",
    response_model=DraftCheck,
    responses=DRAFT_ERRORS,
)
async def check_draft(
    application_id: uuid.UUID, user: WriterDep, session: SessionDep, resources: ResourcesDep
) -> DraftCheck:
    """Preview the caller's draft: screened as a submission now would be (its batch's ruleset, a reason per
    rule), and every refusal a submission now would meet. Nothing is stored."""
    return await service.check_draft(
        session, user=user, application_id=application_id, programs=resources.programs, now=datetime.now(UTC)
    )


@applications_api.post(
    "/applications/{application_id}/submit",
    response_model=ApplicationRead,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 429, 503),
)
async def submit_draft(
    application_id: uuid.UUID, write: WriteDep, resources: ResourcesDep, temporal: TemporalDep
) -> Any:
    """Submit the caller's draft as it stands, with the checks of a direct submission (fraud bar, batch
    open, evidence, ...); its review starts at once. 409 once it is submitted."""
    return await write.once(
        endpoint=f"POST /applications/{application_id}/submit",
        payload={},
        authorize=lambda: service.authorize_submission(write.user),
        act=lambda: service.submit_draft(
            write.session,
            user=write.user,
            application_id=application_id,
            programs=resources.programs,
            now=datetime.now(UTC),
        ),
        then=_review_starter(write.session, temporal, resources),
    )


@applications_api.get("/applications", response_model=Page[ApplicationSummary], responses=READ_ERRORS)
async def list_applications(
    listing: ListingDep,
    status: StatusName | None = None,
    tier: Tier | None = None,
    stage: StageName | None = None,
    program: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    uscc: Annotated[str | None, Query(pattern=USCC_PATTERN)] = None,
) -> Page[ApplicationSummary]:
    return await service.list_applications(
        listing.session,
        user=listing.user,
        filters=ListFilters(status=status, tier=tier, stage=stage, program=program, uscc=uscc),
        **listing.page,
    )


ACTION_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 429, 503)
ACTION: dict[str, Any] = {"response_model": ReviewStateRead, "responses": ACTION_ERRORS}


async def _actions(
    user: WriterDep, session: SessionDep, temporal: TemporalDep, idempotency_key: IdempotencyKey = None
) -> reviews.Actions:
    return reviews.Actions(session, temporal, user, idempotency_key)


ActionsDep = Annotated[reviews.Actions, Depends(_actions)]


@reviews_api.post("/applications/{application_id}/decisions", **ACTION)
async def decide(application_id: uuid.UUID, data: DecisionCreate, actions: ActionsDep) -> Any:
    return await actions.decide(application_id, data)


@applications_api.post("/applications/{application_id}/supplements", **ACTION)
async def supplement(application_id: uuid.UUID, data: SupplementCreate, actions: ActionsDep) -> Any:
    return await actions.supplement(application_id, data)


@applications_api.post("/applications/{application_id}/withdraw", **ACTION)
async def withdraw(application_id: uuid.UUID, actions: ActionsDep, data: WithdrawCreate | None = None) -> Any:
    return await actions.withdraw(application_id, data or WithdrawCreate())


@reviews_api.post(
    "/applications/{application_id}/objections",
    status_code=201,
    response_model=ObjectionFiled,
    responses=ACTION_ERRORS,
)
async def file_objection(application_id: uuid.UUID, data: ObjectionCreate, actions: ActionsDep) -> Any:
    return await actions.object_to(application_id, data)


@reviews_api.post("/objections/{objection_id}/resolution", **ACTION)
async def resolve_objection(objection_id: uuid.UUID, data: ResolutionCreate, actions: ActionsDep) -> Any:
    return await actions.resolve_objection(objection_id, data)


# --- review queue ----------------------------------------------------------------------------------------


async def review_tasks(
    request: Request,
    listing: ListingDep,
    resources: ResourcesDep,
    program: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    tier: Tier | None = None,
    stage: StageName | None = None,
    overdue: Annotated[bool | None, Query(description="past its SLA (or not)")] = None,
    assignee: Annotated[
        Assignee | None, Query(description="`me`: held by the caller; `none`: by nobody")
    ] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=NO_NUL, description="USCC or enterprise name prefix"),
    ] = None,
) -> Response:
    """The caller's queue: the open tasks at its level in its region and those escalated to its groups, by
    due date (then id), with the counts of the whole queue per filter value. Answered from the cache of
    rendered pages when it can be (services/applications/queue_views.py)."""
    body = await resources.queue_pages.read(
        request,
        listing.session,
        user=listing.user,
        filters=QueueFilters(
            program=program, tier=tier, stage=stage, overdue=overdue, assignee=assignee, q=q
        ),
        **listing.page,
    )
    return Response(body, media_type="application/json")


reviews_api.add_api_route(
    "/review-tasks",
    review_tasks,
    methods=["GET"],
    response_model=ReviewQueuePage,
    responses=READ_ERRORS,
    route_class_override=CachedQueueRoute,
)


CLAIM_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 429)


@reviews_api.post("/review-tasks/{task_id}/claim", response_model=ReviewTaskRead, responses=CLAIM_ERRORS)
async def claim_task(task_id: uuid.UUID, write: WriteDep) -> Any:
    """Hold the task for the program's `claim_ttl`: one holder at a time (409 if another reviewer holds it;
    claiming one's own again renews it)."""
    return await _hold(write, task_id, "claim")


@reviews_api.post("/review-tasks/{task_id}/release", response_model=ReviewTaskRead, responses=CLAIM_ERRORS)
async def release_task(task_id: uuid.UUID, write: WriteDep) -> Any:
    """Give the task back: only its holder may (an admin may release any claim); 409 otherwise."""
    return await _hold(write, task_id, "release")


async def _hold(write: Write, task_id: uuid.UUID, verb: Literal["claim", "release"]) -> Any:
    programs, now = write.resources.programs, datetime.now(UTC)
    return await service.hold(
        write.session, write.user, write.key, task_id=task_id, verb=verb, programs=programs, now=now
    )


# --- recognitions ----------------------------------------------------------------------------------------


@recognitions_api.get("/recognitions", response_model=Page[RecognitionRead], responses=READ_ERRORS)
async def list_recognitions(
    listing: ListingDep,
    uscc: Annotated[str | None, Query(pattern=USCC_PATTERN)] = None,
    tier: Tier | None = None,
    certificate_no: Annotated[str | None, Query(max_length=80, pattern=NO_NUL)] = None,
    status: Annotated[str | None, Query(pattern="^(active|expired|revoked)$")] = None,
    valid_on: Rfc3339Query = None,
) -> Page[RecognitionRead]:
    return await service.list_recognitions(
        listing.session,
        user=listing.user,
        filters={
            "uscc": uscc,
            "tier": tier,
            "certificate_no": certificate_no,
            "status": status,
            "valid_on": valid_on,
        },
        **listing.page,
    )


@recognitions_api.get(
    "/recognitions/{recognition_id}",
    response_model=RecognitionRead,
    responses=READ_ONE_ERRORS,
)
async def read_recognition(
    recognition_id: uuid.UUID, user: CurrentUserDep, session: SessionDep
) -> RecognitionRead:
    return await service.read_recognition(session, user=user, recognition_id=recognition_id)


@recognitions_api.post(
    "/recognitions/{recognition_id}/re-review",
    status_code=201,
    response_model=ReReviewFiledRead,
    responses=ACTION_ERRORS,
)
async def file_re_review(recognition_id: uuid.UUID, data: ReReviewCreate, actions: ActionsDep) -> Any:
    """The re-review (复核) of the caller's recognition, with its current figures and evidence, while its
    window is open (the program's `durations.re_review_window` before `valid_until`; 409 otherwise, or once
    filed). The recognition holds while the re-review is undecided; approval extends it by the program's
    validity, anything else ends it at the later of its expiry and the decision."""
    return await actions.file_re_review(recognition_id, data)


@recognitions_api.post("/recognitions/{recognition_id}/revocation", **ACTION)
async def revoke(recognition_id: uuid.UUID, data: RevocationCreate, actions: ActionsDep) -> Any:
    return await actions.revoke(recognition_id, data)


ROUTERS: list[APIRouter] = [
    applications_api,  # the hottest read first: routes are matched in order
    programs_api,
    enterprises_api,
    documents_api,
    reviews_api,
    recognitions_api,
]
"""Every route of the domain, by resource: each router mounted on the app itself (services/routes.py)."""
