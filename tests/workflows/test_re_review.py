"""Re-review (复核) as the policy runs it (issue 17, part 3), in the time-skipping server with the real
activities: the demo program's `re_review_window` (60 s) before its 300 s validity ends, a timer opens the
re-review; the enterprise files current figures (Update `file_re_review`), which starts the re-review's own
review as a child. The recognition holds while that is undecided, is extended by the validity on approval,
and ends at the later of its expiry and the decision otherwise; without a filing it lapses at expiry. A
review started before re-review windows (RE_REVIEW_WINDOW) still completes the old way after the change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from services.applications import repository as repo
from services.applications.models import Application, Recognition
from services.applications.service import review_input
from services.config import Settings
from services.contracts import ReReviewFiled, ReReviewRequest, ReviewState
from tests.support.factories import strong_metrics
from tests.support.resources import borrowing
from tests.workflows.conftest import Harness
from tests.workflows.test_reminders import events, until_events
from tests.workflows.test_review_paths import (
    applicant,
    approve_to_notice,
    decide,
    in_review,
    record,
    reviewer,
    transitions,
)
from workflows import worker as worker_module
from workflows.worker import build_worker, workflow_classes

WINDOW = timedelta(seconds=60)  # programs/demo.toml durations.re_review_window
VALIDITY = timedelta(seconds=300)


async def recognized(h: Harness) -> tuple[Application, WorkflowHandle[Any, ReviewState], Recognition]:
    app = await h.seed()
    handle = await h.start(app)
    await approve_to_notice(h, handle, ["municipal", "provincial"])
    await h.env.sleep(timedelta(seconds=25))  # the notice period (20 s)
    await h.wait_state(handle, lambda s: s.status == "recognized")
    return app, handle, await recognition_of(h, app.id)


async def recognition_of(h: Harness, application_id: uuid.UUID) -> Recognition:
    async with h.sessionmaker() as session:
        return (
            await session.execute(select(Recognition).where(Recognition.application_id == application_id))
        ).scalar_one()


async def sleep_until(h: Harness, moment: datetime) -> None:
    await h.env.sleep(moment - await h.env.get_current_time())


async def file(h: Harness, handle: WorkflowHandle[Any, Any], app: Application) -> ReReviewFiled:
    metrics = strong_metrics()
    metrics["years"][-1]["revenue"] = "125000000.00"  # current figures, declared anew
    result: ReReviewFiled = await handle.execute_update(
        "file_re_review",
        ReReviewRequest(actor=applicant(app.uscc), metrics=metrics),
        result_type=ReReviewFiled,
    )
    return result


async def window_opened(h: Harness, recognition: Recognition) -> None:
    """Wait until the window's activity has run (the timer fired; its activity runs in real time)."""
    await until_events(h, "recognition.expiring", recognition.id)


async def test_the_window_opens_before_expiry_and_without_a_filing_the_recognition_lapses(
    harness: Harness,
) -> None:
    app, handle, recognition = await recognized(harness)
    with pytest.raises(WorkflowUpdateFailedError) as refused:  # not yet: the window is closed
        await file(harness, handle, app)
    assert isinstance(refused.value.cause, ApplicationError)
    assert refused.value.cause.type == "Conflict"
    assert "not open" in refused.value.cause.message
    await sleep_until(harness, recognition.valid_until - WINDOW - timedelta(seconds=5))
    assert await events(harness, "recognition.expiring", recognition.id) == []
    await harness.env.sleep(timedelta(seconds=10))
    await window_opened(harness, recognition)
    opened = await recognition_of(harness, app.id)
    assert opened.re_review_opened_at is not None
    assert abs((opened.re_review_opened_at - (recognition.valid_until - WINDOW)).total_seconds()) < 2
    assert "re_review_opened" in [t.action for t in await transitions(harness, app.id)]

    result = await handle.result()  # nothing filed: it lapses at expiry
    assert result.status == "recognized"
    lapsed = await recognition_of(harness, app.id)
    assert lapsed.status == "expired"
    assert lapsed.valid_until == recognition.valid_until
    [expired] = [t for t in await transitions(harness, app.id) if t.action == "recognition_expired"]
    assert abs((expired.at - recognition.valid_until).total_seconds()) < 2
    async with harness.sessionmaker() as session:
        assert await repo.re_review_of(session, recognition.id) is None  # no re-review of the old figures
    benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition.id}")
    assert await benefits.result() == "expired"
    assert len(await events(harness, "recognition.expiring", recognition.id)) == 1
    await record(handle, "re-review-lapsed")


async def test_an_approved_re_review_extends_the_recognition_which_holds_while_it_is_undecided(
    harness: Harness,
) -> None:
    app, handle, recognition = await recognized(harness)
    await sleep_until(harness, recognition.valid_until - WINDOW + timedelta(seconds=5))
    await window_opened(harness, recognition)
    filed = await file(harness, handle, app)
    assert (filed.recognition_id, filed.valid_until) == (recognition.id, recognition.valid_until)
    with pytest.raises(WorkflowUpdateFailedError):  # once per window
        await file(harness, handle, app)
    renewal = await harness.row(filed.application_id)
    assert (renewal.re_review_of, renewal.tier, renewal.submitted_by) == (
        recognition.id,
        app.tier,
        f"user-{app.uscc}",
    )
    assert renewal.metrics["years"][-1]["revenue"] == "125000000.00"  # the current figures, not the old
    child = harness.env.client.get_workflow_handle(f"review-{filed.application_id}", result_type=ReviewState)
    await in_review(harness, child, "municipal")

    # Past its expiry with the re-review undecided: the title and its benefits hold.
    await sleep_until(harness, recognition.valid_until + timedelta(seconds=20))
    held = await recognition_of(harness, app.id)
    assert held.status == "active"
    now = datetime.now(UTC) + timedelta(days=1)  # whatever the clock: past valid_until
    async with harness.sessionmaker() as session:
        assert recognition.id in {r.id for r in await repo.current_tiers(session, app.uscc, now)}
        assert await repo.re_review_pending(session, recognition.id)
    benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition.id}")
    assert (await benefits.describe()).status == WorkflowExecutionStatus.RUNNING
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

    # Approved at both stages, past its notice: extended by the validity from its old end.
    await approve_to_notice(harness, child, ["municipal", "provincial"])
    await harness.env.sleep(timedelta(seconds=25))
    decided = await child.result()
    assert decided.status == "recognized"
    assert decided.recognition_id == recognition.id
    extended = await recognition_of(harness, app.id)
    assert extended.valid_until == recognition.valid_until + VALIDITY
    assert extended.status == "active"
    assert extended.re_review_opened_at is None
    assert decided.valid_until == extended.valid_until
    state = await harness.wait_state(handle, lambda s: s.valid_until == extended.valid_until)
    assert state.status == "recognized"
    async with harness.sessionmaker() as session:
        assert await repo.re_review_pending(session, recognition.id) is False
    assert (await benefits.describe()).status == WorkflowExecutionStatus.RUNNING

    # The next period opens its own window.
    await sleep_until(harness, extended.valid_until - WINDOW + timedelta(seconds=5))
    await until_events(harness, "recognition.expiring", recognition.id, count=2)
    assert (await recognition_of(harness, app.id)).re_review_opened_at is not None
    await record(handle, "re-review-renewed")
    await handle.terminate("test done")
    await benefits.terminate("test done")


async def test_a_rejected_re_review_ends_the_recognition_at_the_later_of_expiry_and_the_decision(
    harness: Harness,
) -> None:
    app, handle, recognition = await recognized(harness)
    await sleep_until(harness, recognition.valid_until - WINDOW + timedelta(seconds=5))
    await window_opened(harness, recognition)
    filed = await file(harness, handle, app)
    child = harness.env.client.get_workflow_handle(f"review-{filed.application_id}", result_type=ReviewState)
    await in_review(harness, child, "municipal")
    await sleep_until(harness, recognition.valid_until + timedelta(seconds=30))
    assert (await recognition_of(harness, app.id)).status == "active"  # undecided: it holds
    state = await decide(child, reviewer("municipal"), "reject")
    assert state.status == "rejected"
    result = await handle.result()  # the decision came after expiry: it ends now
    assert result.status == "recognized"
    ended = await recognition_of(harness, app.id)
    assert ended.status == "expired"
    assert ended.valid_until == recognition.valid_until
    [expired] = [t for t in await transitions(harness, app.id) if t.action == "recognition_expired"]
    assert expired.at >= recognition.valid_until + timedelta(seconds=29)
    assert "rejected" in (expired.reason or "")
    benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition.id}")
    assert await benefits.result() == "expired"
    await record(handle, "re-review-rejected")


async def test_a_re_review_rejected_before_expiry_leaves_the_recognition_until_expiry(
    harness: Harness,
) -> None:
    app, handle, recognition = await recognized(harness)
    await sleep_until(harness, recognition.valid_until - WINDOW + timedelta(seconds=5))
    await window_opened(harness, recognition)
    filed = await file(harness, handle, app)
    child = harness.env.client.get_workflow_handle(f"review-{filed.application_id}", result_type=ReviewState)
    await in_review(harness, child, "municipal")
    await decide(child, reviewer("municipal"), "reject")
    assert (await child.result()).status == "rejected"
    assert (await recognition_of(harness, app.id)).status == "active"
    result = await handle.result()
    assert result.status == "recognized"
    [expired] = [t for t in await transitions(harness, app.id) if t.action == "recognition_expired"]
    assert abs((expired.at - recognition.valid_until).total_seconds()) < 2
    benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition.id}")
    assert await benefits.result() == "expired"


async def test_a_review_started_before_re_review_windows_completes_after_the_change(
    time_skipping: WorkflowEnvironment,
    engine: AsyncEngine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review started by the code before re-review windows (its input has none) is recognised and waits
    for expiry; a worker of today's code then replays its history from the start (a new worker has no
    cache) and completes it the old way - expiry, then a re-review of the old figures - and its whole
    history replays."""
    queue = f"ts-{uuid.uuid4().hex[:10]}"
    http = httpx.AsyncClient()
    resources = borrowing(settings, engine, time_skipping.client, http, task_queue=queue)
    h = Harness(env=time_skipping, resources=resources, task_queue=queue)
    app = await h.seed()
    data = review_input(app, resources.programs["demo"])
    before = data.model_copy(
        update={"durations": data.durations.model_copy(update={"re_review_window": None})}
    )
    with monkeypatch.context() as patch:
        # No sticky queue to the worker that goes away (the test server would never time it out).
        patch.setitem(worker_module.WORKER_OPTIONS, "max_cached_workflows", 0)
        old_worker = build_worker(time_skipping.client, resources, task_queue=queue)
    async with old_worker:
        handle = await time_skipping.client.start_workflow(
            "ReviewWorkflow", before, id=f"review-{app.id}", task_queue=queue, result_type=ReviewState
        )
        await approve_to_notice(h, handle, ["municipal", "provincial"])
        await time_skipping.sleep(timedelta(seconds=25))
        await h.wait_state(handle, lambda s: s.status == "recognized")
    recognition = await recognition_of(h, app.id)
    async with build_worker(time_skipping.client, resources, task_queue=queue):
        result = await handle.result()
        assert result.status == "recognized"
        assert (await recognition_of(h, app.id)).status == "expired"
        async with h.sessionmaker() as session:
            renewal = await repo.re_review_of(session, recognition.id)
        assert renewal is not None
        assert renewal.metrics == app.metrics  # the old way: the old figures, after expiry
        await time_skipping.client.get_workflow_handle(f"review-{renewal.id}").terminate("test done")
    history = await handle.fetch_history()
    replayer = Replayer(workflows=workflow_classes(), data_converter=pydantic_data_converter)
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert replayed.replay_failure is None
    activities = {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    assert "open_re_review" in activities
    assert "open_re_review_window" not in activities
    await http.aclose()
