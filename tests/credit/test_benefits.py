"""The benefits workflow (grants once per recognition, freezes on stop or at the end of validity) and the
drawdown approval deadline, on the dev server and in the time-skipping environment."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import BenefitsInput, BenefitsStop, PayoutState
from services.credit import payouts, repository
from services.credit.schemas import ApprovalCreate, ListFilters
from services.errors import Conflict
from services.resources import Resources
from tests.conftest import bearer
from tests.credit.conftest import (
    PROGRAM,
    auth,
    enterprise_token,
    new_uscc,
    open_line,
    record,
    request_drawdown,
)
from workflows.benefits import BenefitsWorkflow

D = Decimal


async def _eventually(check: Any, *, timeout: float = 15.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.1)


async def test_benefits_are_granted_once_and_frozen_on_revocation(
    api: httpx.AsyncClient, settings: Settings, resources: Any
) -> None:
    uscc, recognition_id = new_uscc(), str(uuid.uuid4())
    owner = bearer(enterprise_token(settings, uscc))
    data = BenefitsInput(
        recognition_id=recognition_id,
        uscc=uscc,
        tier="little_giant",
        program=PROGRAM,
        valid_until=datetime.now(UTC) + timedelta(days=3 * 365),
    )
    client: Client = resources.temporal
    queue = resources.settings.temporal_task_queue
    # The real id, plus a stray second run for the same recognition: still one line and one row per kind.
    handles = [
        await client.start_workflow(BenefitsWorkflow.run, data, id=workflow_id, task_queue=queue)
        for workflow_id in (f"benefits-{recognition_id}", f"benefits-{recognition_id}-stray")
    ]

    async def granted() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await api.get("/api/v1/benefits", headers=owner)).json()["items"]
        return items if len(items) == 3 else None

    benefits = {b["kind"]: b for b in await _eventually(granted)}
    assert set(benefits) == {"credit_line", "bridge_loan", "listing_reward"}
    assert benefits["credit_line"]["amount"] == "3000000.00"
    assert {b["status"] for b in benefits.values()} == {"active"}
    line_id = benefits["credit_line"]["credit_line_id"]
    lines = (await api.get("/api/v1/credit-lines", headers=owner)).json()["items"]
    assert [line["id"] for line in lines] == [line_id]

    by_finance = await api.get(
        "/api/v1/benefits",
        params={"recognition_id": recognition_id, "kind": "bridge_loan"},
        headers=auth(settings, "finance"),
    )
    assert [b["kind"] for b in by_finance.json()["items"]] == ["bridge_loan"]
    other = bearer(enterprise_token(settings, new_uscc()))
    assert (await api.get("/api/v1/benefits", params={"uscc": uscc}, headers=other)).json()["items"] == []
    assert (
        await api.get(
            "/api/v1/benefits", headers=auth(settings, "reviewer", level="national", region="500000")
        )
    ).status_code == 403

    pending = await api.post(
        f"/api/v1/credit-lines/{line_id}/drawdowns", json={"amount": "1000.00"}, headers=owner
    )
    assert pending.status_code == 201
    for handle in handles:
        await handle.signal(BenefitsWorkflow.stop, BenefitsStop(reason="fraud found", cause="revoked"))
    assert [await h.result() for h in handles] == ["revoked", "revoked"]
    await record(handles[0], "benefits-revoked")

    drawdown_id = pending.json()["id"]
    closed = client.get_workflow_handle(f"disbursement-{drawdown_id}", result_type=PayoutState)
    async with asyncio.timeout(15):
        assert (await closed.result()).status == "rejected"  # told to look again by the freeze
    await record(closed, "disbursement-frozen")
    drawdown = (await api.get(f"/api/v1/drawdowns/{drawdown_id}", headers=owner)).json()
    assert drawdown["status"] == "rejected"
    assert drawdown["reason"] == "credit line frozen: fraud found"
    line = (await api.get(f"/api/v1/credit-lines/{line_id}", headers=owner)).json()
    assert (line["status"], line["reserved"], line["freeze_reason"]) == ("frozen", "0.00", "fraud found")
    refused = await api.post(
        f"/api/v1/credit-lines/{line_id}/drawdowns", json={"amount": "1.00"}, headers=owner
    )
    assert refused.status_code == 409
    assert "frozen" in refused.json()["detail"]
    frozen = (await api.get("/api/v1/benefits", params={"status": "frozen"}, headers=owner)).json()["items"]
    assert len(frozen) == 3
    assert {b["freeze_reason"] for b in frozen} == {"fraud found"}


async def test_a_tier_without_benefits_grants_nothing_and_an_unknown_program_fails(
    api: httpx.AsyncClient, settings: Settings, resources: Any
) -> None:
    client: Client = resources.temporal
    queue = resources.settings.temporal_task_queue
    until = datetime.now(UTC) + timedelta(days=1)
    plain = BenefitsInput(
        recognition_id=str(uuid.uuid4()),
        uscc=new_uscc(),
        tier="innovative",
        program=PROGRAM,
        valid_until=until,
    )
    handle = await client.start_workflow(
        BenefitsWorkflow.run, plain, id=f"benefits-{plain.recognition_id}", task_queue=queue
    )
    await handle.signal(BenefitsWorkflow.stop, BenefitsStop(reason="re-review failed", cause="expired"))
    assert await handle.result() == "expired"
    owner = bearer(enterprise_token(settings, plain.uscc))
    assert (await api.get("/api/v1/benefits", headers=owner)).json()["items"] == []

    from temporalio.client import WorkflowFailureError

    unknown = plain.model_copy(update={"recognition_id": str(uuid.uuid4()), "program": "no-such-program"})
    failing = await client.start_workflow(
        BenefitsWorkflow.run, unknown, id=f"benefits-{unknown.recognition_id}", task_queue=queue
    )
    with pytest.raises(WorkflowFailureError):
        await failing.result()


# --- time-skipping: validity end and approval deadline ----------------------------------------------------


async def _request(res: Resources, uscc: str, line_id: uuid.UUID, amount: str) -> str:
    user = CurrentUser(sub=f"ent-{uscc}", role=Role.enterprise, uscc=uscc)
    return str(await request_drawdown(res, user, line_id, Decimal(amount)))


async def _line(sessions: async_sessionmaker[AsyncSession], line_id: uuid.UUID) -> Any:
    async with sessions() as session:
        return await repository.get_credit_line(session, line_id)


async def test_validity_end_freezes_the_line_and_rejects_pending_drawdowns(skipping: Resources) -> None:
    uscc, recognition_id = new_uscc(), str(uuid.uuid4())
    data = BenefitsInput(
        recognition_id=recognition_id,
        uscc=uscc,
        tier="specialized_new",
        program=PROGRAM,
        valid_until=datetime.now(UTC) + timedelta(days=1),
    )
    client = skipping.temporal
    handle = await client.start_workflow(
        BenefitsWorkflow.run,
        data,
        id=f"benefits-{recognition_id}",
        task_queue=skipping.settings.temporal_task_queue,
    )

    async def opened() -> Any:
        async with skipping.sessionmaker() as session:
            lines = await repository.list_credit_lines(
                session, filters=ListFilters(uscc=uscc), cursor=None, limit=5
            )
        return lines[0] if lines else None

    line = await _eventually(opened)
    assert line.credit_limit == D("2000000.00")
    drawdown_id = await _request(skipping, uscc, line.id, "1200.00")

    assert await handle.result() == "expired"  # one day skipped: validity over
    await record(handle, "benefits-expired")
    state = await client.get_workflow_handle(f"disbursement-{drawdown_id}", result_type=PayoutState).result()
    assert state.status == "rejected"
    assert state.reason == "credit line frozen: the recognition's validity ended"
    after = await _line(skipping.sessionmaker, line.id)
    assert (after.status, after.reserved) == ("frozen", D("0.00"))


async def test_approval_deadline_expires_the_drawdown_and_releases_it(
    skipping: Resources, time_skipping: Any
) -> None:
    uscc = new_uscc()
    line_id = await open_line(skipping.sessionmaker, uscc=uscc)
    single = await _request(skipping, uscc, line_id, "300.00")
    dual = await _request(skipping, uscc, line_id, "1500000.00")
    assert (await _line(skipping.sessionmaker, line_id)).reserved == D("1500300.00")

    checker = CurrentUser(sub="finance-a", role=Role.finance)
    async with skipping.sessionmaker.begin() as session:
        half = await payouts.decide(
            session,
            user=checker,
            kind="drawdown",
            payout_id=uuid.UUID(dual),
            data=ApprovalCreate(decision="approve"),
            temporal=skipping.temporal,
        )
    assert (half.status, len(half.approvals)) == ("pending_approval", 1)

    # Skip past the program's ten days. (After an Update the test server no longer skips time by itself
    # while a result is awaited, so the skip is explicit.)
    await time_skipping.sleep(timedelta(days=10, hours=1))
    for drawdown_id in (single, dual):
        expiring = skipping.temporal.get_workflow_handle(
            f"disbursement-{drawdown_id}", result_type=PayoutState
        )
        state = await expiring.result()
        assert state.status == "expired"
        assert state.reason == "the approval deadline passed"
    await record(expiring, "disbursement-expired-half-approved")
    assert (await _line(skipping.sessionmaker, line_id)).reserved == D("0.00")
    with pytest.raises(Conflict, match="expired"):
        async with skipping.sessionmaker.begin() as session:
            await payouts.decide(
                session,
                user=CurrentUser(sub="finance-b", role=Role.finance),
                kind="drawdown",
                payout_id=uuid.UUID(dual),
                data=ApprovalCreate(decision="approve"),
                temporal=skipping.temporal,
            )
