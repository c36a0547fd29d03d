"""Disbursements through a misbehaving bank: the simulator served over real HTTP injects timeouts, 500s,
answers lost after commit and duplicate deliveries; every drawdown is paid exactly once and the ledger
balances. The worker's bank client times out after 0.5 s, the simulator hangs for 1.5 s."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import PayoutState
from services.credit import ledger, payouts, repository
from services.credit.bank import BankClient
from services.credit.models import LedgerEntry
from services.credit.schemas import ApprovalCreate
from services.resources import Resources
from tests.credit.conftest import BankSim, new_uscc, open_line, record, request_drawdown
from tests.support.resources import borrowing
from workflows.benefits import BenefitsWorkflow
from workflows.credit_activities import CreditActivities
from workflows.disbursement import DisbursementWorkflow
from workflows.worker import build_worker

D = Decimal
AMOUNT = D("1234.56")
COUNTS: dict[str, dict[str, int]] = {}


@pytest.fixture
async def faulty(
    settings: Settings, engine: AsyncEngine, dev_server: Any, calm_bank: BankSim
) -> AsyncIterator[Resources]:
    """A worker on its own queue whose bank client gives up after 0.5 s."""
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient() as http:
        res = borrowing(settings, engine, dev_server.client, http, task_queue=queue)
        activities = CreditActivities(
            res, bank=BankClient(http, calm_bank.url, timeout=0.5, connect_timeout=0.5)
        )
        async with build_worker(
            dev_server.client,
            res,
            task_queue=queue,
            workflows=[BenefitsWorkflow, DisbursementWorkflow],
            activities=activities.all(),
        ):
            yield res


@dataclass
class Batch:
    uscc: str
    line_id: uuid.UUID
    drawdown_ids: list[str]

    @property
    def keys(self) -> set[str]:
        return {f"drawdown-{d}" for d in self.drawdown_ids}


async def approved_batch(res: Resources, count: int) -> Batch:
    """``count`` drawdowns requested by an enterprise and approved by finance, through the services."""
    uscc = new_uscc()
    line_id = await open_line(res.sessionmaker, uscc=uscc)
    maker = CurrentUser(sub=f"ent-{uscc}", role=Role.enterprise, uscc=uscc)
    checker = CurrentUser(sub="finance-1", role=Role.finance)
    ids = []
    for _ in range(count):
        ids.append(str(await request_drawdown(res, maker, line_id, AMOUNT)))

    async def approve(drawdown_id: str) -> None:
        async with res.sessionmaker.begin() as session:
            await payouts.decide(
                session,
                user=checker,
                kind="drawdown",
                payout_id=uuid.UUID(drawdown_id),
                data=ApprovalCreate(decision="approve"),
                temporal=res.temporal,
            )

    # One at a time: each approval's request session holds a pooled connection while the Update's activity
    # needs another from the same engine (in production the API and the worker have pools of their own).
    for drawdown_id in ids:
        await approve(drawdown_id)
    return Batch(uscc=uscc, line_id=line_id, drawdown_ids=ids)


async def settle_all(res: Resources, batch: Batch, *, timeout: float = 45) -> list[PayoutState]:
    handles = [
        res.temporal.get_workflow_handle(f"disbursement-{d}", result_type=PayoutState)
        for d in batch.drawdown_ids
    ]
    async with asyncio.timeout(timeout):
        return list(await asyncio.gather(*(h.result() for h in handles)))


async def assert_paid_exactly_once(res: Resources, bank: BankSim, batch: Batch) -> None:
    payments = await bank.payments_for(batch.keys)
    assert sorted(p["key"] for p in payments) == sorted(batch.keys)  # one payment per key, no more
    assert {p["amount"] for p in payments} == {f"{AMOUNT:.2f}"}
    total = AMOUNT * len(batch.drawdown_ids)
    async with res.sessionmaker() as session:
        entries = await session.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.idempotency_key.in_([f"disbursement:{d}" for d in batch.drawdown_ids]))
        )
        assert entries == len(batch.drawdown_ids)
        assert await ledger.balance(session, ledger.credit_receivable(batch.uscc)) == total
        debits, credits = await ledger.trial_balance(session)
        assert debits == credits
        line = await repository.get_credit_line(session, batch.line_id)
        assert line is not None
        assert (line.reserved, line.drawn) == (D("0.00"), total)
        for drawdown_id in batch.drawdown_ids:
            disbursement = await repository.get_disbursement(session, "drawdown", uuid.UUID(drawdown_id))
            assert disbursement is not None
            assert disbursement.status == "paid"
            assert disbursement.bank_reference in {p["id"] for p in payments}


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


async def test_a_storm_of_faults_pays_every_drawdown_exactly_once(
    faulty: Resources, calm_bank: BankSim
) -> None:
    before = await calm_bank.stats()
    await calm_bank.faults(
        seed=20261122,
        latency_ms=10,
        error_rate=0.2,
        timeout_rate=0.1,
        answer_after_commit_error_rate=0.25,
        duplicate_delivery_rate=0.3,
        hang_seconds=1.5,
        max_faults_per_key=3,  # flaky, not dead: bounds the retries (and the test's time)
    )
    batch = await approved_batch(faulty, 20)
    states = await settle_all(faulty, batch)
    await calm_bank.calm()

    assert {s.status for s in states} == {"disbursed"}
    await assert_paid_exactly_once(faulty, calm_bank, batch)
    delta = _delta(before, await calm_bank.stats())
    COUNTS["storm"] = delta
    print(f"\nbank faults, 20 drawdowns: {delta}")
    assert delta["payments_made"] == 20
    assert delta["requests"] >= 20
    assert (
        delta.get("errors", 0)
        + delta.get("timeouts", 0)
        + delta.get("answer_after_commit_errors", 0)
        + delta.get("answer_after_commit_hangs", 0)
        > 0
    )


@pytest.mark.parametrize("fault", ["answer_after_commit_error_rate", "duplicate_delivery_rate"])
async def test_every_answer_lost_or_duplicated_still_one_payment(
    faulty: Resources, calm_bank: BankSim, fault: str
) -> None:
    before = await calm_bank.stats()
    await calm_bank.faults(**{fault: 1.0}, hang_seconds=1.0)
    batch = await approved_batch(faulty, 3)
    states = await settle_all(faulty, batch)
    await calm_bank.calm()

    assert {s.status for s in states} == {"disbursed"}
    await assert_paid_exactly_once(faulty, calm_bank, batch)
    delta = _delta(before, await calm_bank.stats())
    COUNTS[fault] = delta
    if fault == "answer_after_commit_error_rate":
        await record(
            faulty.temporal.get_workflow_handle(f"disbursement-{batch.drawdown_ids[0]}"),
            "disbursement-answer-lost-after-commit",
        )
    assert delta["payments_made"] == 3
    if fault == "duplicate_delivery_rate":
        assert delta["duplicate_deliveries"] == 3
    else:  # each payment committed, its answer lost, then found by key on the retry
        assert delta.get("answer_after_commit_errors", 0) + delta.get("answer_after_commit_hangs", 0) >= 3
        assert delta["lookups"] >= 3


async def test_timeouts_and_errors_are_retried_until_the_bank_answers(
    faulty: Resources, calm_bank: BankSim
) -> None:
    before = await calm_bank.stats()
    await calm_bank.faults(timeout_rate=1.0, hang_seconds=1.0)
    batch = await approved_batch(faulty, 2)

    async def seen(kind: str) -> None:
        async with asyncio.timeout(15):
            while _delta(before, await calm_bank.stats()).get(kind, 0) < 2:
                await asyncio.sleep(0.05)

    await seen("timeouts")
    await calm_bank.faults(timeout_rate=0, error_rate=1.0)
    await seen("errors")
    await calm_bank.faults(error_rate=0)
    states = await settle_all(faulty, batch)

    assert {s.status for s in states} == {"disbursed"}
    await assert_paid_exactly_once(faulty, calm_bank, batch)
    delta = _delta(before, await calm_bank.stats())
    COUNTS["timeouts_then_errors"] = delta
    assert delta["payments_made"] == 2
