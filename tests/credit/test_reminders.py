"""A bridge loan paid out is reminded of before it falls due: a timer of its disbursement workflow at the
start of the working day the program's `reminder_working_days` (3 in the test programs, the default) before
the day it is due, then an activity that writes `bridge_loan.due_soon` to the outbox - once, and not when the
loan is repaid first. In the time-skipping environment, on the real database and the bank simulator."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from services.auth import CurrentUser, Role
from services.contracts import PayoutState
from services.credit import funds, payouts, policy, repository
from services.credit.models import BridgeLoan
from services.credit.schemas import ApprovalCreate, BridgeLoanCreate, RepaymentCreate
from services.events import OutboxEvent
from services.programs import load_programs
from services.resources import Resources
from tests.conftest import PROJECT_ROOT
from tests.credit.conftest import PROGRAM, PROGRAMS, BankSim, arm, new_uscc, record

D = Decimal
FINANCE = CurrentUser(sub="finance-a", role=Role.finance)


def test_the_reminder_is_working_days_before_the_due_day_in_china_standard_time() -> None:
    friday, monday = date(2026, 12, 11), date(2026, 12, 14)
    cst = policy.POLICY_TZ
    assert policy.reminder_at(friday, 3) == datetime(2026, 12, 8, tzinfo=cst)  # Tuesday 00:00 in Beijing
    assert policy.reminder_at(monday, 3) == datetime(2026, 12, 9, tzinfo=cst)  # the weekend does not count
    assert policy.reminder_at(monday, 1) == datetime(2026, 12, 11, tzinfo=cst)
    for due in (friday, monday):  # the day from which the term's count reaches the due day
        assert policy.add_working_days(policy.reminder_at(due, 3).date(), 3) == due
    with pytest.raises(ValueError, match="at least one"):
        policy.reminder_at(friday, 0)


def test_reminders_are_program_data_with_defaults() -> None:
    shipped = load_programs(PROJECT_ROOT / "programs")
    assert str(shipped["national"].durations.supplement_reminder) == "P3D"
    assert str(shipped["national"].durations.expiry_reminder) == "P90D"
    pool = shipped["chongqing-2020"].bridge_pool
    assert pool is not None
    assert pool.reminder_working_days == 3
    assert str(shipped["demo"].durations.supplement_reminder) == "PT20S"
    tests = load_programs(PROGRAMS)  # written before reminders: the defaults
    durations = tests[PROGRAM].durations
    assert (durations.supplement_reminder.timedelta, durations.expiry_reminder.timedelta) == (
        timedelta(days=3),
        timedelta(days=90),
    )
    test_pool = tests[PROGRAM].bridge_pool
    assert test_pool is not None
    assert test_pool.reminder_working_days == 3


async def borrow(res: Resources, uscc: str, term_days: int, *, approve: bool = True) -> uuid.UUID:
    """A bridge loan requested, its workflow started, and approved (by one officer: a small amount)."""
    maker = CurrentUser(sub=f"ent-{uscc}", role=Role.enterprise, uscc=uscc)
    async with res.sessionmaker() as session:
        loan = await funds.request_bridge_loan(
            session,
            user=maker,
            data=BridgeLoanCreate(amount=D("5000.00"), term_days=term_days, purpose="bridge a bank loan"),
            programs=res.programs,
        )
        await payouts.start_after_commit(
            session,
            res.temporal,
            kind="bridge_loan",
            payout_id=loan.id,
            task_queue=res.settings.temporal_task_queue,
        )
        await session.commit()
    if approve:
        async with res.sessionmaker.begin() as session:
            await payouts.decide(
                session,
                user=FINANCE,
                kind="bridge_loan",
                payout_id=loan.id,
                data=ApprovalCreate(decision="approve"),
                temporal=res.temporal,
            )
    return loan.id


async def loan_row(res: Resources, loan_id: uuid.UUID) -> BridgeLoan:
    async with res.sessionmaker() as session:
        row: BridgeLoan = await repository.get_payout(session, "bridge_loan", loan_id)
        return row


async def disbursed(res: Resources, loan_id: uuid.UUID) -> BridgeLoan:
    async with asyncio.timeout(15):
        while (row := await loan_row(res, loan_id)).status != "disbursed":
            await asyncio.sleep(0.05)
    return row


async def due_soon(res: Resources, loan_id: uuid.UUID) -> list[OutboxEvent]:
    async with res.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxEvent).where(
                OutboxEvent.type == "bridge_loan.due_soon", OutboxEvent.aggregate_id == loan_id
            )
        )
        return list(rows)


async def until_due_soon(res: Resources, loan_id: uuid.UUID) -> OutboxEvent:
    async with asyncio.timeout(15):
        while not (found := await due_soon(res, loan_id)):
            await asyncio.sleep(0.05)
    [event] = found
    return event


async def repay(res: Resources, loan_id: uuid.UUID) -> None:
    async with res.sessionmaker.begin() as session:
        await funds.repay_bridge_loan(
            session,
            user=CurrentUser(sub="finance-b", role=Role.finance),
            loan_id=loan_id,
            data=RepaymentCreate(amount=D("5000.00")),
            temporal=res.temporal,
        )


async def result(res: Resources, loan_id: uuid.UUID) -> tuple[PayoutState, Any]:
    handle = res.temporal.get_workflow_handle(f"disbursement-bridge-loan-{loan_id}", result_type=PayoutState)
    async with asyncio.timeout(30):
        state: PayoutState = await handle.result()
    return state, handle


async def test_a_loan_is_reminded_of_once_before_it_is_due_and_not_when_repaid_first(
    skipping: Resources, time_skipping: Any, calm_bank: BankSim
) -> None:
    uscc = new_uscc()
    await arm(skipping.sessionmaker, uscc, "bridge_loan")
    reminded = await borrow(skipping, uscc, term_days=10)
    repaid_first = await borrow(skipping, uscc, term_days=10)
    row = await disbursed(skipping, reminded)
    await disbursed(skipping, repaid_first)
    assert row.due_on is not None
    remind_at = policy.reminder_at(row.due_on, 3)
    await repay(skipping, repaid_first)
    state, _ = await result(skipping, repaid_first)
    assert state.status == "repaid"

    now = await time_skipping.get_current_time()
    assert remind_at - now > timedelta(days=1)  # ten working days: the reminder is well ahead
    await time_skipping.sleep(remind_at - now - timedelta(hours=1))
    await asyncio.sleep(0.3)
    assert await due_soon(skipping, reminded) == []  # an hour before: nothing yet
    await time_skipping.sleep(timedelta(hours=2))
    event = await until_due_soon(skipping, reminded)
    assert (event.uscc, event.finance, event.aggregate_type) == (uscc, True, "payout")
    assert (event.data["due_on"], event.data["kind"], event.data["status"]) == (
        row.due_on.isoformat(),
        "bridge_loan",
        "disbursed",
    )
    assert (await loan_row(skipping, reminded)).overdue_since is None

    await repay(skipping, reminded)
    state, handle = await result(skipping, reminded)
    assert state.status == "repaid"
    assert len(await due_soon(skipping, reminded)) == 1  # once
    assert await due_soon(skipping, repaid_first) == []  # repaid before its reminder: none
    await record(handle, "bridge-loan-reminded-repaid")


async def test_a_loan_paid_out_inside_its_reminder_window_is_reminded_at_once(
    skipping: Resources, time_skipping: Any, calm_bank: BankSim
) -> None:
    """A term shorter than the reminder: nothing else told the loan's due date, so the reminder comes at
    once; at its due time it is still flagged overdue."""
    uscc = new_uscc()
    await arm(skipping.sessionmaker, uscc, "bridge_loan")
    loan_id = await borrow(skipping, uscc, term_days=1)
    row = await disbursed(skipping, loan_id)
    assert row.due_on is not None
    assert policy.reminder_at(row.due_on, 3) < datetime.now(UTC)
    event = await until_due_soon(skipping, loan_id)
    assert event.data["due_on"] == row.due_on.isoformat()
    now = await time_skipping.get_current_time()
    await time_skipping.sleep(policy.due_at(row.due_on) - now + timedelta(minutes=1))
    state, _ = await result(skipping, loan_id)
    assert (state.status, state.overdue) == ("disbursed", True)
    assert len(await due_soon(skipping, loan_id)) == 1
