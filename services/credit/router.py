"""HTTP routes of the credit domain (benefits, credit lines, drawdowns, disbursements, bridge-loan funds and
loans, listing rewards). Routes parse, call the service and return; the request's session commits once after
the route returns."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse

from services.credit import funds, payouts, service
from services.credit.schemas import (
    KEY_PATTERN,
    USCC_PATTERN,
    ApprovalCreate,
    BenefitRead,
    BridgeLoanCreate,
    BridgeLoanRead,
    BridgeLoanStatus,
    CreditLineRead,
    DisbursementFilters,
    DisbursementPage,
    DrawdownCreate,
    DrawdownRead,
    FundRead,
    ListingCreate,
    ListingRewardRead,
    RepaymentCreate,
)
from services.deps import (
    CurrentUserDep,
    ResourcesDep,
    SessionDep,
    StreamingReadSessionDep,
    StrictQueryRoute,
    TemporalDep,
)
from services.errors import problem_responses
from services.idempotency import once
from services.pagination import CursorQuery, LimitQuery, Page
from services.ratelimit import WriterDep
from services.vocabulary import BenefitKind, BenefitStatus, DisbursementStatus, PayoutKind, PayoutStatus, Tier

router = APIRouter(tags=["credit"], route_class=StrictQueryRoute)

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


@router.get("/benefits", response_model=Page[BenefitRead], responses=READ_ERRORS)
async def list_benefits(
    session: SessionDep,
    user: CurrentUserDep,
    uscc: UsccQuery = None,
    recognition_id: uuid.UUID | None = None,
    kind: BenefitKind | None = None,
    status: BenefitStatus | None = None,
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
    status: BenefitStatus | None = None,
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
    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /credit-lines/{line_id}/drawdowns",
        payload=body,
        status_code=201,
        authorize=lambda: service.authorize_drawdown(session, user=user, line_id=line_id),
        act=lambda: service.request_drawdown(
            session, user=user, line_id=line_id, data=body, programs=resources.programs
        ),
        then=lambda drawdown: payouts.start_after_commit(
            session,
            temporal,
            kind="drawdown",
            payout_id=drawdown.id,
            task_queue=resources.settings.temporal_task_queue,
        ),
    )


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
    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /drawdowns/{drawdown_id}/approvals",
        payload=body,
        status_code=200,
        authorize=lambda: payouts.authorize_decision(
            session, user=user, kind="drawdown", payout_id=drawdown_id
        ),
        act=lambda: service.decide_drawdown(
            session,
            user=user,
            drawdown_id=drawdown_id,
            data=body,
            temporal=temporal,
            retry=idempotency_key is not None,
        ),
    )


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
    session: StreamingReadSessionDep,
    user: CurrentUserDep,
    kind: PayoutKind | None = None,
    status: DisbursementStatus | None = None,
    uscc: UsccQuery = None,
    tier: Tier | None = None,
    program: ProgramQuery = None,
    date_from: Annotated[date | None, Query(alias="from", description="created on or after")] = None,
    date_to: Annotated[date | None, Query(alias="to", description="created on or before")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Any:
    """Filtered disbursements of every kind of payout (drawdowns, bridge loans, listing rewards) with totals
    per status; `Accept: text/csv` streams every matching row."""
    filters = DisbursementFilters(
        kind=kind, status=status, uscc=uscc, tier=tier, program=program, date_from=date_from, date_to=date_to
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
    """Each bridge fund: `capacity`, `committed` (= `reserved` by loans awaiting approval or payment + `lent`
    and not repaid), `available` (finance and admin)."""
    return await funds.list_funds(session, user=user, programs=resources.programs)


@router.post("/bridge-loans", status_code=201, response_model=BridgeLoanRead, responses=WRITE_ERRORS)
async def request_bridge_loan(
    body: BridgeLoanCreate,
    session: SessionDep,
    user: WriterDep,
    resources: ResourcesDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Reserve a bridge loan in the fund of the program the enterprise's recognition qualifies for; never
    beyond the fund's available capacity (409), the per-use cap or the fund's term (422). Finance approves
    or rejects it (`POST /bridge-loans/{id}/approvals`) before the program's approval deadline, which
    otherwise releases it; approved, it is paid through the bank and falls due `term_days` working days
    (Mon-Fri) after approval."""
    return await once(
        session,
        user,
        idempotency_key,
        endpoint="POST /bridge-loans",
        payload=body,
        status_code=201,
        authorize=lambda: funds.authorize_bridge_loan(user),
        act=lambda: funds.request_bridge_loan(session, user=user, data=body, programs=resources.programs),
        then=lambda loan: payouts.start_after_commit(
            session,
            temporal,
            kind="bridge_loan",
            payout_id=loan.id,
            task_queue=resources.settings.temporal_task_queue,
        ),
    )


@router.get("/bridge-loans", response_model=Page[BridgeLoanRead], responses=READ_ERRORS)
async def list_bridge_loans(
    session: SessionDep,
    user: CurrentUserDep,
    status: BridgeLoanStatus | None = None,
    uscc: UsccQuery = None,
    program: ProgramQuery = None,
    overdue: Annotated[bool | None, Query(description="paid out, not repaid and past due")] = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[BridgeLoanRead]:
    """Bridge loans, newest first: enterprises see their own, finance and admin all."""
    return await funds.list_bridge_loans(
        session,
        user=user,
        uscc=uscc,
        status=status,
        program=program,
        overdue=overdue,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/bridge-loans/{loan_id}", response_model=BridgeLoanRead, responses=problem_responses(401, 403, 404, 422)
)
async def get_bridge_loan(loan_id: uuid.UUID, session: SessionDep, user: CurrentUserDep) -> BridgeLoanRead:
    """The loan, its approvals, due date and `overdue` flag, the disbursement and the ledger entries."""
    return await funds.get_bridge_loan(session, user=user, loan_id=loan_id)


@router.post("/bridge-loans/{loan_id}/approvals", response_model=BridgeLoanRead, responses=WRITE_ERRORS)
async def decide_bridge_loan(
    loan_id: uuid.UUID,
    body: ApprovalCreate,
    session: SessionDep,
    user: WriterDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Finance only, never the requester; above the program's threshold two distinct approvers are needed.
    A rejection releases the reservation. The response is the loan's new state."""
    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /bridge-loans/{loan_id}/approvals",
        payload=body,
        status_code=200,
        authorize=lambda: payouts.authorize_decision(
            session, user=user, kind="bridge_loan", payout_id=loan_id
        ),
        act=lambda: funds.decide_bridge_loan(
            session,
            user=user,
            loan_id=loan_id,
            data=body,
            temporal=temporal,
            retry=idempotency_key is not None,
        ),
    )


@router.post("/bridge-loans/{loan_id}/repayment", response_model=BridgeLoanRead, responses=WRITE_ERRORS)
async def repay_bridge_loan(
    loan_id: uuid.UUID,
    body: RepaymentCreate,
    session: SessionDep,
    user: WriterDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Finance or admin (never the requester) records the repayment of a loan paid out (409 otherwise) in full
    (422 for another amount): the fund's capacity is freed and the payment's ledger entry is mirrored."""
    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /bridge-loans/{loan_id}/repayment",
        payload=body,
        status_code=200,
        authorize=lambda: funds.authorize_repayment(session, user=user, loan_id=loan_id),
        act=lambda: funds.repay_bridge_loan(
            session, user=user, loan_id=loan_id, data=body, temporal=temporal
        ),
    )


@router.post(
    "/enterprises/{uscc}/listings", status_code=201, response_model=ListingRewardRead, responses=WRITE_ERRORS
)
async def report_listing(
    uscc: Annotated[str, Path(pattern=USCC_PATTERN)],
    body: ListingCreate,
    session: SessionDep,
    user: WriterDep,
    resources: ResourcesDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """The owner (or an admin) reports a listing; the board's one-time reward is requested once per
    enterprise and board (409 after that, whatever became of the first). Finance approves it
    (`POST /listing-rewards/{id}/approvals`) before the program's approval deadline; then the bank pays it."""
    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /enterprises/{uscc}/listings",
        payload=body,
        status_code=201,
        authorize=lambda: funds.authorize_listing(user, uscc),
        act=lambda: funds.report_listing(
            session, user=user, uscc=uscc, data=body, programs=resources.programs
        ),
        then=lambda reward: payouts.start_after_commit(
            session,
            temporal,
            kind="listing_reward",
            payout_id=reward.id,
            task_queue=resources.settings.temporal_task_queue,
        ),
    )


@router.get("/listing-rewards", response_model=Page[ListingRewardRead], responses=READ_ERRORS)
async def list_listing_rewards(
    session: SessionDep,
    user: CurrentUserDep,
    status: PayoutStatus | None = None,
    uscc: UsccQuery = None,
    board: Annotated[str | None, Query(pattern=KEY_PATTERN)] = None,
    program: ProgramQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[ListingRewardRead]:
    """Listing rewards, newest first: enterprises see their own, finance and admin all."""
    return await funds.list_listing_rewards(
        session,
        user=user,
        uscc=uscc,
        status=status,
        board=board,
        program=program,
        cursor=cursor,
        limit=limit,
    )


@router.get(
    "/listing-rewards/{reward_id}",
    response_model=ListingRewardRead,
    responses=problem_responses(401, 403, 404, 422),
)
async def get_listing_reward(
    reward_id: uuid.UUID, session: SessionDep, user: CurrentUserDep
) -> ListingRewardRead:
    """The reward, its approvals, the disbursement and the ledger entry."""
    return await funds.get_listing_reward(session, user=user, reward_id=reward_id)


@router.post(
    "/listing-rewards/{reward_id}/approvals", response_model=ListingRewardRead, responses=WRITE_ERRORS
)
async def decide_listing_reward(
    reward_id: uuid.UUID,
    body: ApprovalCreate,
    session: SessionDep,
    user: WriterDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Finance only, never the reporter; the response is the reward's new state."""
    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /listing-rewards/{reward_id}/approvals",
        payload=body,
        status_code=200,
        authorize=lambda: payouts.authorize_decision(
            session, user=user, kind="listing_reward", payout_id=reward_id
        ),
        act=lambda: funds.decide_listing_reward(
            session,
            user=user,
            reward_id=reward_id,
            data=body,
            temporal=temporal,
            retry=idempotency_key is not None,
        ),
    )
