"""Bank reconciliation (services/credit/reconciliation.py, workflows/reconciliation.py) on real parts: the
bank simulator served over HTTP, the Temporal dev server with the service's worker, the API, committed data.

Each test takes a statement day of its own in the past, so other tests' payments (made today) never show:
payouts are paid through the functions the disbursement workflow calls and marked paid on that day, and the
bank's statement of that day is written through the simulator's `POST /admin/statement` - which is how each
kind of mismatch is injected."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, ScheduleActionStartWorkflow, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import (
    CHINA_STANDARD_TIME,
    RECONCILIATION_WORKFLOW,
    ApprovalRequest,
    PaymentReceipt,
    ReconciliationInput,
    ReconciliationOutcome,
    statement_day_before,
)
from services.credit import payouts, reconciliation, service
from services.credit.bank import BankStatement
from services.credit.models import Disbursement
from services.credit.reconciliation_repository import Posting
from services.credit.schemas import DrawdownCreate
from services.events import OutboxEvent
from services.programs import load_programs
from services.resources import Resources
from tests.credit.conftest import HISTORIES, PROGRAMS, BankSim, auth, new_uscc, open_line

D = Decimal
API = "/api/v1"
PROGRAMS_LOADED = load_programs(PROGRAMS)


def _days() -> Iterator[date]:
    """Statement days no other test uses: consecutive days from a random start years ago."""
    day = date(2001, 1, 1) + timedelta(days=random.randrange(0, 3000))
    while True:
        yield day
        day += timedelta(days=3)  # room for the day before and after


DAYS = _days()


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute, second), tzinfo=CHINA_STANDARD_TIME)


class Books:
    """Payouts paid (ledger posted) on a chosen day, and the bank's statement lines written for them."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], bank: BankSim) -> None:
        self.sessions, self.bank = sessions, bank
        self.uscc = new_uscc()
        self.line_id: uuid.UUID | None = None

    async def posted(self, amount: str, paid_at: datetime) -> dict[str, Any]:
        """A drawdown requested, approved and confirmed paid, its disbursement marked paid at ``paid_at``:
        the ledger's bank posting; returns its bank key, amount and beneficiary."""
        if self.line_id is None:
            self.line_id = await open_line(self.sessions, uscc=self.uscc, limit=D("1000000.00"))
        owner = CurrentUser(sub=f"ent-{self.uscc}", role=Role.enterprise, uscc=self.uscc)
        async with self.sessions.begin() as session:
            drawdown = await service.request_drawdown(
                session,
                user=owner,
                line_id=self.line_id,
                data=DrawdownCreate(amount=D(amount)),
                programs=PROGRAMS_LOADED,
            )
        async with self.sessions.begin() as session:
            await payouts.record_decision(
                session,
                request=ApprovalRequest(payout_id=drawdown.id, approver="finance-recon", decision="approve"),
            )
        async with self.sessions.begin() as session:
            await payouts.confirm(
                session, receipt=PaymentReceipt(payout_id=drawdown.id, bank_reference="BSIM-RECON")
            )
            key = await session.scalar(
                update(Disbursement)
                .where(Disbursement.drawdown_id == drawdown.id)
                .values(completed_at=paid_at)
                .returning(Disbursement.bank_key)
            )
        assert key is not None
        return {"key": key, "amount": amount, "beneficiary": self.uscc}

    async def statement(self, *lines: dict[str, Any], remove: list[str] | None = None) -> None:
        """Write lines into the bank's statement (added or altered), remove the lines of some keys."""
        body = {
            "upsert": [{**line, "paid_at": line["paid_at"].isoformat()} for line in lines],
            "remove": remove or [],
        }
        response = await self.bank.http.post(f"{self.bank.url}/admin/statement", json=body)
        assert response.status_code == 200, response.text


@pytest.fixture
async def books(resources: Resources, calm_bank: BankSim) -> Books:
    return Books(resources.sessionmaker, calm_bank)


async def run(
    api: httpx.AsyncClient, settings: Settings, temporal: Client, day: date
) -> ReconciliationOutcome:
    """Ask for a run of ``day`` as finance does (a fresh Idempotency-Key) and wait for its workflow."""
    headers = {**auth(settings, "finance", "finance-recon"), "Idempotency-Key": f"recon-{uuid.uuid4()}"}
    response = await api.post(f"{API}/reconciliations/{day}/run", headers=headers)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["date"] == day.isoformat()
    handle = temporal.get_workflow_handle(started["workflow_id"], result_type=ReconciliationOutcome)
    outcome: ReconciliationOutcome = await handle.result()
    await keep_history(handle, "reconciliation-requested")
    return outcome


async def keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With GIANTFLOW_RECORD_HISTORIES=1, keep this run's history for the replay tests (tests/workflows),
    never overwriting a committed one."""
    path = HISTORIES / f"{name}.json"
    if os.environ.get("GIANTFLOW_RECORD_HISTORIES") and not path.exists():
        path.write_text((await handle.fetch_history()).to_json())


async def report(api: httpx.AsyncClient, settings: Settings, day: date) -> dict[str, Any]:
    response = await api.get(f"{API}/reconciliations/{day}", headers=auth(settings, "admin", "admin-recon"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def events_of(resources: Resources, run_id: uuid.UUID) -> list[OutboxEvent]:
    async with resources.sessionmaker() as session:
        return list(
            await session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.aggregate_id == run_id, OutboxEvent.type == "reconciliation.mismatch_found"
                )
            )
        )


async def test_each_kind_of_mismatch_is_recorded_once_and_a_rerun_duplicates_nothing(
    api: httpx.AsyncClient, settings: Settings, resources: Resources, books: Books
) -> None:
    day = next(DAYS)
    matching = await books.posted("1000.00", at(day, 10))
    differing = await books.posted("2000.00", at(day, 11))
    unpaid = await books.posted("3000.00", at(day, 12))
    # Paid by the bank just before midnight the day before, marked paid just after: the bank's day's.
    across_midnight = await books.posted("4000.00", at(day, 0, 0, 2))
    stray = {"key": f"drawdown-{uuid.uuid4()}", "amount": "555.55", "beneficiary": new_uscc()}
    await books.statement(
        {**matching, "paid_at": at(day, 9, 59)},
        {**differing, "amount": "2000.01", "paid_at": at(day, 10, 59)},  # the amount differs
        {**stray, "paid_at": at(day, 15)},  # paid, never posted
        {**across_midnight, "paid_at": at(day - timedelta(days=1), 23, 59, 59)},
    )  # `unpaid` is posted, never paid

    outcome = await run(api, settings, resources.temporal, day)
    assert (outcome.day, outcome.status, outcome.mismatches) == (day, "mismatches", 3)

    body = await report(api, settings, day)
    assert body["date"] == day.isoformat()
    assert body["status"] == "mismatches"
    assert (body["statement_count"], body["statement_total"]) == (3, "3555.56")
    assert (body["posted_count"], body["posted_total"]) == (4, "10000.00")
    assert (body["paid_not_posted"], body["posted_not_paid"], body["amount_differs"]) == (1, 1, 1)
    assert (body["mismatch_count"], body["runs"]) == (3, 1)
    found = {(m["kind"], m["key"]): (m["statement_amount"], m["ledger_amount"]) for m in body["mismatches"]}
    assert found == {
        ("paid_not_posted", stray["key"]): ("555.55", None),
        ("posted_not_paid", unpaid["key"]): (None, "3000.00"),
        ("amount_differs", differing["key"]): ("2000.01", "2000.00"),
    }
    ids = {m["id"] for m in body["mismatches"]}
    [event] = await events_of(resources, outcome.run_id)
    assert (event.finance, event.uscc) == (True, None)
    assert (event.data["day"], event.data["mismatches"]) == (day.isoformat(), 3)

    # The day before: the payment made just before midnight matches its posting made just after.
    before = await run(api, settings, resources.temporal, day - timedelta(days=1))
    assert (before.status, before.mismatches) == ("clean", 0)

    # Again: one run, the same three mismatches (the same rows), no second event.
    again = await run(api, settings, resources.temporal, day)
    assert (again.run_id, again.mismatches) == (outcome.run_id, 3)
    body = await report(api, settings, day)
    assert body["runs"] == 2
    assert {m["id"] for m in body["mismatches"]} == ids
    assert len(await events_of(resources, outcome.run_id)) == 1

    # The bank's side corrected: the run is clean and its mismatches are gone.
    await books.statement(
        {**differing, "paid_at": at(day, 10, 59)},
        {**unpaid, "paid_at": at(day, 11, 59)},
        remove=[stray["key"]],
    )
    fixed = await run(api, settings, resources.temporal, day)
    assert (fixed.run_id, fixed.status, fixed.mismatches) == (outcome.run_id, "clean", 0)
    body = await report(api, settings, day)
    assert (body["status"], body["mismatches"], body["runs"]) == ("clean", [], 3)


async def test_a_clean_day_records_a_run_with_no_mismatch(
    api: httpx.AsyncClient, settings: Settings, resources: Resources, books: Books
) -> None:
    day = next(DAYS)
    lines = [await books.posted(amount, at(day, 14)) for amount in ("10.00", "20.00")]
    await books.statement(*({**line, "paid_at": at(day, 13, 59)} for line in lines))
    outcome = await run(api, settings, resources.temporal, day)
    assert (outcome.status, outcome.mismatches) == ("clean", 0)
    body = await report(api, settings, day)
    assert (body["status"], body["mismatch_count"], body["mismatches"]) == ("clean", 0, [])
    assert (body["statement_count"], body["posted_count"], body["posted_total"]) == (2, 2, "30.00")
    assert await events_of(resources, outcome.run_id) == []

    listed = await api.get(
        f"{API}/reconciliations",
        params={"from": str(day), "to": str(day)},
        headers=auth(settings, "finance", "finance-recon"),
    )
    assert listed.status_code == 200, listed.text
    assert [(r["date"], r["status"]) for r in listed.json()["items"]] == [(day.isoformat(), "clean")]


async def test_refusals(api: httpx.AsyncClient, settings: Settings, resources: Resources) -> None:
    finance = auth(settings, "finance", "finance-recon")
    tomorrow = reconciliation.today() + timedelta(days=1)
    keyed = {**finance, "Idempotency-Key": f"recon-{uuid.uuid4()}"}
    response = await api.post(f"{API}/reconciliations/{tomorrow}/run", headers=keyed)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    response = await api.post(f"{API}/reconciliations/{reconciliation.today()}/run", headers=finance)
    assert response.status_code == 422, response.text  # no Idempotency-Key
    response = await api.get(f"{API}/reconciliations/1999-01-01", headers=finance)
    assert response.status_code == 404, response.text
    response = await api.get(f"{API}/reconciliations/not-a-day", headers=finance)
    assert response.status_code == 422, response.text
    enterprise = auth(settings, "enterprise", "ent-recon", uscc=new_uscc())
    response = await api.get(f"{API}/reconciliations", headers=enterprise)
    assert response.status_code == 403, response.text
    # The workflow asked for a day to come fails at once (non-retryable), without a run.
    with pytest.raises(WorkflowFailureError) as failed:
        await resources.temporal.execute_workflow(
            RECONCILIATION_WORKFLOW,
            ReconciliationInput(day=tomorrow),
            id=f"reconciliation-test-{uuid.uuid4()}",
            task_queue=resources.settings.temporal_task_queue,
            result_type=ReconciliationOutcome,
        )
    cause = failed.value.cause.cause if failed.value.cause else None
    assert isinstance(cause, ApplicationError)
    assert cause.type == "Unprocessable"


async def test_a_retry_with_the_same_key_starts_nothing_again(
    api: httpx.AsyncClient, settings: Settings, resources: Resources
) -> None:
    day = next(DAYS)
    headers = {**auth(settings, "admin", "admin-recon"), "Idempotency-Key": f"recon-{uuid.uuid4()}"}
    first = await api.post(f"{API}/reconciliations/{day}/run", headers=headers)
    second = await api.post(f"{API}/reconciliations/{day}/run", headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    await resources.temporal.get_workflow_handle(first.json()["workflow_id"]).result()
    body = await report(api, settings, day)
    assert (body["runs"], body["status"]) == (1, "clean")


async def test_the_daily_schedule_is_created_once_with_its_spec_and_reconciles_the_day_before(
    resources: Resources, worker: Any
) -> None:
    client, queue = resources.temporal, resources.settings.temporal_task_queue
    schedule_id = f"reconciliation-test-{uuid.uuid4().hex[:8]}"
    assert await reconciliation.ensure_schedule(
        client, task_queue=queue, schedule_id=schedule_id, paused=True
    ) == ("created")
    assert (
        await reconciliation.ensure_schedule(client, task_queue=queue, schedule_id=schedule_id) == "updated"
    )
    handle = client.get_schedule_handle(schedule_id)
    try:
        described = await handle.describe()
        spec = described.schedule.spec
        assert spec.time_zone_name == "Asia/Shanghai"
        [calendar] = spec.calendars
        assert [(r.start, r.end) for r in calendar.hour] == [(6, 6)]
        assert [(r.start, r.end) for r in calendar.minute] == [(0, 0)]
        assert [(r.start, r.end) for r in calendar.second] == [(0, 0)]
        assert spec.cron_expressions == []
        assert described.schedule.state.paused  # kept as it was by the update
        action = described.schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == (RECONCILIATION_WORKFLOW, queue)
        upcoming = described.info.next_action_times[0].astimezone(CHINA_STANDARD_TIME)
        assert (upcoming.hour, upcoming.minute, upcoming.second) == (6, 0, 0)

        # Triggered now, its workflow reconciles the day before (China Standard Time).
        await handle.trigger()
        for _ in range(100):
            described = await handle.describe()
            if described.info.recent_actions:
                break
            await asyncio.sleep(0.1)
        [recent] = described.info.recent_actions
        started = client.get_workflow_handle(recent.action.workflow_id, result_type=ReconciliationOutcome)
        outcome = await started.result()
        assert outcome.day == statement_day_before(recent.scheduled_at)
        await keep_history(started, "reconciliation-scheduled")
    finally:
        await handle.delete()


def test_the_comparison_counts_a_mismatch_per_key() -> None:
    """The activity's rule alone: statement keys against postings (the day's and the statement keys')."""
    day = date(2026, 3, 2)

    def posting(key: str, amount: str, when: datetime) -> Posting:
        return Posting(key, D(amount), when, uuid.uuid4(), new_uscc(), None)

    statement = BankStatement.model_validate(
        {
            "date": day,
            "count": 2,
            "total": "3.00",
            "payments": [
                {"id": "B1", "key": "k1", "amount": "1.00", "beneficiary": new_uscc(), "paid_at": at(day, 1)},
                {"id": "B2", "key": "k2", "amount": "2.00", "beneficiary": new_uscc(), "paid_at": at(day, 2)},
            ],
        }
    )
    postings = [
        posting("k1", "1.00", at(day - timedelta(days=3), 9)),  # posted days before: still matched by key
        posting("k3", "3.00", at(day, 23, 59)),
        posting("k4", "4.00", at(day, 8)),
        posting("k5", "5.00", at(day + timedelta(days=1), 0)),  # the next day's
    ]
    assert reconciliation.unmatched_postings(statement, postings) == ["k3", "k4"]
    found = reconciliation.compare(statement, postings, paid_elsewhere={"k4"})
    assert [(m.kind, m.key) for m in found] == [("paid_not_posted", "k2"), ("posted_not_paid", "k3")]
