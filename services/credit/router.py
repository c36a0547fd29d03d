"""HTTP routes of the credit domain (benefits, credit lines, drawdowns, disbursements). Routes parse, call the
service and return; the request's session commits once after the route returns."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.credit import service
from services.credit.schemas import (
    KEY_PATTERN,
    USCC_PATTERN,
    ApprovalCreate,
    BenefitRead,
    BridgeLoanCreate,
    BridgeLoanRead,
    CreditLineRead,
    DisbursementFilters,
    DisbursementPage,
    DrawdownCreate,
    DrawdownRead,
    FundRead,
    ListingCreate,
    ListingRewardRead,
    Page,
    Tier,
)
from services.deps import CurrentUserDep, ResourcesDep, SessionDep, TemporalDep
from services.errors import problem_responses
from services.idempotency import Replay, begin
from services.pagination import CursorQuery, LimitQuery
from services.ratelimit import WriterDep

router = APIRouter(tags=["credit"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        pattern=r"^[!-~](?:[ -~]*[!-~])?$",
        description="A retry with the same key and body returns the first response; the same key with "
        "another body is a 422.",
    ),
]
UsccQuery = Annotated[str | None, Query(pattern=USCC_PATTERN)]
ProgramQuery = Annotated[str | None, Query(pattern=KEY_PATTERN)]
READ_ERRORS = problem_responses(401, 403, 422)
WRITE_ERRORS = problem_responses(401, 403, 404, 409, 422, 429, 503)


def _replay(replay: Replay) -> JSONResponse:
    return JSONResponse(replay.body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"})


@router.get("/benefits", response_model=Page[BenefitRead], responses=READ_ERRORS)
async def list_benefits(
    session: SessionDep,
    user: CurrentUserDep,
    uscc: UsccQuery = None,
    recognition_id: uuid.UUID | None = None,
    kind: Literal["credit_line", "bridge_loan", "listing_reward"] | None = None,
    status: Literal["active", "frozen"] | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[BenefitRead]:
    """What each recognition triggered and its state: enterprises see their own, finance and admin all."""
    return await service.list_benefits(
        session,
        user=user,
        uscc=uscc,
        recognition_id=recognition_id,
        kind=kind,
        status=status,
        cursor=cursor,
        limit=limit,
    )


@router.get("/credit-lines", response_model=Page[CreditLineRead], responses=READ_ERRORS)
async def list_credit_lines(
    session: SessionDep,
    user: CurrentUserDep,
    uscc: UsccQuery = None,
    status: Literal["active", "frozen"] | None = None,
    program: ProgramQuery = None,
    tier: Tier | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[CreditLineRead]:
    """Credit lines with `limit`, `reserved`, `drawn`, `available` and `status`."""
    return await service.list_credit_lines(
        session, user=user, uscc=uscc, status=status, program=program, tier=tier, cursor=cursor, limit=limit
    )


@router.get(
    "/credit-lines/{line_id}", response_model=CreditLineRead, responses=problem_responses(401, 403, 404, 422)
)
async def get_credit_line(line_id: uuid.UUID, session: SessionDep, user: CurrentUserDep) -> CreditLineRead:
    return await service.get_credit_line(session, user=user, line_id=line_id)


@router.post(
    "/credit-lines/{line_id}/drawdowns", status_code=201, response_model=DrawdownRead, responses=WRITE_ERRORS
)
async def request_drawdown(
    line_id: uuid.UUID,
    body: DrawdownCreate,
    session: SessionDep,
    user: WriterDep,
    resources: ResourcesDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Reserve `amount` on the owner's line at once (409 when it is more than `available`); finance then
    approves or rejects it before the program's approval deadline, which otherwise releases it."""
    slot = await begin(
        session,
        caller=user.sub,
        key=idempotency_key,
        endpoint=f"POST /credit-lines/{line_id}/drawdowns",
        payload=body.model_dump(mode="json"),
    )
    if isinstance(slot, Replay):
        return _replay(slot)
    drawdown = await service.request_drawdown(
        session,
        user=user,
        line_id=line_id,
        data=body,
        programs=resources.programs,
        temporal=temporal,
        task_queue=resources.settings.temporal_task_queue,
    )
    if slot is not None:
        await slot.store(201, drawdown.model_dump(mode="json"))
    return drawdown


@router.get(
    "/drawdowns/{drawdown_id}", response_model=DrawdownRead, responses=problem_responses(401, 403, 404, 422)
)
async def get_drawdown(drawdown_id: uuid.UUID, session: SessionDep, user: CurrentUserDep) -> DrawdownRead:
    """The drawdown, its approvals, the disbursement's status and bank reference, and its ledger entries."""
    return await service.get_drawdown(session, user=user, drawdown_id=drawdown_id)


@router.post("/drawdowns/{drawdown_id}/approvals", response_model=DrawdownRead, responses=WRITE_ERRORS)
async def decide_drawdown(
    drawdown_id: uuid.UUID,
    body: ApprovalCreate,
    session: SessionDep,
    user: WriterDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Finance only, never the requester; above the program's threshold two distinct approvers are needed.
    The response is the drawdown's new state."""
    slot = await begin(
        session,
        caller=user.sub,
        key=idempotency_key,
        endpoint=f"POST /drawdowns/{drawdown_id}/approvals",
        payload=body.model_dump(mode="json"),
    )
    if isinstance(slot, Replay):
        return _replay(slot)
    drawdown = await service.decide_drawdown(
        session, user=user, drawdown_id=drawdown_id, data=body, temporal=temporal
    )
    if slot is not None:
        await slot.store(200, drawdown.model_dump(mode="json"))
    return drawdown


@router.get(
    "/disbursements",
    response_model=DisbursementPage,
    responses={
        **READ_ERRORS,
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "A JSON page, or every matching row as CSV for `Accept: text/csv`",
        },
    },
)
async def list_disbursements(
    request: Request,
    session: SessionDep,
    user: CurrentUserDep,
    status: Literal["pending", "paid", "failed"] | None = None,
    uscc: UsccQuery = None,
    tier: Tier | None = None,
    program: ProgramQuery = None,
    date_from: Annotated[date | None, Query(alias="from", description="created on or after")] = None,
    date_to: Annotated[date | None, Query(alias="to", description="created on or before")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Any:
    """Filtered disbursements with totals per status; `Accept: text/csv` streams every matching row."""
    filters = DisbursementFilters(
        status=status, uscc=uscc, tier=tier, program=program, date_from=date_from, date_to=date_to
    )
    if "text/csv" in request.headers.get("accept", ""):
        rows = service.disbursements_csv(session, user=user, filters=filters)
        return StreamingResponse(
            rows,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="disbursements.csv"'},
        )
    return await service.list_disbursements(session, user=user, filters=filters, cursor=cursor, limit=limit)


@router.get("/funds", response_model=Page[FundRead], responses=READ_ERRORS)
async def list_funds(session: SessionDep, user: CurrentUserDep, resources: ResourcesDep) -> Page[FundRead]:
    """Each bridge fund pool: `capacity`, `committed`, `available` (finance and admin)."""
    return await service.list_funds(session, user=user, programs=resources.programs)


@router.post("/bridge-loans", status_code=201, response_model=BridgeLoanRead, responses=WRITE_ERRORS)
async def request_bridge_loan(
    body: BridgeLoanCreate,
    session: SessionDep,
    user: WriterDep,
    resources: ResourcesDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Commit a bridge loan from the fund of the program the enterprise's recognition qualifies for; never
    beyond the fund's available capacity (409), the per-use cap or the fund's term (422)."""
    slot = await begin(
        session,
        caller=user.sub,
        key=idempotency_key,
        endpoint="POST /bridge-loans",
        payload=body.model_dump(mode="json"),
    )
    if isinstance(slot, Replay):
        return _replay(slot)
    loan = await service.request_bridge_loan(session, user=user, data=body, programs=resources.programs)
    if slot is not None:
        await slot.store(201, loan.model_dump(mode="json"))
    return loan


@router.post(
    "/enterprises/{uscc}/listings", status_code=201, response_model=ListingRewardRead, responses=WRITE_ERRORS
)
async def report_listing(
    uscc: Annotated[str, Path(pattern=USCC_PATTERN)],
    body: ListingCreate,
    session: SessionDep,
    user: WriterDep,
    resources: ResourcesDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """The owner (or an admin) reports a listing; the board's one-time reward is granted once per enterprise
    and board (409 after that)."""
    slot = await begin(
        session,
        caller=user.sub,
        key=idempotency_key,
        endpoint=f"POST /enterprises/{uscc}/listings",
        payload=body.model_dump(mode="json"),
    )
    if isinstance(slot, Replay):
        return _replay(slot)
    reward = await service.report_listing(
        session, user=user, uscc=uscc, data=body, programs=resources.programs
    )
    if slot is not None:
        await slot.store(201, reward.model_dump(mode="json"))
    return reward
