"""Every path of the review workflow, in the time-skipping server with the real activities and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from services.applications.models import Application, Objection, Recognition, ReviewTask, Transition
from services.contracts import (
    Actor,
    DecisionRequest,
    ObjectionRequest,
    ObjectionResolution,
    ReviewState,
    RevokeRequest,
    SupplementRequest,
    WithdrawRequest,
)
from services.events import OutboxEvent
from tests.support.factories import weak_metrics
from tests.workflows.conftest import Harness

HISTORIES = Path(__file__).parent / "histories"


def reviewer(level: str, region: str = "500000") -> Actor:
    return Actor(sub=f"{level}-reviewer", role="reviewer", level=level, region=region)  # type: ignore[arg-type]


def applicant(uscc: str) -> Actor:
    return Actor(sub=f"user-{uscc}", role="enterprise", uscc=uscc)


ADMIN = Actor(sub="admin-1", role="admin")


# Histories of each generation of the review workflow are kept side by side: "" before screening became one
# local activity (workflow.patched SCREEN_IN_ONE_STEP), "-one-step-screening" since.
GENERATION = "-one-step-screening"


async def record(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With GIANTFLOW_RECORD_HISTORIES=1, keep this run's history for the replay tests (never overwriting a
    committed one)."""
    path = HISTORIES / f"review-{name}{GENERATION}.json"
    if os.environ.get("GIANTFLOW_RECORD_HISTORIES") and not path.exists():
        history = await handle.fetch_history()
        path.write_text(history.to_json())


async def decide(handle: WorkflowHandle[Any, Any], actor: Actor, decision: str, **kw: Any) -> ReviewState:
    result: ReviewState = await handle.execute_update(
        "decide",
        DecisionRequest(actor=actor, decision=decision, reason=f"{decision} by {actor.sub}", **kw),  # type: ignore[arg-type]
        result_type=ReviewState,
    )
    return result


async def in_review(h: Harness, handle: WorkflowHandle[Any, Any], stage: str) -> ReviewState:
    return await h.wait_state(handle, lambda s: s.status == "in_review" and s.stage == stage)


async def transitions(h: Harness, application_id: uuid.UUID) -> list[Transition]:
    async with h.sessionmaker() as session:
        rows = await session.execute(
            select(Transition).where(Transition.application_id == application_id).order_by(Transition.id)
        )
        return list(rows.scalars())


async def open_tasks(h: Harness, application_id: uuid.UUID) -> list[ReviewTask]:
    async with h.sessionmaker() as session:
        rows = await session.execute(
            select(ReviewTask).where(ReviewTask.application_id == application_id, ReviewTask.status == "open")
        )
        return list(rows.scalars())


async def approve_to_notice(h: Harness, handle: WorkflowHandle[Any, Any], stages: list[str]) -> ReviewState:
    state = None
    for stage in stages:
        await in_review(h, handle, stage)
        state = await decide(handle, reviewer(stage), "approve")
    assert state is not None
    return state


async def test_approved_through_every_stage_is_recognized(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    state = await in_review(harness, handle, "municipal")
    tasks = await open_tasks(harness, app.id)
    assert [t.stage for t in tasks] == ["municipal"]
    state = await decide(handle, reviewer("municipal"), "approve")
    assert (state.status, state.stage) == ("in_review", "provincial")
    # The read model changed in the same transaction as the stage: right the moment the update returned.
    assert [t.stage for t in await open_tasks(harness, app.id)] == ["provincial"]
    state = await decide(handle, reviewer("provincial"), "approve")
    assert state.status == "public_notice"
    assert await open_tasks(harness, app.id) == []
    await harness.env.sleep(25)  # the demo notice period is 20 s
    state = await harness.wait_state(handle, lambda s: s.status == "recognized")
    assert state.certificate_no is not None
    assert state.certificate_no.startswith(
        f"DEMO-{(await harness.row(app.id)).updated_at.year}-SPECIALIZED_NEW-"
    )
    row = await harness.row(app.id)
    assert row.status == "recognized"
    async with harness.sessionmaker() as session:
        recognition = (
            await session.execute(select(Recognition).where(Recognition.application_id == app.id))
        ).scalar_one()
    assert recognition.status == "active"
    assert (recognition.valid_until - recognition.valid_from).total_seconds() == 300
    actions = [t.action for t in await transitions(harness, app.id)]
    assert actions == ["screened", "approved", "approved", "recognized"]
    benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition.id}")
    assert (await benefits.describe()).status is not None
    await record(handle, "approved")


@pytest.mark.parametrize("reject_at", ["municipal", "provincial", "national"])
async def test_rejected_at_each_stage(harness: Harness, reject_at: str) -> None:
    stages = ["municipal", "provincial", "national"]
    app = await harness.seed(tier="little_giant")
    handle = await harness.start(app)
    for stage in stages[: stages.index(reject_at)]:
        await in_review(harness, handle, stage)
        await decide(handle, reviewer(stage), "approve")
    await in_review(harness, handle, reject_at)
    state = await decide(handle, reviewer(reject_at), "reject", internal_note="weak market evidence")
    assert state.status == "rejected"
    result = await handle.result()
    assert result.status == "rejected"
    assert (await harness.row(app.id)).status == "rejected"
    assert await open_tasks(harness, app.id) == []
    last = (await transitions(harness, app.id))[-1]
    assert (last.action, last.stage, last.internal_note) == ("rejected", reject_at, "weak market evidence")
    await record(handle, f"rejected-{reject_at}")


async def test_failed_screening_is_ineligible(harness: Harness) -> None:
    app = await harness.seed(metrics=weak_metrics())
    handle = await harness.start(app)
    result = await handle.result()
    assert result.status == "ineligible"
    row = await harness.row(app.id)
    assert row.status == "ineligible"
    assert row.screening is not None
    assert row.screening["passed"] is False
    failed = {r["rule"] for r in row.screening["rules"] if not r["passed"]}
    assert "eligibility.no_tax_evasion" in failed
    await record(handle, "ineligible")


async def test_returned_then_supplemented_goes_back_to_the_same_stage(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    await decide(handle, reviewer("municipal"), "approve")
    await in_review(harness, handle, "provincial")
    state = await decide(handle, reviewer("provincial"), "return")
    assert state.status == "returned"
    assert state.stage == "provincial"
    assert state.supplement_due_at is not None
    assert (await harness.row(app.id)).status == "returned"
    assert await open_tasks(harness, app.id) == []
    state = await handle.execute_update(
        "supplement",
        SupplementRequest(actor=applicant(app.uscc), note="audited statements attached"),
        result_type=ReviewState,
    )
    assert (state.status, state.stage) == ("in_review", "provincial")
    assert [t.stage for t in await open_tasks(harness, app.id)] == ["provincial"]
    state = await decide(handle, reviewer("provincial"), "approve")
    assert state.status == "public_notice"
    actions = [t.action for t in await transitions(harness, app.id)]
    assert actions == ["screened", "approved", "returned", "supplemented", "approved"]
    await handle.terminate("test done")


async def test_a_supplement_with_failing_figures_is_screened_again_and_left_to_the_reviewer(
    harness: Harness,
) -> None:
    """The supplement's one transition activity cites the evidence, replaces the figures and screens them
    again; a failed re-screening is recorded and the review goes on at the same stage."""
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    await decide(handle, reviewer("municipal"), "return")
    state = await handle.execute_update(
        "supplement",
        SupplementRequest(actor=applicant(app.uscc), note="corrected figures", metrics=weak_metrics()),
        result_type=ReviewState,
    )
    assert (state.status, state.stage) == ("in_review", "municipal")
    rows = await transitions(harness, app.id)
    assert [t.action for t in rows] == ["screened", "returned", "supplemented", "rescreened"]
    assert {"field": "screening.passed", "old": True, "new": False} in (rows[-1].changes or [])
    assert {"field": "compliance.no_tax_evasion", "old": True, "new": False} in (rows[-2].changes or [])
    row = await harness.row(app.id)
    assert row.status == "in_review"
    assert row.screening is not None
    assert row.screening["passed"] is False
    assert [t.stage for t in await open_tasks(harness, app.id)] == ["municipal"]
    state = await decide(handle, reviewer("municipal"), "reject")
    assert (await handle.result()).status == "rejected"
    await record(handle, "supplemented-rescreened")


async def test_missed_supplement_deadline_withdraws(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    await decide(handle, reviewer("municipal"), "return")
    result = await handle.result()  # time skips over the 60 s supplement deadline
    assert result.status == "withdrawn"
    last = (await transitions(harness, app.id))[-1]
    assert (last.action, last.to_status, last.actor) == ("supplement_deadline_missed", "withdrawn", "system")
    await record(handle, "supplement-missed")


async def test_sla_breach_marks_overdue_and_escalates(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    await harness.env.sleep(61)  # the demo stage SLA is 60 s
    state = await harness.wait_state(handle, lambda s: s.overdue)
    assert state.status == "in_review"
    [task] = await open_tasks(harness, app.id)
    assert task.overdue is True
    assert task.escalated_to == "demo-backup-reviewers"
    assert "sla_escalated" in [t.action for t in await transitions(harness, app.id)]
    # The escalated task can still be decided, and the next stage gets a fresh SLA.
    state = await decide(handle, reviewer("municipal"), "approve")
    assert (state.stage, state.overdue) == ("provincial", False)
    await handle.terminate("test done")
    await record(handle, "sla-escalated")


@pytest.mark.parametrize("upheld", [True, False])
async def test_objection_during_notice(harness: Harness, upheld: bool) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await approve_to_notice(harness, handle, ["municipal", "provincial"])
    objection_id = str(uuid.uuid4())
    state = await handle.execute_update(
        "object",
        ObjectionRequest(
            actor=Actor(sub="citizen-7", role="enterprise", uscc="X"),
            objection_id=objection_id,
            reason="the market share figure is inflated",
        ),
        result_type=ReviewState,
    )
    assert state.open_objections == [objection_id]
    await harness.env.sleep(30)  # past the notice period: an open objection holds recognition
    state = await harness.state(handle)
    assert state.status == "public_notice"
    state = await handle.execute_update(
        "resolve_objection",
        ObjectionResolution(
            actor=reviewer("provincial"),
            objection_id=objection_id,
            upheld=upheld,
            reason="checked against the customs data",
        ),
        result_type=ReviewState,
    )
    async with harness.sessionmaker() as session:
        objection = await session.get(Objection, uuid.UUID(objection_id))
        assert objection is not None
        assert objection.status == ("upheld" if upheld else "dismissed")
    if upheld:
        assert state.status == "rejected"
        assert (await handle.result()).status == "rejected"
        async with harness.sessionmaker() as session:  # the enterprise is told, with the reviewer's reason
            told = await session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.type == "application.rejected", OutboxEvent.aggregate_id == app.id
                )
            )
            assert [e.data["reason"] for e in told] == ["checked against the customs data"]
    else:
        state = await harness.wait_state(handle, lambda s: s.status == "recognized")
        assert state.certificate_no
    await record(handle, f"objection-{'upheld' if upheld else 'dismissed'}")
    if not upheld:
        await handle.terminate("test done")


async def test_withdrawal_before_recognition(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    state = await handle.execute_update(
        "withdraw", WithdrawRequest(actor=applicant(app.uscc), reason="not ready"), result_type=ReviewState
    )
    assert state.status == "withdrawn"
    assert (await handle.result()).status == "withdrawn"
    assert await open_tasks(harness, app.id) == []
    await record(handle, "withdrawn")


async def test_expiry_opens_a_re_review(harness: Harness) -> None:
    """A review started before re-review windows (tests/workflows/test_re_review.py for today's)."""
    app = await harness.seed()
    handle = await harness.start(app, before_re_review_windows=True)
    await approve_to_notice(harness, handle, ["municipal", "provincial"])
    result = await handle.result()  # skips the notice period and the 300 s validity
    assert result.status == "recognized"
    async with harness.sessionmaker() as session:
        recognition = (
            await session.execute(select(Recognition).where(Recognition.application_id == app.id))
        ).scalar_one()
        assert recognition.status == "expired"
        renewal = (
            await session.execute(select(Application).where(Application.re_review_of == recognition.id))
        ).scalar_one()
    assert (renewal.uscc, renewal.tier) == (app.uscc, app.tier)
    child = harness.env.client.get_workflow_handle(f"review-{renewal.id}")
    state = await harness.wait_state(child, lambda s: s.status == "in_review")
    assert state.stage == "municipal"
    benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition.id}")
    assert await benefits.result() == "expired"
    await record(handle, "expired")
    await child.terminate("test done")


async def test_revocation_stops_the_benefits(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await approve_to_notice(harness, handle, ["municipal", "provincial"])
    await harness.env.sleep(25)
    state = await harness.wait_state(handle, lambda s: s.status == "recognized")
    state = await handle.execute_update(
        "revoke", RevokeRequest(actor=ADMIN, reason="fraud found in audit"), result_type=ReviewState
    )
    assert state.recognition_id is not None
    async with harness.sessionmaker() as session:
        recognition = await session.get(Recognition, state.recognition_id)
        assert recognition is not None
        assert (recognition.status, recognition.revoked_reason) == ("revoked", "fraud found in audit")
    benefits = harness.env.client.get_workflow_handle(f"benefits-{state.recognition_id}")
    assert await benefits.result() == "revoked"
    await handle.result()
    await record(handle, "revoked")


async def expect_refusal(handle: WorkflowHandle[Any, Any], name: str, arg: Any) -> ApplicationError:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update(name, arg, result_type=ReviewState)
    assert isinstance(info.value.cause, ApplicationError)
    return info.value.cause


async def test_validators_refuse_wrong_level_region_stage_and_role(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    wrong_level = await expect_refusal(
        handle, "decide", DecisionRequest(actor=reviewer("provincial"), decision="approve", reason="x")
    )
    assert wrong_level.type == "Forbidden"
    wrong_region = await expect_refusal(
        handle,
        "decide",
        DecisionRequest(actor=reviewer("municipal", region="110000"), decision="approve", reason="x"),
    )
    assert wrong_region.type == "Forbidden"
    stale = await expect_refusal(
        handle,
        "decide",
        DecisionRequest(actor=reviewer("municipal"), stage="provincial", decision="approve", reason="x"),
    )
    assert stale.type == "Conflict"
    other = await expect_refusal(handle, "withdraw", WithdrawRequest(actor=applicant("91500103MA5U7C0X3D")))
    assert other.type == "Forbidden"
    not_returned = await expect_refusal(
        handle, "supplement", SupplementRequest(actor=applicant(app.uscc), note="x")
    )
    assert not_returned.type == "Conflict"
    no_notice = await expect_refusal(
        handle, "object", ObjectionRequest(actor=ADMIN, objection_id=str(uuid.uuid4()), reason="x")
    )
    assert no_notice.type == "Conflict"
    await decide(handle, reviewer("municipal"), "approve")
    decided = await expect_refusal(
        handle,
        "decide",
        DecisionRequest(actor=reviewer("municipal"), stage="municipal", decision="approve", reason="again"),
    )
    assert decided.type == "Conflict"
    # Nothing refused reached the history or the audit trail.
    assert [t.action for t in await transitions(harness, app.id)] == ["screened", "approved"]
    await handle.terminate("test done")


async def test_a_value_the_database_refuses_fails_the_update_at_once(harness: Harness) -> None:
    """A NUL byte reaching an activity (the API refuses it first) fails the action instead of retrying
    forever, and the application stays where it was."""
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    with pytest.raises(WorkflowUpdateFailedError):
        await asyncio.wait_for(
            handle.execute_update(
                "decide",
                DecisionRequest(actor=reviewer("municipal"), decision="approve", reason="nul \x00 byte"),
                result_type=ReviewState,
            ),
            15,
        )
    state = await harness.state(handle)
    assert (state.status, state.stage) == ("in_review", "municipal")
    ok = await decide(handle, reviewer("municipal"), "approve")
    assert ok.stage == "provincial"
    await handle.terminate("test done")


def backup(group: str = "demo-backup-reviewers") -> Actor:
    """A member of a backup group, at another level in another province than the tasks it takes over."""
    return Actor(sub="backup-reviewer", role="reviewer", level="provincial", region="110000", groups=[group])


async def test_the_backup_group_decides_an_escalated_task(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    early = await expect_refusal(
        handle, "decide", DecisionRequest(actor=backup(), decision="approve", reason="x")
    )
    assert early.type == "Forbidden"  # not escalated yet: the municipal reviewers' task
    await harness.env.sleep(61)  # the demo stage SLA is 60 s
    await harness.wait_state(handle, lambda s: s.overdue)
    for outsider in (backup("another-group"), reviewer("provincial", "110000")):
        refused = await expect_refusal(
            handle, "decide", DecisionRequest(actor=outsider, decision="approve", reason="x")
        )
        assert refused.type == "Forbidden"
    state = await decide(handle, backup(), "approve")
    assert (state.stage, state.overdue) == ("provincial", False)
    last = (await transitions(harness, app.id))[-1]
    assert (last.action, last.actor, last.from_status) == ("approved", "backup-reviewer", "in_review")
    # The next stage is not escalated: back to its own reviewers.
    later = await expect_refusal(
        handle, "decide", DecisionRequest(actor=backup(), decision="approve", reason="x")
    )
    assert later.type == "Forbidden"
    await handle.terminate("test done")
    await record(handle, "sla-escalated-decided-by-backup-group")


async def test_a_decision_on_a_task_another_reviewer_holds_fails_and_changes_nothing(
    harness: Harness,
) -> None:
    """The API refuses it first (service.check_claim); a claim taken since it looked is caught by the
    transition's activity, which closes the task only for nobody else's claim."""
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    async with harness.sessionmaker.begin() as session:
        await session.execute(
            update(ReviewTask)
            .where(ReviewTask.application_id == app.id, ReviewTask.status == "open")
            .values(claimed_by="someone-else", claim_expires_at=datetime.now(UTC) + timedelta(days=1))
        )
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await asyncio.wait_for(
            handle.execute_update(
                "decide",
                DecisionRequest(actor=reviewer("municipal"), decision="approve", reason="x"),
                result_type=ReviewState,
            ),
            15,
        )
    cause: BaseException | None = info.value
    while cause is not None and not (isinstance(cause, ApplicationError) and cause.type == "Conflict"):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    assert cause is not None, info.value
    state = await harness.state(handle)
    assert (state.status, state.stage) == ("in_review", "municipal")
    [task] = await open_tasks(harness, app.id)
    assert task.claimed_by == "someone-else"
    # Its holder decides; the decision ends the claim with the task.
    async with harness.sessionmaker.begin() as session:
        await session.execute(
            update(ReviewTask).where(ReviewTask.id == task.id).values(claimed_by=reviewer("municipal").sub)
        )
    assert (await decide(handle, reviewer("municipal"), "approve")).stage == "provincial"
    async with harness.sessionmaker() as session:
        closed = await session.get(ReviewTask, task.id)
        assert closed is not None
        assert (closed.status, closed.claimed_by, closed.claim_expires_at) == ("decided", None, None)
    await handle.terminate("test done")
