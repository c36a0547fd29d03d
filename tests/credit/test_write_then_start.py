"""Payouts follow the same write-then-start protocol as applications (services/temporal.py): the payout is
committed first, its workflow started after the commit. An API killed between the two leaves a committed,
unstarted payout, which the worker's reconciler starts; an API killed before the commit leaves nothing - no
workflow that could hold or pay money for a payout that does not exist."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import PayoutState, disbursement_workflow_id
from services.credit import payouts, service
from services.credit.models import CreditLine, Drawdown
from services.credit.schemas import DrawdownCreate, DrawdownRead
from services.resources import Resources
from tests.conftest import bearer
from tests.credit.conftest import auth, enterprise_token, new_uscc, open_line


async def _written(
    sessions: async_sessionmaker[AsyncSession],
    resources: Resources,
    uscc: str,
    line_id: uuid.UUID,
    amount: str,
    *,
    commit: bool,
) -> DrawdownRead:
    """What a drawdown request writes before its workflow starts, committed or (the process died before the
    commit) rolled back; no workflow is started."""
    requester = CurrentUser(sub=f"ent-{uscc}", role=Role.enterprise, uscc=uscc)
    async with sessions() as session:
        read = await service.request_drawdown(
            session,
            user=requester,
            line_id=line_id,
            data=DrawdownCreate(amount=Decimal(amount)),
            programs=resources.programs,
        )
        await (session.commit() if commit else session.rollback())
    return read


async def test_a_requested_drawdown_is_committed_then_started_and_marked(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    resources: Resources,
) -> None:
    uscc = new_uscc()
    line_id = await open_line(sessions, uscc=uscc)
    owner = bearer(enterprise_token(settings, uscc))
    created = await api.post(
        f"/api/v1/credit-lines/{line_id}/drawdowns", headers=owner, json={"amount": "1000.00"}
    )
    assert created.status_code == 201, created.text
    async with sessions() as session:
        drawdown = await session.get(Drawdown, uuid.UUID(created.json()["id"]))
        assert drawdown is not None
        assert drawdown.workflow_started is True
    handle = resources.temporal.get_workflow_handle(disbursement_workflow_id("drawdown", drawdown.id))
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    await handle.terminate("test done")


async def test_an_api_killed_between_commit_and_start_loses_nothing(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    resources: Resources,
    worker: Any,
) -> None:
    """The request's writes committed and the process gone before the start: the payout holds its
    reservation and has no workflow, until the reconciler starts it once; then finance decides as usual."""
    uscc = new_uscc()
    line_id = await open_line(sessions, uscc=uscc)
    read = await _written(
        sessions, resources, uscc, line_id, "2500.00", commit=True
    )  # the process died before the start
    workflow_id = disbursement_workflow_id("drawdown", read.id)
    try:
        await resources.temporal.get_workflow_handle(workflow_id).describe()
        raise AssertionError("a workflow exists for a payout whose request never started one")
    except RPCError:
        pass
    async with sessions() as session:
        line = await session.get(CreditLine, line_id)
        assert line is not None
        assert line.reserved == Decimal("2500.00")  # the hold is real: it must not be left without a workflow

    queue = resources.settings.temporal_task_queue
    started = await payouts.reconcile(resources.temporal, sessions, task_queue=queue, older_than_seconds=0)
    assert started >= 1
    async with sessions() as session:
        row = await session.get(Drawdown, read.id)
        assert row is not None
        assert row.workflow_started is True
        unstarted = await session.scalars(select(Drawdown.id).where(Drawdown.workflow_started.is_(False)))
        assert read.id not in set(unstarted)
    again = await payouts.reconcile(resources.temporal, sessions, task_queue=queue, older_than_seconds=0)
    assert again == 0

    decided = await api.post(
        f"/api/v1/drawdowns/{read.id}/approvals",
        headers=auth(settings, "finance", "finance-reconciled"),
        json={"decision": "reject", "reason": "reconciled, then decided"},
    )
    assert decided.status_code == 200, decided.text
    handle = resources.temporal.get_workflow_handle(workflow_id, result_type=PayoutState)
    async with asyncio.timeout(30):
        result: PayoutState = await handle.result()
    assert result.status == "rejected"
    async with sessions() as session:
        line = await session.get(CreditLine, line_id)
        assert line is not None
        assert line.reserved == Decimal("0.00")  # released by the rejection


async def test_a_request_whose_commit_fails_starts_no_workflow(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    resources: Resources,
) -> None:
    """Killed before the commit (here: rolled back), nothing is left: no payout and no workflow.
    Before the protocol was shared, the credit domain started the workflow first and committed after."""
    uscc = new_uscc()
    line_id = await open_line(sessions, uscc=uscc)
    read = await _written(
        sessions, resources, uscc, line_id, "700.00", commit=False
    )  # died before its commit
    try:
        await resources.temporal.get_workflow_handle(disbursement_workflow_id("drawdown", read.id)).describe()
        raise AssertionError("a workflow was started for a payout that was never committed")
    except RPCError:
        pass
    async with sessions() as session:
        assert await session.get(Drawdown, read.id) is None


async def test_a_decision_on_a_payout_whose_workflow_never_started_starts_it(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    resources: Resources,
    worker: Any,
) -> None:
    """Finance need not wait for the reconciler: deciding on a committed payout whose request died before the
    start starts its workflow, then records the decision (`make chaos` saw such approvals answered 409)."""
    uscc = new_uscc()
    line_id = await open_line(sessions, uscc=uscc)
    read = await _written(
        sessions, resources, uscc, line_id, "900.00", commit=True
    )  # the process died before the start
    decided = await api.post(
        f"/api/v1/drawdowns/{read.id}/approvals",
        headers=auth(settings, "finance", "finance-early"),
        json={"decision": "reject", "reason": "decided before the reconciler came round"},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "rejected"
    handle = resources.temporal.get_workflow_handle(
        disbursement_workflow_id("drawdown", read.id), result_type=PayoutState
    )
    async with asyncio.timeout(30):
        assert (await handle.result()).status == "rejected"
