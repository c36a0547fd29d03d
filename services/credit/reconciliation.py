"""Bank reconciliation: the bank's daily statement compared with the ledger's bank postings of that day.

A day is a day in China Standard Time, the bank's business day. Every payout is paid under one idempotency
key (``disbursements.bank_key``), so the two sides are compared key by key:

- **paid but not posted**: a payment on the day's statement with no ledger posting for its key (no
  disbursement marked paid under it, whenever);
- **posted but not paid**: a disbursement marked paid that day (its ledger entry credits ``bank_settlement``)
  whose key the bank has no payment for - neither on the day's statement nor, asked by key, on another day
  (a payment made just before midnight and confirmed just after belongs to the bank's day, and is compared
  there);
- **amount differs**: both sides have the key, with different amounts (the ledger's net of any reversal).

One run per day (``reconciliation_runs``), with its mismatches (``reconciliation_mismatches``, one per key):
running a day again updates that run and makes its mismatches exactly what is found now, never a second
row. A run that finds a mismatch not known before tells finance (``reconciliation.mismatch_found``).

The ``ReconciliationWorkflow`` (workflows/reconciliation.py) runs it: the Temporal Schedule
``reconciliation-daily`` each day at 06:00 Asia/Shanghai for the day before, or finance on demand
(``POST /reconciliations/{date}/run``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import TypedSearchAttributes

from services import temporal
from services.auth import CurrentUser, Role
from services.contracts import (
    CHINA_STANDARD_TIME,
    RECONCILIATION_SCHEDULE_ID,
    RECONCILIATION_WORKFLOW,
    ReconciliationInput,
    ReconciliationOutcome,
    reconciliation_workflow_id,
)
from services.credit import announce
from services.credit import reconciliation_repository as repository
from services.credit.bank import BankStatement
from services.credit.reconciliation_repository import Posting
from services.credit.reconciliation_schemas import (
    MismatchKind,
    ReconciliationMismatchRead,
    ReconciliationReport,
    ReconciliationRunRead,
    ReconciliationRunRequested,
    RunStatus,
)
from services.errors import FieldError, NotFound, Unprocessable
from services.idempotency import require_key
from services.pagination import Page, decode_cursor, split_page

ZERO = Decimal("0.00")
MISMATCH_KINDS: tuple[MismatchKind, ...] = ("paid_not_posted", "posted_not_paid", "amount_differs")


@dataclass(frozen=True, slots=True)
class Mismatch:
    kind: MismatchKind
    key: str
    statement_amount: Decimal | None
    ledger_amount: Decimal | None
    beneficiary: str | None
    bank_reference: str | None
    disbursement_id: object | None = None


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The first instant of ``day`` in China Standard Time and of the day after."""
    start = datetime.combine(day, time(0), tzinfo=CHINA_STANDARD_TIME)
    return start, start + timedelta(days=1)


def today() -> date:
    return datetime.now(CHINA_STANDARD_TIME).date()


def check_day(day: date) -> None:
    """A statement exists for today (so far) and the days before, never for a day to come."""
    if day > today():
        raise Unprocessable(
            f"There is no statement of {day.isoformat()} yet: it is a day to come in China Standard Time.",
            errors=[FieldError(field="date", message="a day to come")],
        )


def posted_that_day(posting: Posting, day: date) -> bool:
    return posting.posted_at.astimezone(CHINA_STANDARD_TIME).date() == day


def unmatched_postings(statement: BankStatement, postings: Iterable[Posting]) -> list[str]:
    """The keys of the day's postings that are not on the day's statement: the bank is asked for each (it
    may have paid it on another day)."""
    on_statement = {line.key for line in statement.payments}
    return sorted(p.key for p in postings if posted_that_day(p, statement.date) and p.key not in on_statement)


def compare(
    statement: BankStatement, postings: Iterable[Posting], *, paid_elsewhere: Collection[str]
) -> list[Mismatch]:
    """Every key the statement and the ledger disagree on. ``postings`` are the day's and those of the
    statement's keys; ``paid_elsewhere`` the keys the bank paid on another day."""
    ledger = {p.key: p for p in postings}
    found: list[Mismatch] = []
    for line in statement.payments:
        posting = ledger.get(line.key)
        if posting is None:
            found.append(Mismatch("paid_not_posted", line.key, line.amount, None, line.beneficiary, line.id))
        elif posting.amount != line.amount:
            found.append(
                Mismatch(
                    "amount_differs",
                    line.key,
                    line.amount,
                    posting.amount,
                    line.beneficiary,
                    line.id,
                    posting.disbursement_id,
                )
            )
    on_statement = {line.key for line in statement.payments}
    for posting in ledger.values():
        if (
            posted_that_day(posting, statement.date)
            and posting.key not in on_statement
            and posting.key not in paid_elsewhere
        ):
            found.append(
                Mismatch(
                    "posted_not_paid",
                    posting.key,
                    None,
                    posting.amount,
                    posting.beneficiary,
                    posting.bank_reference,
                    posting.disbursement_id,
                )
            )
    return sorted(found, key=lambda m: (m.kind, m.key))


async def postings(session: AsyncSession, statement: BankStatement) -> list[Posting]:
    """The ledger's bank postings to compare with ``statement``: those of its day and those of its keys."""
    start, end = day_bounds(statement.date)
    return await repository.bank_postings(
        session, start=start, end=end, keys=[line.key for line in statement.payments]
    )


async def record(
    session: AsyncSession,
    *,
    statement: BankStatement,
    postings: list[Posting],
    paid_elsewhere: Collection[str],
    workflow_id: str,
) -> ReconciliationOutcome:
    """Compare and keep the day's one run and its mismatches (see the module); tell finance when a mismatch
    not known before is found."""
    day = statement.date
    check_day(day)
    found = compare(statement, postings, paid_elsewhere=paid_elsewhere)
    of_day = [p for p in postings if posted_that_day(p, day)]
    counts = {kind: sum(1 for m in found if m.kind == kind) for kind in MISMATCH_KINDS}
    status: RunStatus = "mismatches" if found else "clean"
    run_id = await repository.save_run(
        session,
        day=day,
        values={
            "starts_at": day_bounds(day)[0],
            "status": status,
            "statement_count": len(statement.payments),
            "statement_total": sum((line.amount for line in statement.payments), ZERO),
            "posted_count": len(of_day),
            "posted_total": sum((p.amount for p in of_day), ZERO),
            "paid_not_posted": counts["paid_not_posted"],
            "posted_not_paid": counts["posted_not_paid"],
            "amount_differs": counts["amount_differs"],
            "workflow_id": workflow_id,
        },
    )
    known = await repository.mismatch_keys(session, run_id)
    await repository.replace_mismatches(session, run_id, [asdict(m) for m in found])
    fresh = [m for m in found if known.get(m.key) != m.kind]
    if fresh:
        await announce.reconciliation_mismatches(
            session,
            run_id=run_id,
            day=day,
            paid_not_posted=counts["paid_not_posted"],
            posted_not_paid=counts["posted_not_paid"],
            amount_differs=counts["amount_differs"],
        )
    return ReconciliationOutcome(day=day, run_id=run_id, status=status, mismatches=len(found))


# --- the API: reading runs, asking for one -------------------------------------------------------------


def authorize(user: CurrentUser) -> None:
    """Who reads reconciliations and asks for one: finance and admins."""
    user.require(Role.finance, Role.admin)


async def list_runs(
    session: AsyncSession,
    *,
    user: CurrentUser,
    status: RunStatus | None,
    since: date | None,
    until: date | None,
    cursor: str | None,
    limit: int,
) -> Page[ReconciliationRunRead]:
    """Runs, the latest statement day first (finance and admin)."""
    authorize(user)
    rows = await repository.list_runs(
        session, status=status, since=since, until=until, cursor=decode_cursor(cursor), limit=limit
    )
    page, next_cursor = split_page(rows, limit, lambda r: (r.starts_at, r.id))
    return Page(items=[ReconciliationRunRead.model_validate(r) for r in page], next_cursor=next_cursor)


async def report(session: AsyncSession, *, user: CurrentUser, day: date) -> ReconciliationReport:
    """The day's run with every mismatch (finance and admin); 404 when the day was never reconciled."""
    authorize(user)
    run = await repository.get_run(session, day)
    if run is None:
        raise NotFound(f"The bank statement of {day.isoformat()} has not been reconciled.")
    rows = await repository.mismatches(session, run.id)
    return ReconciliationReport.model_validate(
        {
            **ReconciliationRunRead.model_validate(run).model_dump(),
            "day": run.day,
            "mismatches": [ReconciliationMismatchRead.model_validate(m) for m in rows],
        }
    )


async def authorize_run(user: CurrentUser, *, day: date, key: str | None) -> None:
    authorize(user)
    require_key(key)
    check_day(day)


async def request_run(
    temporal_client: Client, *, user: CurrentUser, day: date, key: str, task_queue: str
) -> ReconciliationRunRequested:
    """Start a ReconciliationWorkflow for ``day`` now: one per caller and Idempotency-Key (its id is derived
    from them), so a retry starts nothing twice; the run it writes replaces the day's run."""
    authorize(user)
    check_day(day)
    digest = hashlib.sha256(f"{user.identity}\n{key}".encode()).hexdigest()[:16]
    workflow_id = reconciliation_workflow_id(day, digest)
    await temporal.start_workflow(
        temporal_client,
        RECONCILIATION_WORKFLOW,
        ReconciliationInput(day=day),
        id=workflow_id,
        task_queue=task_queue,
        search_attributes=TypedSearchAttributes.empty,
        unavailable="The workflow service is unavailable; the reconciliation was not started.",
    )
    return ReconciliationRunRequested(date=day, workflow_id=workflow_id)


# --- the schedule ---------------------------------------------------------------------------------------

SCHEDULE_TIME_ZONE = "Asia/Shanghai"
SCHEDULE_HOUR = 6  # the bank's statement of the day before is final by then


def schedule(*, task_queue: str, paused: bool = False) -> Schedule:
    """The daily schedule: at 06:00 Asia/Shanghai a ReconciliationWorkflow reconciles the day before. A run
    missed while Temporal was down is caught up within a day; runs never overlap (one is skipped)."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILIATION_WORKFLOW,
            ReconciliationInput(),
            id=RECONCILIATION_SCHEDULE_ID,
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=[ScheduleRange(0)],
                    minute=[ScheduleRange(0)],
                    hour=[ScheduleRange(SCHEDULE_HOUR)],
                    comment="the day before's bank statement, each morning",
                )
            ],
            time_zone_name=SCHEDULE_TIME_ZONE,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=timedelta(days=1)),
        state=ScheduleState(note="bank reconciliation (services/credit/reconciliation.py)", paused=paused),
    )


async def ensure_schedule(
    client: Client, *, task_queue: str, schedule_id: str = RECONCILIATION_SCHEDULE_ID, paused: bool = False
) -> Literal["created", "updated"]:
    """Create the daily schedule, or bring an existing one to this definition (the worker's start-up and
    `giantflow temporal-setup`): running it again changes nothing."""
    return await temporal.ensure_schedule(client, schedule_id, schedule(task_queue=task_queue, paused=paused))
