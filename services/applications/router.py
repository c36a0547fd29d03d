"""HTTP routes of the applications domain: parse, call a service, return. Creations run once per
Idempotency-Key (``once``); the review actions do so in ``reviews``, which keys them by the application they
act on. The hot cached read, ``GET /applications/{id}``, is answered by services/applications/views.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.responses import Response

from services.applications import reviews, service
from services.applications import workflow_client as wf
from services.applications.schemas import (
    NO_NUL,
    USCC_PATTERN,
    ApplicationCreate,
    ApplicationRead,
    ApplicationSummary,
    DecisionCreate,
    DocumentRead,
    EnterpriseCreate,
    EnterpriseRead,
    ListFilters,
    ObjectionCreate,
    ObjectionFiled,
    ProgramRead,
    RecognitionRead,
    ResolutionCreate,
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
from services.errors import PayloadTooLarge, problem_responses
from services.idempotency import once
from services.pagination import CursorQuery, LimitQuery, Page, Rfc3339Query
from services.ratelimit import WriterDep
from services.vocabulary import Tier

router = APIRouter(route_class=StrictQueryRoute)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


# --- the hottest read first: routes are matched in order ------------------------------------------------


async def read_application(
    request: Request, application_id: uuid.UUID, user: CurrentUserDep, resources: ResourcesDep
) -> Response:
    """The hottest read: answered from the version-checked cache of rendered views when it can be, rendered
    through the ORM otherwise (services/applications/views.py)."""
    body = await resources.views.read(request, user, application_id)
    return Response(body, media_type="application/json")


router.add_api_route(
    "/applications/{application_id}",
    read_application,
    methods=["GET"],
    response_model=ApplicationRead,
    tags=["applications"],
    responses=problem_responses(401, 403, 404, 422),
    route_class_override=CachedViewRoute,
)


# --- programs --------------------------------------------------------------------------------------------


@router.get(
    "/programs", response_model=list[ProgramRead], tags=["programs"], responses=problem_responses(422)
)
async def list_programs(resources: ResourcesDep) -> list[ProgramRead]:
    return service.list_programs(resources.programs)


# --- enterprises -----------------------------------------------------------------------------------------


@router.post(
    "/enterprises",
    status_code=201,
    response_model=EnterpriseRead,
    tags=["enterprises"],
    responses=problem_responses(401, 403, 409, 413, 422, 429),
)
async def register_enterprise(
    data: EnterpriseCreate, user: WriterDep, session: SessionDep, idempotency_key: IdempotencyKey = None
) -> Any:
    return await once(
        session,
        user,
        idempotency_key,
        endpoint="POST /enterprises",
        payload=data,
        status_code=201,
        authorize=lambda: service.authorize_registration(user),
        act=lambda: service.register_enterprise(session, user=user, data=data),
    )


@router.get(
    "/enterprises/{uscc}",
    response_model=EnterpriseRead,
    tags=["enterprises"],
    responses=problem_responses(401, 404, 422),
)
async def read_enterprise(
    uscc: Annotated[str, Path(pattern=USCC_PATTERN)], user: CurrentUserDep, session: SessionDep
) -> EnterpriseRead:
    return await service.read_enterprise(session, user=user, uscc=uscc)


# --- documents -------------------------------------------------------------------------------------------


@router.post(
    "/documents",
    status_code=201,
    response_model=DocumentRead,
    tags=["applications"],
    responses=problem_responses(401, 403, 409, 413, 422, 429),
)
async def upload_document(
    user: WriterDep,
    session: SessionDep,
    resources: ResourcesDep,
    kind: Annotated[str, Form(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")],
    file: Annotated[UploadFile, File(description="PDF, PNG or JPEG evidence")],
) -> Any:
    limit = resources.settings.max_upload_bytes
    content = await file.read(limit + 1)
    if len(content) > limit:
        raise PayloadTooLarge(f"An evidence file may be at most {limit} bytes.")
    return await service.store_document(
        session,
        user=user,
        data_dir=resources.settings.data_dir,
        kind=kind,
        filename=file.filename or "upload",
        content_type=(file.content_type or "application/octet-stream").split(";")[0].strip(),
        content=content,
    )


# --- applications ----------------------------------------------------------------------------------------


@router.post(
    "/applications",
    status_code=201,
    response_model=ApplicationRead,
    tags=["applications"],
    responses=problem_responses(401, 403, 409, 413, 422, 429, 503),
)
async def submit_application(
    data: ApplicationCreate,
    user: WriterDep,
    session: SessionDep,
    resources: ResourcesDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    return await once(
        session,
        user,
        idempotency_key,
        endpoint="POST /applications",
        payload=data,
        status_code=201,
        authorize=lambda: service.authorize_submission(user),
        act=lambda: service.create_application(
            session, user=user, data=data, programs=resources.programs, now=datetime.now(UTC)
        ),
        then=lambda body: wf.start_after_commit(
            session,
            temporal,
            application_id=body.id,
            programs=resources.programs,
            task_queue=resources.settings.temporal_task_queue,
        ),
    )


@router.get(
    "/applications",
    response_model=Page[ApplicationSummary],
    tags=["applications"],
    responses=problem_responses(401, 403, 422),
)
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


@router.post("/applications/{application_id}/decisions", tags=["reviews"], **ACTION)
async def decide(application_id: uuid.UUID, data: DecisionCreate, actions: ActionsDep) -> Any:
    return await actions.decide(application_id, data)


@router.post("/applications/{application_id}/supplements", tags=["applications"], **ACTION)
async def supplement(application_id: uuid.UUID, data: SupplementCreate, actions: ActionsDep) -> Any:
    return await actions.supplement(application_id, data)


@router.post("/applications/{application_id}/withdraw", tags=["applications"], **ACTION)
async def withdraw(application_id: uuid.UUID, actions: ActionsDep, data: WithdrawCreate | None = None) -> Any:
    return await actions.withdraw(application_id, data or WithdrawCreate())


@router.post(
    "/applications/{application_id}/objections",
    status_code=201,
    response_model=ObjectionFiled,
    tags=["reviews"],
    responses=ACTION_ERRORS,
)
async def file_objection(application_id: uuid.UUID, data: ObjectionCreate, actions: ActionsDep) -> Any:
    return await actions.object_to(application_id, data)


@router.post("/objections/{objection_id}/resolution", tags=["reviews"], **ACTION)
async def resolve_objection(objection_id: uuid.UUID, data: ResolutionCreate, actions: ActionsDep) -> Any:
    return await actions.resolve_objection(objection_id, data)


# --- review queue ----------------------------------------------------------------------------------------


@router.get(
    "/review-tasks",
    response_model=Page[ReviewTaskRead],
    tags=["reviews"],
    responses=problem_responses(401, 403, 422),
)
async def review_tasks(
    user: CurrentUserDep, session: SessionDep, limit: LimitQuery = 50, cursor: CursorQuery = None
) -> Page[ReviewTaskRead]:
    return await service.review_queue(session, user=user, cursor=cursor, limit=limit)


# --- recognitions ----------------------------------------------------------------------------------------


@router.get(
    "/recognitions",
    response_model=Page[RecognitionRead],
    tags=["recognitions"],
    responses=problem_responses(401, 403, 422),
)
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


@router.get(
    "/recognitions/{recognition_id}",
    response_model=RecognitionRead,
    tags=["recognitions"],
    responses=problem_responses(401, 403, 404, 422),
)
async def read_recognition(
    recognition_id: uuid.UUID, user: CurrentUserDep, session: SessionDep
) -> RecognitionRead:
    return await service.read_recognition(session, user=user, recognition_id=recognition_id)


@router.post("/recognitions/{recognition_id}/revocation", tags=["recognitions"], **ACTION)
async def revoke(recognition_id: uuid.UUID, data: RevocationCreate, actions: ActionsDep) -> Any:
    return await actions.revoke(recognition_id, data)
