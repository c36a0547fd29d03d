"""HTTP routes of the bank reconciliation (finance and admin): the runs, a day's report, a run asked for now.
Routes parse, call the service and return."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.credit import reconciliation
from services.credit.reconciliation_schemas import (
    ReconciliationReport,
    ReconciliationRunRead,
    ReconciliationRunRequested,
    RunStatus,
)
from services.deps import CurrentUserDep, ListingDep, ResourcesDep, SessionDep, StrictQueryRoute, TemporalDep
from services.errors import READ_ERRORS, READ_ONE_ERRORS, problem_responses
from services.idempotency import KEY_REQUIRED, IdempotencyKey, once
from services.pagination import IsoDate, Page
from services.ratelimit import WriterDep

router = APIRouter(tags=["reconciliation"], route_class=StrictQueryRoute)

Day = Annotated[date, Path(description="the statement's day, YYYY-MM-DD (China Standard Time)")]


@router.get("/reconciliations", response_model=Page[ReconciliationRunRead], responses=READ_ERRORS)
async def list_reconciliations(
    listing: ListingDep,
    status: RunStatus | None = None,
    date_from: Annotated[
        IsoDate | None, Query(alias="from", description="statement days on or after")
    ] = None,
    date_to: Annotated[IsoDate | None, Query(alias="to", description="statement days on or before")] = None,
) -> Page[ReconciliationRunRead]:
    """The bank reconciliation runs, the latest statement day first: per day the statement's and the
    ledger's counts and totals, and the mismatches of each kind (finance and admin)."""
    return await reconciliation.list_runs(
        listing.session, user=listing.user, status=status, since=date_from, until=date_to, **listing.page
    )


@router.get("/reconciliations/{date}", response_model=ReconciliationReport, responses=READ_ONE_ERRORS)
async def get_reconciliation(
    day: Annotated[date, Path(alias="date")], session: SessionDep, user: CurrentUserDep
) -> Any:
    """The report of a day: its run and every mismatch, by kind (`paid_not_posted`, `posted_not_paid`,
    `amount_differs`) and key, with the statement's and the ledger's amounts (finance and admin; 404 when
    the day was never reconciled)."""
    return await reconciliation.report(session, user=user, day=day)


@router.post(
    "/reconciliations/{date}/run",
    status_code=202,
    response_model=ReconciliationRunRequested,
    responses=problem_responses(401, 403, 422, 429, 503),
    openapi_extra=KEY_REQUIRED,
)
async def run_reconciliation(
    day: Annotated[date, Path(alias="date")],
    session: SessionDep,
    user: WriterDep,
    resources: ResourcesDep,
    temporal: TemporalDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Reconcile a day now (finance and admin; an `Idempotency-Key` is required, 422 without; a day to come
    is a 422): a ReconciliationWorkflow compares the bank's statement of the day with the ledger and replaces
    the day's run; `GET /reconciliations/{date}` shows it when it is done. A retry with the same key starts
    nothing again."""
    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /reconciliations/{day.isoformat()}/run",
        payload={},
        status_code=202,
        authorize=lambda: reconciliation.authorize_run(user, day=day, key=idempotency_key),
        act=lambda: reconciliation.request_run(
            temporal,
            user=user,
            day=day,
            key=idempotency_key or "",
            task_queue=resources.settings.temporal_task_queue,
        ),
    )
