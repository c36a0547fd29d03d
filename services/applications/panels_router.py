"""Expert panels over HTTP: the pool (admin), declared conflicts (admin or the expert), and the experts' blind
files and answers (services/applications/panels.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.applications import panel_schemas as schemas
from services.applications import panels
from services.applications.schemas import RegionCode
from services.auth import Role
from services.deps import CurrentUserDep, ListingDep, SessionDep, TemporalDep
from services.errors import READ_ERRORS, READ_ONE_ERRORS, problem_responses
from services.idempotency import IdempotencyKey
from services.pagination import Page
from services.ratelimit import WriterDep
from services.writes import WriteDep

router = APIRouter(tags=["expert panels"])

ExpertPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


@router.post(
    "/experts",
    status_code=201,
    response_model=schemas.ExpertRead,
    responses=problem_responses(401, 403, 409, 422, 429),
)
async def register_expert(data: schemas.ExpertCreate, write: WriteDep) -> Any:
    async def admin() -> None:
        write.user.require(Role.admin)

    return await write.once(
        endpoint="POST /experts",
        payload=data,
        status_code=201,
        authorize=admin,
        act=lambda: panels.register_expert(write.session, user=write.user, data=data),
    )


@router.get("/experts", response_model=Page[schemas.ExpertRead], responses=READ_ERRORS)
async def list_experts(listing: ListingDep, region_code: Annotated[RegionCode | None, Query()] = None) -> Any:
    return await panels.list_experts(
        listing.session, user=listing.user, region_code=region_code, **listing.page
    )


@router.post(
    "/experts/{expert_id}/conflicts",
    status_code=201,
    response_model=schemas.ConflictRead,
    responses=problem_responses(401, 403, 404, 409, 422, 429),
)
async def declare_conflict(expert_id: ExpertPath, data: schemas.ConflictCreate, write: WriteDep) -> Any:
    return await write.once(
        endpoint=f"POST /experts/{expert_id}/conflicts",
        payload=data,
        status_code=201,
        act=lambda: panels.declare_conflict(write.session, user=write.user, expert_id=expert_id, data=data),
    )


@router.get("/panel-assignments", response_model=Page[schemas.AssignmentSummary], responses=READ_ERRORS)
async def list_assignments(listing: ListingDep) -> Any:
    return await panels.list_assignments(listing.session, user=listing.user, **listing.page)


@router.get("/panel-assignments/{assignment_id}", response_model=schemas.BlindFile, responses=READ_ONE_ERRORS)
async def read_assignment(assignment_id: uuid.UUID, user: CurrentUserDep, session: SessionDep) -> Any:
    return await panels.blind_file(session, user=user, assignment_id=assignment_id)


@router.post(
    "/panel-assignments/{assignment_id}/score",
    response_model=schemas.ScoreRead,
    responses=problem_responses(401, 403, 404, 409, 422, 429, 503),
)
async def score(
    assignment_id: uuid.UUID,
    data: schemas.ScoreCreate,
    user: WriterDep,
    session: SessionDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    return await panels.score(
        session, temporal, user=user, key=idempotency_key, assignment_id=assignment_id, data=data
    )


@router.get("/panels", response_model=Page[schemas.PanelRead], responses=READ_ERRORS)
async def list_panels(application_id: uuid.UUID, user: CurrentUserDep, session: SessionDep) -> Any:
    """The draws of an application's panels, for audit: seed, pool snapshot, chosen, seats, decision."""
    return await panels.list_panels(session, user=user, application_id=application_id)
