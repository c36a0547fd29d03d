"""The review workflow's reminders are timers: before a supplement is due (the demo's `supplement_reminder`,
20 s before its 60 s deadline) and before a recognition expires (`expiry_reminder`, 60 s before its 300 s
validity) an activity writes the event to the outbox - once, at that moment, and not at all when the
supplement arrives (or the recognition is revoked) first, or when the window is shorter than the reminder."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from temporalio.client import WorkflowHandle

from services.applications.models import Application, Recognition
from services.contracts import ReviewState, RevokeRequest, SupplementRequest
from services.events import OutboxEvent
from services.programs import Program
from tests.workflows.conftest import Harness
from tests.workflows.test_review_paths import (
    ADMIN,
    applicant,
    approve_to_notice,
    decide,
    in_review,
    record,
    reviewer,
    transitions,
)


async def events(h: Harness, event_type: str, aggregate_id: uuid.UUID) -> list[OutboxEvent]:
    async with h.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.type == event_type, OutboxEvent.aggregate_id == aggregate_id)
            .order_by(OutboxEvent.seq)
        )
        return list(rows)


async def until_events(
    h: Harness, event_type: str, aggregate_id: uuid.UUID, count: int = 1
) -> list[OutboxEvent]:
    """The events once ``count`` are written (the timer fired; its activity runs in real time)."""
    async with asyncio.timeout(15):
        while len(found := await events(h, event_type, aggregate_id)) < count:
            await asyncio.sleep(0.05)
    return found


def demo(h: Harness) -> Program:
    return h.resources.programs["demo"]


async def returned(h: Harness, handle: WorkflowHandle[Any, Any], **kw: Any) -> ReviewState:
    await in_review(h, handle, "municipal")
    state = await decide(handle, reviewer("municipal"), "return", **kw)
    assert state.status == "returned"
    assert state.supplement_due_at is not None
    return state


async def test_the_supplement_reminder_fires_once_before_the_deadline(harness: Harness) -> None:
    durations = demo(harness).durations
    lead = durations.supplement_reminder.timedelta
    assert lead < durations.supplement_deadline.timedelta  # PT20S before PT60S
    app = await harness.seed()
    handle = await harness.start(app)
    state = await returned(harness, handle)
    due = state.supplement_due_at
    assert due is not None
    await harness.env.sleep(durations.supplement_deadline.timedelta - lead - timedelta(seconds=5))
    await asyncio.sleep(0.3)
    assert await events(harness, "application.supplement_due_soon", app.id) == []
    await harness.env.sleep(timedelta(seconds=10))  # past the reminder, before the deadline
    [event] = await until_events(harness, "application.supplement_due_soon", app.id)
    assert (event.uscc, event.aggregate_type, event.finance) == (app.uscc, "application", False)
    assert datetime.fromisoformat(event.data["supplement_due_at"]) == due
    assert (event.data["application_id"], event.data["status"]) == (str(app.id), "returned")
    audit = [t for t in await transitions(harness, app.id) if t.action == "supplement_due_soon"]
    assert len(audit) == 1
    assert (audit[0].actor, audit[0].to_status, audit[0].stage) == ("system", "returned", "municipal")
    assert abs((audit[0].at - (due - lead)).total_seconds()) < 2  # at the reminder's moment, workflow time
    result = await handle.result()  # the deadline passes: withdrawn, and reminded only once
    assert result.status == "withdrawn"
    assert len(await events(harness, "application.supplement_due_soon", app.id)) == 1
    assert [t.action for t in await transitions(harness, app.id)][-2:] == [
        "supplement_due_soon",
        "supplement_deadline_missed",
    ]
    await record(handle, "supplement-reminded")


async def test_no_supplement_reminder_when_the_supplement_arrives_first(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await returned(harness, handle)
    await harness.env.sleep(timedelta(seconds=10))
    state = await handle.execute_update(
        "supplement",
        SupplementRequest(actor=applicant(app.uscc), note="here it is"),
        result_type=ReviewState,
    )
    assert (state.status, state.stage) == ("in_review", "municipal")
    await harness.env.sleep(timedelta(seconds=45))  # past where the reminder (and the deadline) would be
    await asyncio.sleep(0.5)
    assert await events(harness, "application.supplement_due_soon", app.id) == []
    assert "supplement_due_soon" not in [t.action for t in await transitions(harness, app.id)]
    await handle.terminate("test done")


async def test_no_supplement_reminder_when_the_deadline_is_sooner_than_the_reminder(harness: Harness) -> None:
    """A reviewer's due date closer than the program's reminder: the return itself gave the date."""
    app = await harness.seed()
    handle = await harness.start(app)
    await in_review(harness, handle, "municipal")
    now = await harness.env.get_current_time()
    await returned(harness, handle, supplement_due_at=now + timedelta(seconds=15))  # the reminder is 20 s
    result = await handle.result()
    assert result.status == "withdrawn"
    assert await events(harness, "application.supplement_due_soon", app.id) == []


async def recognition_of(h: Harness, application_id: uuid.UUID) -> Recognition:
    async with h.sessionmaker() as session:
        return (
            await session.execute(select(Recognition).where(Recognition.application_id == application_id))
        ).scalar_one()


async def test_the_expiry_reminder_fires_once_before_the_recognition_expires(harness: Harness) -> None:
    """A review started before re-review windows: since, the window's opening tells the enterprise
    (tests/workflows/test_re_review.py)."""
    lead = demo(harness).durations.expiry_reminder.timedelta
    app = await harness.seed()
    handle = await harness.start(app, before_re_review_windows=True)
    await approve_to_notice(harness, handle, ["municipal", "provincial"])
    await harness.env.sleep(timedelta(seconds=25))  # the notice period (20 s)
    await harness.wait_state(handle, lambda s: s.status == "recognized")
    recognition = await recognition_of(harness, app.id)
    now = await harness.env.get_current_time()
    await harness.env.sleep(recognition.valid_until - lead - now - timedelta(seconds=5))
    await asyncio.sleep(0.3)
    assert await events(harness, "recognition.expiring", recognition.id) == []
    await harness.env.sleep(timedelta(seconds=10))
    [event] = await until_events(harness, "recognition.expiring", recognition.id)
    assert (event.uscc, event.aggregate_type) == (app.uscc, "recognition")
    assert event.data["valid_until"] == recognition.valid_until.date().isoformat()
    [audit] = [t for t in await transitions(harness, app.id) if t.action == "recognition_expiring"]
    assert abs((audit.at - (recognition.valid_until - lead)).total_seconds()) < 2
    result = await handle.result()  # expired: the re-review opens, and the reminder was sent once
    assert result.status == "recognized"
    assert len(await events(harness, "recognition.expiring", recognition.id)) == 1
    assert (await recognition_of(harness, app.id)).status == "expired"
    await record(handle, "expiry-reminded")
    async with harness.sessionmaker() as session:
        renewal = (
            await session.execute(select(Application).where(Application.re_review_of == recognition.id))
        ).scalar_one()
    await harness.env.client.get_workflow_handle(f"review-{renewal.id}").terminate("test done")


async def test_no_expiry_reminder_for_a_revoked_recognition(harness: Harness) -> None:
    app = await harness.seed()
    handle = await harness.start(app)
    await approve_to_notice(harness, handle, ["municipal", "provincial"])
    await harness.env.sleep(timedelta(seconds=25))
    await harness.wait_state(handle, lambda s: s.status == "recognized")
    await handle.execute_update(
        "revoke", RevokeRequest(actor=ADMIN, reason="fraud found in audit"), result_type=ReviewState
    )
    assert (await handle.result()).status == "recognized"
    recognition = await recognition_of(harness, app.id)
    assert recognition.status == "revoked"
    assert await events(harness, "recognition.expiring", recognition.id) == []
