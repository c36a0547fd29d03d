"""HTTP routes of the applications domain: parse, call a service, return."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Header, Path, Query, Request, UploadFile
from fastapi.responses import Response

from services.applications import repository as repo
from services.applications import service
from services.applications import workflow_client as wf
from services.applications.models import Application, Transition
from services.applications.schemas import (
    NO_NUL,
    USCC_PATTERN,
    ApplicationCreate,
    ApplicationRead,
    ApplicationSummary,
    BatchRead,
    DecisionCreate,
    DocumentRead,
    EnterpriseCreate,
    EnterpriseRead,
    HistoryEntry,
    ListFilters,
    ObjectionCreate,
    ObjectionFiled,
    ObjectionRead,
    ProgramRead,
    ProgramTierRead,
    RecognitionRead,
    ResolutionCreate,
    ReviewStateRead,
    ReviewTaskInfo,
    ReviewTaskRead,
    RevocationCreate,
    StageName,
    StatusName,
    SupplementCreate,
    TierHeld,
    WithdrawCreate,
)
from services.applications.views import READERS, ApplicationViews, ViewsDep, audience
from services.auth import CurrentUser, Role, TokenVerifier
from services.contracts import (
    DecisionRequest,
    ObjectionRequest,
    ObjectionResolution,
    ReviewState,
    ReviewUpdate,
    RevokeRequest,
    SupplementRequest,
    WithdrawRequest,
)
from services.deps import (
    CurrentUserDep,
    ResourcesDep,
    SessionDep,
    StrictQueryRoute,
    TemporalDep,
)
from services.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, problem_responses
from services.idempotency import Replay, begin, once, replay_response
from services.pagination import CursorQuery, LimitQuery, Page, Rfc3339Query
from services.ratelimit import WriterDep
from services.vocabulary import Tier

router = APIRouter(route_class=StrictQueryRoute)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
AUTH = (401, 403, 404, 422)


def _state(state: ReviewState) -> ReviewStateRead:
    return ReviewStateRead.model_validate(state.model_dump())


# --- the hottest read first: routes are matched in order ------------------------------------------------


class CachedViewRoute(StrictQueryRoute):
    """``GET /applications/{id}``: a request that carries no query, a bearer token this API has verified and
    remembers, and a canonical id is answered from the view cache (``ApplicationViews.answer``) before
    FastAPI solves any dependency. Anything else - a miss included - takes the route's ordinary handler,
    which answers exactly as it would have: the shortcut can only answer what the ordinary path answers
    from the same cache."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        ordinary = super().get_route_handler()

        async def handler(request: Request) -> Response:
            body = await _cached_answer(request)
            if body is not None:
                return Response(body, media_type="application/json")
            return await ordinary(request)

        return handler


async def _cached_answer(request: Request) -> bytes | None:
    if request.scope.get("query_string"):
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    verifier: TokenVerifier = request.app.state.verifier
    user = verifier.remembered(token)
    if user is None:
        return None
    raw = request.path_params.get("application_id", "")
    try:
        application_id = uuid.UUID(raw)
    except ValueError:
        return None
    if str(application_id) != raw:  # only the canonical spelling; the ordinary path judges the others
        return None
    views: ApplicationViews = request.app.state.application_views
    return await views.answer(user, application_id)


async def read_application(application_id: uuid.UUID, user: CurrentUserDep, views: ViewsDep) -> Response:
    """The hottest read: answered from the version-checked cache of rendered views when it can be
    (services/applications/views.py), rendered through the ORM otherwise."""
    user.require(*READERS)  # before the lookup: says nothing about ids
    cached = await views.answer(user, application_id)
    if cached is not None:
        return Response(cached, media_type="application/json")
    async with views.open_session() as session:  # a read: closed without a commit
        application = await service.get_application(session, user=user, application_id=application_id)
        version = application.version  # read before the rows the view shows: a later change makes it stale
        body = (await _read(session, user, application)).model_dump_json(by_alias=True).encode()
    views.store(application_id, audience(user), version, body)
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
    today = datetime.now(UTC).date()
    out = []
    for program in resources.programs.values():
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
    user.require(Role.enterprise, Role.admin)

    async def register() -> EnterpriseRead:
        return EnterpriseRead.model_validate(await service.register_enterprise(session, user=user, data=data))

    return await once(
        session,
        user,
        idempotency_key,
        endpoint="POST /enterprises",
        payload=data,
        status_code=201,
        act=register,
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
    enterprise = await service.get_enterprise(session, user=user, uscc=uscc)
    body = EnterpriseRead.model_validate(enterprise)
    tiers = await repo.current_tiers(session, enterprise.uscc, datetime.now(UTC))
    body.current_tiers = [TierHeld.model_validate(r) for r in tiers]
    return body


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
    document = await service.store_document(
        session,
        user=user,
        data_dir=resources.settings.data_dir,
        kind=kind,
        filename=file.filename or "upload",
        content_type=(file.content_type or "application/octet-stream").split(";")[0].strip(),
        content=content,
    )
    return DocumentRead.model_validate(document)


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
    user.require(Role.enterprise)

    async def create() -> ApplicationRead:
        application = await service.create_application(
            session, user=user, data=data, programs=resources.programs, now=datetime.now(UTC)
        )
        return await _read(session, user, application)

    return await once(
        session,
        user,
        idempotency_key,
        endpoint="POST /applications",
        payload=data,
        status_code=201,
        act=create,
        then=lambda body: wf.start_after_commit(
            session,
            temporal,
            application_id=body.id,
            programs=resources.programs,
            task_queue=resources.settings.temporal_task_queue,
        ),
    )


async def _read(session: SessionDep, user: CurrentUser, application: Application) -> ApplicationRead:
    body = ApplicationRead.model_validate(application)
    task = await repo.open_task_for(session, application.id)
    body.task = ReviewTaskInfo.model_validate(task) if task else None
    body.documents = [
        DocumentRead.model_validate(d) for d in await repo.application_documents(session, application.id)
    ]
    body.objections = [
        ObjectionRead.model_validate(o) for o in await repo.objections_for(session, application.id)
    ]
    body.history = [_history(t, user) for t in await repo.transitions_for(session, application.id)]
    return body


def _history(transition: Transition, user: CurrentUser) -> HistoryEntry:
    entry = HistoryEntry.model_validate(transition)
    if user.role is Role.enterprise:
        entry.internal_note = None
        if transition.role == "reviewer":
            entry.actor = "reviewer"
    return entry


@router.get(
    "/applications",
    response_model=Page[ApplicationSummary],
    tags=["applications"],
    responses=problem_responses(401, 403, 422),
)
async def list_applications(
    user: CurrentUserDep,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    status: StatusName | None = None,
    tier: Tier | None = None,
    stage: StageName | None = None,
    program: Annotated[str | None, Query(max_length=64, pattern=NO_NUL)] = None,
    uscc: Annotated[str | None, Query(pattern=USCC_PATTERN)] = None,
) -> Page[ApplicationSummary]:
    return await service.list_applications(
        session,
        user=user,
        filters=ListFilters(status=status, tier=tier, stage=stage, program=program, uscc=uscc),
        cursor=cursor,
        limit=limit,
    )


async def _act(
    session: SessionDep,
    temporal: TemporalDep,
    user: CurrentUser,
    *,
    application_id: uuid.UUID,
    name: ReviewUpdate,
    arg: Any,
    payload: Any,
    idempotency_key: str | None,
) -> Any:
    """Send one action to the application's workflow, replaying the stored answer for a retried key.

    A reviewer outside the application's level or region learns it exists (403, as the review rules
    require); every other caller who may not see it gets 404."""
    if user.role is Role.reviewer:
        if await repo.get_application(session, application_id) is None:
            raise NotFound(f"No application {application_id}.")
    else:
        await service.get_application(session, user=user, application_id=application_id)
    slot = await begin(
        session,
        caller=user.identity,
        key=idempotency_key,
        endpoint=f"POST /applications/{application_id}/{name}",
        payload=payload,
    )
    if isinstance(slot, Replay):
        return replay_response(slot)
    update_id = f"{name}-{user.identity}-{idempotency_key}" if idempotency_key else None
    state = _state(
        await wf.send_update(temporal, application_id=application_id, name=name, arg=arg, update_id=update_id)
    )
    if slot is not None:
        await slot.store(200, state.model_dump(mode="json"))
    return state


ACTION_ERRORS = problem_responses(401, 403, 404, 409, 413, 422, 429, 503)


@router.post(
    "/applications/{application_id}/decisions",
    response_model=ReviewStateRead,
    tags=["reviews"],
    responses=ACTION_ERRORS,
)
async def decide(
    application_id: uuid.UUID,
    data: DecisionCreate,
    user: WriterDep,
    session: SessionDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    user.require(Role.reviewer)
    request = DecisionRequest(
        actor=service.actor_of(user),
        stage=data.stage,
        decision=data.decision,
        reason=data.reason,
        internal_note=data.internal_note,
    )
    return await _act(
        session,
        temporal,
        user,
        application_id=application_id,
        name="decide",
        arg=request,
        payload=data.model_dump(mode="json"),
        idempotency_key=idempotency_key,
    )


@router.post(
    "/applications/{application_id}/supplements",
    response_model=ReviewStateRead,
    tags=["applications"],
    responses=ACTION_ERRORS,
)
async def supplement(
    application_id: uuid.UUID,
    data: SupplementCreate,
    user: WriterDep,
    session: SessionDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    user.require(Role.enterprise)
    await service.check_supplement(session, user=user, application_id=application_id, evidence=data.evidence)
    request = SupplementRequest(actor=service.actor_of(user), note=data.note)
    return await _act(
        session,
        temporal,
        user,
        application_id=application_id,
        name="supplement",
        arg=request,
        payload=data.model_dump(mode="json"),
        idempotency_key=idempotency_key,
    )


@router.post(
    "/applications/{application_id}/withdraw",
    response_model=ReviewStateRead,
    tags=["applications"],
    responses=ACTION_ERRORS,
)
async def withdraw(
    application_id: uuid.UUID,
    user: WriterDep,
    session: SessionDep,
    temporal: TemporalDep,
    data: WithdrawCreate | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    user.require(Role.enterprise)
    data = data or WithdrawCreate()
    request = WithdrawRequest(actor=service.actor_of(user), reason=data.reason)
    return await _act(
        session,
        temporal,
        user,
        application_id=application_id,
        name="withdraw",
        arg=request,
        payload=data.model_dump(mode="json"),
        idempotency_key=idempotency_key,
    )


@router.post(
    "/applications/{application_id}/objections",
    status_code=201,
    response_model=ObjectionFiled,
    tags=["reviews"],
    responses=ACTION_ERRORS,
)
async def file_objection(
    application_id: uuid.UUID,
    data: ObjectionCreate,
    user: WriterDep,
    session: SessionDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    # Anyone may object to an application on public notice (it is public); any other application is
    # visible only to those who may read it, so nobody else learns whether an id exists.
    application = await repo.get_application(session, application_id)
    if application is None or (
        application.status != "public_notice" and not service.can_see_application(user, application)
    ):
        raise NotFound(f"No application {application_id}.")
    slot = await begin(
        session,
        caller=user.identity,
        key=idempotency_key,
        endpoint=f"POST /applications/{application_id}/objections",
        payload=data.model_dump(mode="json"),
    )
    if isinstance(slot, Replay):
        return replay_response(slot)
    objection_id = uuid.uuid4()
    request = ObjectionRequest(
        actor=service.actor_of(user), objection_id=str(objection_id), reason=data.reason
    )
    state = await wf.send_update(
        temporal,
        application_id=application_id,
        name="object",
        arg=request,
        update_id=f"object-{user.identity}-{idempotency_key}" if idempotency_key else None,
    )
    body = ObjectionFiled(objection_id=objection_id, state=_state(state))
    if slot is not None:
        await slot.store(201, body.model_dump(mode="json"))
    return body


@router.post(
    "/objections/{objection_id}/resolution",
    response_model=ReviewStateRead,
    tags=["reviews"],
    responses=ACTION_ERRORS,
)
async def resolve_objection(
    objection_id: uuid.UUID,
    data: ResolutionCreate,
    user: WriterDep,
    session: SessionDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    user.require(Role.reviewer)
    _, application = await service.objection_application(session, user=user, objection_id=objection_id)
    request = ObjectionResolution(
        actor=service.actor_of(user), objection_id=str(objection_id), upheld=data.upheld, reason=data.reason
    )
    return await _act(
        session,
        temporal,
        user,
        application_id=application.id,
        name="resolve_objection",
        arg=request,
        payload=data.model_dump(mode="json"),
        idempotency_key=idempotency_key,
    )


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
    user: CurrentUserDep,
    session: SessionDep,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
    uscc: Annotated[str | None, Query(pattern=USCC_PATTERN)] = None,
    tier: Tier | None = None,
    certificate_no: Annotated[str | None, Query(max_length=80, pattern=NO_NUL)] = None,
    status: Annotated[str | None, Query(pattern="^(active|expired|revoked)$")] = None,
    valid_on: Rfc3339Query = None,
) -> Page[RecognitionRead]:
    if user.role is Role.reviewer:
        raise Forbidden("Recognitions are read by their enterprise, finance and admins.")
    return await service.list_recognitions(
        session,
        user=user,
        filters={
            "uscc": uscc,
            "tier": tier,
            "certificate_no": certificate_no,
            "status": status,
            "valid_on": valid_on,
        },
        cursor=cursor,
        limit=limit,
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
    if user.role is Role.reviewer:
        raise Forbidden("Recognitions are read by their enterprise, finance and admins.")
    return RecognitionRead.model_validate(
        await service.get_recognition(session, user=user, recognition_id=recognition_id)
    )


@router.post(
    "/recognitions/{recognition_id}/revocation",
    response_model=ReviewStateRead,
    tags=["recognitions"],
    responses=ACTION_ERRORS,
)
async def revoke(
    recognition_id: uuid.UUID,
    data: RevocationCreate,
    user: WriterDep,
    session: SessionDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    user.require(Role.admin)
    recognition = await service.get_recognition(session, user=user, recognition_id=recognition_id)
    if recognition.status != "active":
        raise Conflict(f"The recognition is {recognition.status}; only an active one can be revoked.")
    request = RevokeRequest(actor=service.actor_of(user), reason=data.reason)
    return await _act(
        session,
        temporal,
        user,
        application_id=recognition.application_id,
        name="revoke",
        arg=request,
        payload=data.model_dump(mode="json"),
        idempotency_key=idempotency_key,
    )
