"""HTTP routes of the credit domain (benefits, credit lines, drawdowns, disbursements, bridge-loan funds and
loans, listing rewards). Routes parse, call the service and return; the request's session commits once after
the route returns."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from services import writes
from services.credit import funds, payouts, repayments, service
from services.credit.inbox import InboxRoute
from services.credit.schemas import (
    KEY_PATTERN,
    USCC_PATTERN,
    ApprovalCreate,
    BenefitRead,
    BridgeLoanCreate,
    BridgeLoanRead,
    BridgeLoanStatus,
    CreditLineRead,
    DisbursementPage,
    DrawdownCreate,
    DrawdownRead,
    DrawdownRepaymentCreate,
    DrawdownRepaymentRead,
    FundCapacityChangeCreate,
    FundCapacityChangeRead,
    FundRead,
    InboxStatus,
    ListFilters,
    ListingCreate,
    ListingRewardRead,
    Money,
    PayoutInboxItem,
    PayoutRead,
    RepaymentCreate,
)
from services.deps import (
    CurrentUserDep,
    ListingDep,
    ResourcesDep,
    SessionDep,
    StreamingReadSessionDep,
    StrictQueryRoute,
    TemporalDep,
)
from services.errors import READ_ERRORS, READ_ONE_ERRORS, problem_responses
from services.idempotency import KEY_REQUIRED, IdempotencyKey, require_key
from services.pagination import CursorQuery, IsoDate, LimitQuery, Page
from services.ratelimit import WriterDep
from services.vocabulary import BenefitKind, BenefitStatus, DisbursementStatus, PayoutKind, PayoutStatus, Tier

router = APIRouter(tags=["credit"], route_class=StrictQueryRoute)

UsccQuery = Annotated[str | None, Query(pattern=USCC_PATTERN)]
ProgramQuery = Annotated[str | None, Query(pattern=KEY_PATTERN)]
FromQuery = Annotated[IsoDate | None, Query(alias="from", description="created on or after (UTC day)")]
ToQuery = Annotated[IsoDate | None, Query(alias="to", description="created on or before (UTC day)")]
RequestedFromQuery = Annotated[
    IsoDate | None, Query(alias="from", description="requested on or after (UTC day)")
]
RequestedToQuery = Annotated[
    IsoDate | None, Query(alias="to", description="requested on or before (UTC day)")
]
WRITE_ERRORS = problem_responses(401, 403, 404, 409, 422, 429, 503)
COLLECTIONS: dict[PayoutKind, str] = {
    "drawdown": "drawdowns",
    "bridge_loan": "bridge-loans",
    "listing_reward": "listing-rewards",
}
"""Each kind's path: a decision is ``POST /{collection}/{id}/approvals``, its idempotency record's endpoint
whether the API or the console (services/console/finance.py) takes it."""


class Write(writes.Write):
    """``services.writes.Write`` with Temporal: a payout's write starts its workflow once the request commits
    (``request_payout``, ``decide``)."""

    def __init__(
        self,
        user: WriterDep,
        session: SessionDep,
        resources: ResourcesDep,
        temporal: TemporalDep,
        idempotency_key: IdempotencyKey = None,
    ) -> None:
        super().__init__(user, session, resources, idempotency_key)
        self.temporal = temporal

    async def request_payout(
        self,
        kind: PayoutKind,
        endpoint: str,
        body: BaseModel,
        *,
        authorize: Callable[[], Awaitable[object]],
        act: Callable[[], Awaitable[PayoutRead]],
    ) -> Any:
        """A payout requested (201): once the request commits, its workflow starts."""

        async def start(payout: PayoutRead) -> None:
            queue = self.resources.settings.temporal_task_queue
            await payouts.start_after_commit(
                self.session, self.temporal, kind=kind, payout_id=payout.id, task_queue=queue
            )

        return await self.once(
            endpoint=endpoint, payload=body, status_code=201, authorize=authorize, act=act, then=start
        )

    async def decide(self, kind: PayoutKind, payout_id: uuid.UUID, body: ApprovalCreate) -> Any:
        """A finance officer's decision; the response is the payout's new state."""
        session, user = self.session, self.user
        return await self.once(
            endpoint=f"POST /{COLLECTIONS[kind]}/{payout_id}/approvals",
            payload=body,
            authorize=lambda: payouts.authorize_decision(session, user=user, kind=kind, payout_id=payout_id),
            act=lambda: payouts.decide(
                session,
                user=user,
                kind=kind,
                payout_id=payout_id,
                data=body,
                temporal=self.temporal,
                retry=self.key is not None,
                task_queue=self.resources.settings.temporal_task_queue,
            ),
        )


WriteDep = Annotated[Write, Depends()]


@router.get("/benefits", response_model=Page[BenefitRead], responses=READ_ERRORS)
async def list_benefits(
    listing: ListingDep,
    uscc: UsccQuery = None,
    recognition_id: uuid.UUID | None = None,
    kind: BenefitKind | None = None,
    status: BenefitStatus | None = None,
) -> Page[BenefitRead]:
    """What each recognition triggered and its state: enterprises see their own, finance and admin all."""
    filters = ListFilters(uscc=uscc, recognition_id=recognition_id, kind=kind, status=status)
    return await service.list_benefits(listing.session, user=listing.user, filters=filters, **listing.page)


@router.get("/credit-lines", response_model=Page[CreditLineRead], responses=READ_ERRORS)
async def list_credit_lines(
    listing: ListingDep,
    uscc: UsccQuery = None,
    status: BenefitStatus | None = None,
    program: ProgramQuery = None,
    tier: Tier | None = None,
) -> Page[CreditLineRead]:
    """Credit lines with `limit`, `reserved`, `drawn`, `available` and `status`."""
    filters = ListFilters(uscc=uscc, status=status, program=program, tier=tier)
    return await service.list_credit_lines(
        listing.session, user=listing.user, filters=filters, **listing.page
    )


@router.get("/credit-lines/{line_id}", response_model=CreditLineRead, responses=READ_ONE_ERRORS)
async def get_credit_line(line_id: uuid.UUID, session: SessionDep, user: CurrentUserDep) -> CreditLineRead:
    return await service.get_credit_line(session, user=user, line_id=line_id)


@router.post(
    "/credit-lines/{line_id}/drawdowns", status_code=201, response_model=DrawdownRead, responses=WRITE_ERRORS
)
async def request_drawdown(line_id: uuid.UUID, body: DrawdownCreate, write: WriteDep) -> Any:
    """Reserve `amount` on the owner's line at once (409 when it is more than `available`); finance then
    approves or rejects it before the program's approval deadline, which otherwise releases it."""
    session, user, programs = write.session, write.user, write.resources.programs
    return await write.request_payout(
        "drawdown",
        f"POST /credit-lines/{line_id}/drawdowns",
        body,
        authorize=lambda: service.authorize_drawdown(session, user=user, line_id=line_id),
        act=lambda: service.request_drawdown(
            session, user=user, line_id=line_id, data=body, programs=programs
        ),
    )


@dataclass(frozen=True)
class InboxQuery:
    """What a request for the finance inbox asks: the page (``listing``), and the filters as its query gives
    them, the ``ListFilters`` of the same names."""

    listing: ListingDep
    kind: PayoutKind | None = None
    status: InboxStatus | None = None
    uscc: UsccQuery = None
    amount_min: Annotated[Money | None, Query(description="at least this amount")] = None
    amount_max: Annotated[Money | None, Query(description="at most this amount")] = None
    date_from: RequestedFromQuery = None
    date_to: RequestedToQuery = None


async def list_payouts(query: Annotated[InboxQuery, Depends()]) -> Page[PayoutInboxItem]:
    """The finance inbox: drawdowns, bridge loans and listing rewards together, those `awaiting_approval`
    first, then every other; each group oldest request first (ties by id). Each payout shows its approvals
    so far, how many it needs and whether the caller may decide on it now (`can_approve`). Finance and admin
    see every payout, an enterprise its own."""
    listing, filters = query.listing, ListFilters.model_validate(query, from_attributes=True)
    return await service.list_payouts(listing.session, user=listing.user, filters=filters, **listing.page)


router.add_api_route(
    "/payouts",
    list_payouts,
    methods=["GET"],
    response_model=Page[PayoutInboxItem],
    responses=READ_ERRORS,
    route_class_override=InboxRoute,  # the hot read, from pages shared by concurrent readers (inbox.py)
)


@router.get("/drawdowns", response_model=Page[DrawdownRead], responses=READ_ERRORS)
async def list_drawdowns(
    listing: ListingDep,
    status: PayoutStatus | None = None,
    uscc: UsccQuery = None,
    credit_line_id: uuid.UUID | None = None,
    date_from: FromQuery = None,
    date_to: ToQuery = None,
) -> Page[PayoutRead]:
    """Drawdowns, newest first, with their approvals, disbursement and ledger entries: enterprises see their
    own, finance and admin all."""
    filters = ListFilters(
        status=status, uscc=uscc, credit_line_id=credit_line_id, date_from=date_from, date_to=date_to
    )
    return await service.list_drawdowns(listing.session, user=listing.user, filters=filters, **listing.page)


@router.get("/drawdowns/{drawdown_id}", response_model=DrawdownRead, responses=READ_ONE_ERRORS)
async def get_drawdown(drawdown_id: uuid.UUID, session: SessionDep, user: CurrentUserDep) -> Any:
    """The drawdown, its approvals, the disbursement's status and bank reference, and its ledger entries."""
    return await service.get_payout(session, user=user, kind="drawdown", payout_id=drawdown_id)


@router.post("/drawdowns/{drawdown_id}/approvals", response_model=DrawdownRead, responses=WRITE_ERRORS)
async def decide_drawdown(drawdown_id: uuid.UUID, body: ApprovalCreate, write: WriteDep) -> Any:
    """Finance only, never the requester; above the program's threshold two distinct approvers are needed.
    The response is the drawdown's new state."""
    return await write.decide("drawdown", drawdown_id, body)


@router.post(
    "/drawdowns/{drawdown_id}/repayments",
    status_code=201,
    response_model=DrawdownRepaymentRead,
    responses=problem_responses(400, 401, 403, 404, 409, 422, 429),
    openapi_extra=KEY_REQUIRED,
)
async def repay_drawdown(drawdown_id: uuid.UUID, body: DrawdownRepaymentCreate, write: WriteDep) -> Any:
    """The enterprise (its own) or finance records a repayment of a drawdown paid out, in parts or whole,
    never more than is outstanding (422), never on a drawdown not paid out or repaid already (409). The
    `Idempotency-Key` header is required (422 without it). The ledger entry (debit `bank_settlement`, credit
    the enterprise's credit receivable) is posted in the same transaction, and the line's `available` grows
    by the amount (even on a frozen line, which takes no new drawdowns); nothing outstanding, the drawdown is
    `repaid`."""
    session, user, key = write.session, write.user, write.key
    return await write.once(
        endpoint=f"POST /drawdowns/{drawdown_id}/repayments",
        payload=body,
        status_code=201,
        authorize=lambda: repayments.authorize_repayment(
            session, user=user, drawdown_id=drawdown_id, key=key
        ),
        act=lambda: repayments.repay(session, user=user, drawdown_id=drawdown_id, data=body, key=key),
    )


@router.get(
    "/drawdowns/{drawdown_id}/repayments",
    response_model=Page[DrawdownRepaymentRead],
    responses=READ_ONE_ERRORS,
)
async def list_drawdown_repayments(
    drawdown_id: uuid.UUID,
    session: SessionDep,
    user: CurrentUserDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[DrawdownRepaymentRead]:
    """A drawdown's repayments, newest first, each with its ledger entry: the owner, finance and admin."""
    return await repayments.list_repayments(
        session, user=user, drawdown_id=drawdown_id, cursor=cursor, limit=limit
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
    date_from: FromQuery = None,
    date_to: ToQuery = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Any:
    """Filtered disbursements of every kind of payout (drawdowns, bridge loans, listing rewards) with totals
    per status; `Accept: text/csv` streams every matching row."""
    filters = ListFilters(
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


FundKey = Annotated[str, Path(pattern=KEY_PATTERN, description="the fund's program key")]


@router.post(
    "/funds/{program}/capacity-changes",
    status_code=201,
    response_model=FundCapacityChangeRead,
    responses=WRITE_ERRORS,
    openapi_extra=KEY_REQUIRED,
)
async def change_fund_capacity(program: FundKey, body: FundCapacityChangeCreate, write: WriteDep) -> Any:
    """An admin sets a fund's `capacity` or moves it by `delta` (negative: a cut), with a `reason` and an
    `Idempotency-Key` (422 without): never below what the fund has `committed` (409). Each change is a ledger
    entry between `fund_capacity:<program>` and `fund_appropriation:<program>`, recorded with who and why."""
    session, user, programs = write.session, write.user, write.resources.programs

    async def authorize() -> None:
        await funds.authorize_fund_admin(user)
        require_key(write.key)

    return await write.once(
        endpoint=f"POST /funds/{program}/capacity-changes",
        payload=body,
        status_code=201,
        authorize=authorize,
        act=lambda: funds.change_fund_capacity(
            session, user=user, program_key=program, data=body, programs=programs
        ),
    )


@router.get(
    "/funds/{program}/capacity-changes",
    response_model=Page[FundCapacityChangeRead],
    responses=READ_ONE_ERRORS,
)
async def list_fund_capacity_changes(
    program: FundKey, listing: ListingDep, resources: ResourcesDep
) -> Page[FundCapacityChangeRead]:
    """A fund's capacity changes, newest first: who, why, from what to what, and the ledger entry (finance and
    admin)."""
    return await funds.list_capacity_changes(
        listing.session, user=listing.user, program_key=program, programs=resources.programs, **listing.page
    )


@router.post("/bridge-loans", status_code=201, response_model=BridgeLoanRead, responses=WRITE_ERRORS)
async def request_bridge_loan(body: BridgeLoanCreate, write: WriteDep) -> Any:
    """Reserve a bridge loan in the fund of the program the enterprise's recognition qualifies for; never
    beyond the fund's available capacity (409), the per-use cap or the fund's term (422). Finance approves
    or rejects it (`POST /bridge-loans/{id}/approvals`) before the program's approval deadline, which
    otherwise releases it; approved, it is paid through the bank and falls due `term_days` working days
    after approval (China's official calendar: public holidays off, adjusted weekends worked)."""
    session, user, programs = write.session, write.user, write.resources.programs
    return await write.request_payout(
        "bridge_loan",
        "POST /bridge-loans",
        body,
        authorize=lambda: funds.authorize_bridge_loan(user),
        act=lambda: funds.request_bridge_loan(session, user=user, data=body, programs=programs),
    )


@router.get("/bridge-loans", response_model=Page[BridgeLoanRead], responses=READ_ERRORS)
async def list_bridge_loans(
    listing: ListingDep,
    status: BridgeLoanStatus | None = None,
    uscc: UsccQuery = None,
    program: ProgramQuery = None,
    overdue: Annotated[bool | None, Query(description="paid out, not repaid and past due")] = None,
) -> Page[PayoutRead]:
    """Bridge loans, newest first: enterprises see their own, finance and admin all."""
    filters = ListFilters(uscc=uscc, status=status, program=program, overdue=overdue)
    return await funds.list_bridge_loans(listing.session, user=listing.user, filters=filters, **listing.page)


@router.get("/bridge-loans/{loan_id}", response_model=BridgeLoanRead, responses=READ_ONE_ERRORS)
async def get_bridge_loan(loan_id: uuid.UUID, session: SessionDep, user: CurrentUserDep) -> Any:
    """The loan, its approvals, due date and `overdue` flag, the disbursement and the ledger entries."""
    return await service.get_payout(session, user=user, kind="bridge_loan", payout_id=loan_id)


@router.post("/bridge-loans/{loan_id}/approvals", response_model=BridgeLoanRead, responses=WRITE_ERRORS)
async def decide_bridge_loan(loan_id: uuid.UUID, body: ApprovalCreate, write: WriteDep) -> Any:
    """Finance only, never the requester; above the program's threshold two distinct approvers are needed.
    A rejection releases the reservation. The response is the loan's new state."""
    return await write.decide("bridge_loan", loan_id, body)


@router.post(
    "/bridge-loans/{loan_id}/repayment",
    response_model=BridgeLoanRead,
    responses=WRITE_ERRORS,
    openapi_extra=KEY_REQUIRED,
)
async def repay_bridge_loan(loan_id: uuid.UUID, body: RepaymentCreate, write: WriteDep) -> Any:
    """Finance or admin (never the requester) records a repayment of a loan paid out (409 otherwise): `amount`
    is a part or the whole of what is `outstanding` (409 beyond it), with an `Idempotency-Key` (422 without).
    Each repayment posts a balanced ledger entry (debit `bank_settlement`, credit the enterprise's bridge
    receivable) and releases its amount from the fund's committed amount; the last one makes it `repaid`."""
    session, user, temporal = write.session, write.user, write.temporal

    async def authorize() -> None:
        await funds.authorize_repayment(session, user=user, loan_id=loan_id)
        require_key(write.key)

    return await write.once(
        endpoint=f"POST /bridge-loans/{loan_id}/repayment",
        payload=body,
        authorize=authorize,
        act=lambda: funds.repay_bridge_loan(
            session, user=user, loan_id=loan_id, data=body, temporal=temporal
        ),
    )


@router.post(
    "/enterprises/{uscc}/listings", status_code=201, response_model=ListingRewardRead, responses=WRITE_ERRORS
)
async def report_listing(
    uscc: Annotated[str, Path(pattern=USCC_PATTERN)], body: ListingCreate, write: WriteDep
) -> Any:
    """The owner (or an admin) reports a listing; the board's one-time reward is requested once per
    enterprise and board (409 after that, whatever became of the first). Finance approves it
    (`POST /listing-rewards/{id}/approvals`) before the program's approval deadline; then the bank pays it."""
    session, user, programs = write.session, write.user, write.resources.programs
    return await write.request_payout(
        "listing_reward",
        f"POST /enterprises/{uscc}/listings",
        body,
        authorize=lambda: funds.authorize_listing(user, uscc),
        act=lambda: funds.report_listing(session, user=user, uscc=uscc, data=body, programs=programs),
    )


@router.get("/listing-rewards", response_model=Page[ListingRewardRead], responses=READ_ERRORS)
async def list_listing_rewards(
    listing: ListingDep,
    status: PayoutStatus | None = None,
    uscc: UsccQuery = None,
    board: Annotated[str | None, Query(pattern=KEY_PATTERN)] = None,
    program: ProgramQuery = None,
) -> Page[PayoutRead]:
    """Listing rewards, newest first: enterprises see their own, finance and admin all."""
    filters = ListFilters(uscc=uscc, status=status, board=board, program=program)
    return await funds.list_listing_rewards(
        listing.session, user=listing.user, filters=filters, **listing.page
    )


@router.get("/listing-rewards/{reward_id}", response_model=ListingRewardRead, responses=READ_ONE_ERRORS)
async def get_listing_reward(reward_id: uuid.UUID, session: SessionDep, user: CurrentUserDep) -> Any:
    """The reward, its approvals, the disbursement and the ledger entry."""
    return await service.get_payout(session, user=user, kind="listing_reward", payout_id=reward_id)


@router.post(
    "/listing-rewards/{reward_id}/approvals", response_model=ListingRewardRead, responses=WRITE_ERRORS
)
async def decide_listing_reward(reward_id: uuid.UUID, body: ApprovalCreate, write: WriteDep) -> Any:
    """Finance only, never the reporter; the response is the reward's new state."""
    return await write.decide("listing_reward", reward_id, body)
