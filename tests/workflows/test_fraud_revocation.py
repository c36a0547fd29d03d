"""Fraud revokes every title (../shared/DOMAIN.md): a revocation for fraud through one recognition's review
workflow revokes the enterprise's other recognitions too - another program's, held by its own review workflow,
and an imported one - in the activity's one transaction, and stops each one's benefits; another ground revokes
only the one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from devtools.devstack import free_port
from services.applications import imported as imported_titles
from services.applications import revocation
from services.applications.models import Application, Recognition, Transition
from services.applications.schemas import RevocationCreate
from services.auth import CurrentUser, Role
from services.contracts import Actor, BenefitsInput, ReviewState, RevokeRequest
from services.events import OutboxEvent
from services.programs import program_version
from services.resources import connect_temporal
from tests.support.factories import random_uscc
from tests.workflows import test_re_review as re_review
from tests.workflows.conftest import Harness
from tests.workflows.test_review_paths import ADMIN, approve_to_notice, in_review, record, transitions

pytestmark = pytest.mark.usefixtures("harness")


async def recognized(
    h: Harness, uscc: str, *, program: str, notice: timedelta
) -> tuple[WorkflowHandle[Any, ReviewState], ReviewState]:
    """An application of `uscc` to `program` approved at every stage and past its notice: recognised."""
    application = await h.seed(program=program, uscc=uscc)
    handle = await h.start(application)
    await approve_to_notice(h, handle, ["municipal", "provincial"])
    await h.env.sleep(notice.total_seconds() + 5)
    state = await h.wait_state(handle, lambda s: s.status == "recognized" and s.recognition_id is not None)
    return handle, state


async def imported(h: Harness, uscc: str) -> Recognition:
    """A little giant imported from the ministry's list, with its benefits workflow running."""
    async with h.sessionmaker.begin() as session:
        row = imported_title(uscc, since=datetime.now(UTC) - timedelta(days=3))
        session.add(row)
    await h.env.client.start_workflow(
        "BenefitsWorkflow",
        BenefitsInput(
            recognition_id=row.id,
            uscc=uscc,
            tier="little_giant",
            program="demo",
            valid_until=row.valid_until,
            program_version=program_version(h.resources.programs, "demo"),
        ),
        id=f"benefits-{row.id}",
        task_queue=h.task_queue,
    )
    return row


async def rows(h: Harness, *ids: uuid.UUID) -> list[Recognition]:
    async with h.sessionmaker() as session:
        found = await session.execute(select(Recognition).where(Recognition.id.in_(ids)))
        by_id = {r.id: r for r in found.scalars()}
    return [by_id[i] for i in ids]


async def revoked_events(h: Harness, *ids: uuid.UUID) -> dict[uuid.UUID, int]:
    async with h.sessionmaker() as session:
        events = await session.execute(
            select(OutboxEvent.aggregate_id).where(
                OutboxEvent.type == "recognition.revoked", OutboxEvent.aggregate_id.in_(ids)
            )
        )
        found = list(events.scalars())
    return {i: found.count(i) for i in ids}


async def test_a_revocation_for_fraud_revokes_every_title_and_stops_their_benefits(harness: Harness) -> None:
    uscc = random_uscc("500103")
    # Another program's title, kept by its own review workflow (a 5-day notice), then the demo one revoked.
    other_handle, other = await recognized(harness, uscc, program="chongqing-2020", notice=timedelta(days=5))
    handle, own = await recognized(harness, uscc, program="demo", notice=timedelta(seconds=20))
    listed = await imported(harness, uscc)
    assert own.recognition_id is not None
    assert other.recognition_id is not None

    state = await handle.execute_update(
        "revoke",
        RevokeRequest(actor=ADMIN, reason="forged R&D statements", revoked_for="fraud"),
        result_type=ReviewState,
    )

    assert {t.recognition_id for t in state.also_revoked} == {other.recognition_id, listed.id}
    by_id = {t.recognition_id: t for t in state.also_revoked}
    assert by_id[other.recognition_id].program == "chongqing-2020"
    assert by_id[other.recognition_id].application_id == other.application_id
    assert (by_id[listed.id].tier, by_id[listed.id].application_id) == ("little_giant", None)
    first, second, third = await rows(harness, own.recognition_id, other.recognition_id, listed.id)
    for row in (first, second, third):
        assert (row.status, row.revoked_for, row.revoked_by) == ("revoked", "fraud", ADMIN.sub)
        assert row.revoked_at == first.revoked_at  # one revocation, one moment
        assert row.stop_sent_at == row.revoked_at  # the review workflow tells them, durably
    assert first.revoked_reason == "forged R&D statements"
    for row in (second, third):
        assert row.revoked_reason == (
            f"revoked for fraud with certificate {first.certificate_no}: forged R&D statements"
        )
    ids = (own.recognition_id, other.recognition_id, listed.id)
    assert await revoked_events(harness, *ids) == dict.fromkeys(ids, 1)
    async with harness.sessionmaker() as session:
        history = await session.execute(
            select(Transition.action, Transition.reason).where(
                Transition.application_id == other.application_id, Transition.action == "recognition_revoked"
            )
        )
        assert list(history) == [("recognition_revoked", second.revoked_reason)]

    for recognition_id in ids:  # every title's benefits frozen
        benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition_id}")
        assert await benefits.result() == "revoked"
    # Both review workflows end their lifecycle (the other one told by signal), nothing extended or lapsed.
    assert (await handle.result()).status == "recognized"
    assert (await other_handle.result()).status == "recognized"
    await record(handle, "revoked-for-fraud")
    await record(other_handle, "revoked-with-another-title")
    second_after = (await rows(harness, other.recognition_id))[0]
    assert (second_after.status, second_after.valid_until) == ("revoked", second.valid_until)
    assert other.application_id is not None
    after = [t.action for t in await transitions(harness, other.application_id)]
    assert after[-1] == "recognition_revoked"  # its workflow ended at the signal: no window, no lapse
    assert not {"re_review_opened", "recognition_expired"} & set(after)

    # Again (the API refuses a revoked recognition with 409): the write itself finds nothing more to revoke.
    async with harness.sessionmaker.begin() as session:
        again = await session.get(Recognition, own.recognition_id)
        assert again is not None
        assert (
            await revocation.revoke(
                session,
                again,
                actor=Actor(sub="admin-2", role="admin"),
                reason="again",
                revoked_for="fraud",
                at=datetime.now(UTC),
                told=True,
            )
            == []
        )
        assert [t.recognition_id for t in await revocation.revoked_with(session, again)] == sorted(
            [other.recognition_id, listed.id]
        )
    assert await revoked_events(harness, *ids) == dict.fromkeys(ids, 1)
    assert [r.revoked_by for r in await rows(harness, *ids)] == [ADMIN.sub] * 3


async def test_a_revocation_for_another_reason_leaves_the_other_titles(harness: Harness) -> None:
    uscc = random_uscc("500103")
    handle, own = await recognized(harness, uscc, program="demo", notice=timedelta(seconds=20))
    listed = await imported(harness, uscc)
    assert own.recognition_id is not None

    state = await handle.execute_update(
        "revoke",
        RevokeRequest(actor=ADMIN, reason="moved abroad", revoked_for="other"),
        result_type=ReviewState,
    )

    assert state.also_revoked == []
    first, kept = await rows(harness, own.recognition_id, listed.id)
    assert (first.status, first.revoked_for) == ("revoked", "other")
    assert (kept.status, kept.revoked_at) == ("active", None)
    assert await revoked_events(harness, own.recognition_id, listed.id) == {
        own.recognition_id: 1,
        listed.id: 0,
    }
    assert (
        await harness.env.client.get_workflow_handle(f"benefits-{own.recognition_id}").result() == "revoked"
    )
    described = await harness.env.client.get_workflow_handle(f"benefits-{listed.id}").describe()
    assert described.status is not None
    assert described.status.name == "RUNNING"
    await harness.env.client.get_workflow_handle(f"benefits-{listed.id}").terminate("test done")


async def revoke_imported_for_fraud(harness: Harness, recognition_id: uuid.UUID) -> Any:
    """An admin revokes the imported title for fraud, as the API's route does (the request's session:
    ``revoke()`` commits it); the answer."""
    async with harness.sessionmaker() as session:
        row = await session.get(Recognition, recognition_id)
        assert row is not None
        return await imported_titles.revoke(
            session,
            harness.env.client,
            user=CurrentUser(sub="admin-1", role=Role.admin),
            key=None,
            recognition=row,
            data=RevocationCreate(reason="forged list entry", revoked_for="fraud"),
        )


async def test_an_imported_title_revoked_for_fraud_ends_the_review_workflows_title_too(
    harness: Harness,
) -> None:
    uscc = random_uscc("500103")
    handle, own = await recognized(harness, uscc, program="chongqing-2020", notice=timedelta(days=5))
    listed = await imported(harness, uscc)
    assert own.recognition_id is not None

    answer = await revoke_imported_for_fraud(harness, listed.id)

    assert [t.recognition_id for t in answer.also_revoked] == [own.recognition_id]
    assert [t.application_id for t in answer.also_revoked] == [own.application_id]
    first, second = await rows(harness, listed.id, own.recognition_id)
    assert (first.status, second.status, second.revoked_for) == ("revoked", "revoked", "fraud")
    assert None not in (first.stop_sent_at, second.stop_sent_at)  # told after the commit
    for recognition_id in (listed.id, own.recognition_id):
        benefits = harness.env.client.get_workflow_handle(f"benefits-{recognition_id}")
        assert await benefits.result() == "revoked"
    assert (await handle.result()).status == "recognized"  # told by signal: its lifecycle ended
    assert own.application_id is not None
    after = [t.action for t in await transitions(harness, own.application_id)]
    assert after[-1] == "recognition_revoked"
    assert not {"re_review_opened", "recognition_expired"} & set(after)


async def re_review_under_way(
    h: Harness,
) -> tuple[Any, WorkflowHandle[Any, ReviewState], Recognition, Any, WorkflowHandle[Any, ReviewState]]:
    """A recognition whose re-review was filed in its window and is at the municipal stage: the recognised
    application, its workflow, the title, the filing, and the re-review's workflow."""
    app, handle, held = await re_review.recognized(h)
    await re_review.sleep_until(h, held.valid_until - re_review.WINDOW + timedelta(seconds=5))
    await re_review.window_opened(h, held)
    filed = await re_review.file(h, handle, app)
    child = h.env.client.get_workflow_handle(f"review-{filed.application_id}", result_type=ReviewState)
    await in_review(h, child, "municipal")
    return app, handle, held, filed, child


async def test_a_title_held_by_its_undecided_re_review_is_revoked_and_never_extended(
    harness: Harness,
) -> None:
    app, handle, held, filed, child = await re_review_under_way(harness)
    await re_review.sleep_until(harness, held.valid_until + timedelta(seconds=20))  # held past its expiry
    listed = await imported(harness, app.uscc)

    answer = await revoke_imported_for_fraud(harness, listed.id)

    assert [t.recognition_id for t in answer.also_revoked] == [held.id]
    assert await harness.env.client.get_workflow_handle(f"benefits-{held.id}").result() == "revoked"
    # The re-review goes on through its stages; when its notice ends the enterprise is barred for the fraud,
    # so it is rejected and extends nothing: the title stays revoked.
    await approve_to_notice(harness, child, ["municipal", "provincial"])
    await harness.env.sleep(timedelta(seconds=25))
    assert (await child.result()).status == "rejected"
    await handle.result()
    after = await re_review.recognition_of(harness, app.id)
    assert (after.status, after.revoked_for, after.valid_until) == ("revoked", "fraud", held.valid_until)
    history = await transitions(harness, filed.application_id)
    assert "recognized" not in {t.to_status for t in history}
    assert history[-1].action == "barred_for_fraud"
    assert f"of {app.uscc} was revoked for fraud" in (history[-1].reason or "")  # either title, same moment


def imported_title(uscc: str, *, since: datetime, **changes: Any) -> Recognition:
    """A little giant of ``uscc`` imported from the ministry's list, valid for three years from ``since``;
    ``changes``: what else is true of it (revoked, ...)."""
    listed: dict[str, Any] = {
        "uscc": uscc,
        "program": "demo",
        "tier": "little_giant",
        "certificate_no": f"MIIT-{uuid.uuid4().hex[:10]}",
        "valid_from": since,
        "valid_until": since + timedelta(days=3 * 365),
        "status": "active",
        "source": "import",
        "list_reference": "工信部2026年第一批",
        "batch": "2026-1",
        "imported_by": "admin-1",
    }
    return Recognition(**{**listed, **changes})


async def revoked_for_fraud(h: Harness, uscc: str, *, at: datetime) -> Recognition:
    """An imported title of ``uscc`` (registered) as a revocation for fraud at ``at`` left it."""
    revoked = {"revoked_at": at, "revoked_for": "fraud", "revoked_reason": "forged", "revoked_by": ADMIN.sub}
    async with h.sessionmaker.begin() as session:
        row = imported_title(uscc, since=at - timedelta(days=300), status="revoked", **revoked)
        session.add(row)
    return row


async def test_an_application_on_notice_when_fraud_is_found_is_rejected(harness: Harness) -> None:
    """Fraud bars the enterprise (../shared/DOMAIN.md): an application it filed before the fraud was found -
    here, on public notice when another of its titles is revoked for fraud - is rejected when the notice
    ends, with the bar's reason, told to the enterprise; no certificate, no benefits."""
    uscc = random_uscc("500103")
    application = await harness.seed(uscc=uscc)
    handle = await harness.start(application)
    await approve_to_notice(harness, handle, ["municipal", "provincial"])
    other = await revoked_for_fraud(harness, uscc, at=datetime.now(UTC))  # found now, on another title
    await harness.env.sleep(25)  # past the notice period (20 s)
    state = await handle.result()
    assert (state.status, state.recognition_id, state.certificate_no) == ("rejected", None, None)
    barred = (await transitions(harness, application.id))[-1]
    assert (barred.action, barred.from_status, barred.to_status, barred.actor) == (
        "barred_for_fraud",
        "public_notice",
        "rejected",
        "system",
    )
    assert f"Recognition {other.certificate_no} of {uscc} was revoked for fraud" in (barred.reason or "")
    async with harness.sessionmaker() as session:
        assert (await session.get(Application, application.id)).status == "rejected"  # type: ignore[union-attr]
        granted = select(Recognition).where(Recognition.application_id == application.id)
        assert list(await session.scalars(granted)) == []
        told = list(
            await session.scalars(
                select(OutboxEvent).where(
                    OutboxEvent.type == "application.rejected", OutboxEvent.aggregate_id == application.id
                )
            )
        )
    assert [e.data["reason"] for e in told] == [barred.reason]
    await record(handle, "barred-for-fraud-at-recognition")


async def test_an_enterprise_barred_long_ago_is_recognised_once_the_bar_has_run_out(harness: Harness) -> None:
    """The bar lasts the program's ``fraud_bar`` (3 years) from the revocation, then no longer refuses."""
    uscc = random_uscc("500103")
    long_ago = datetime.now(UTC) - timedelta(days=3 * 366 + 1)
    application = await harness.seed(uscc=uscc)
    await revoked_for_fraud(harness, uscc, at=long_ago)
    handle = await harness.start(application)
    await approve_to_notice(harness, handle, ["municipal", "provincial"])
    await harness.env.sleep(25)
    state = await harness.wait_state(handle, lambda s: s.status == "recognized" and s.certificate_no)
    assert state.recognition_id is not None
    await handle.terminate("test done")


async def test_a_re_review_of_a_title_revoked_on_another_ground_is_approved_but_grants_nothing(
    harness: Harness,
) -> None:
    """Revoked on another ground while its re-review is under way: the re-review is approved (no bar), its
    history says the title is revoked, the title stays as it was, and the enterprise is not told it is
    recognised."""
    app, handle, held, filed, child = await re_review_under_way(harness)
    moved = RevokeRequest(actor=ADMIN, reason="moved abroad", revoked_for="other")
    await handle.execute_update("revoke", moved, result_type=ReviewState)

    await approve_to_notice(harness, child, ["municipal", "provincial"])
    await harness.env.sleep(timedelta(seconds=25))
    assert (await child.result()).status == "recognized"
    after = await re_review.recognition_of(harness, app.id)
    assert (after.status, after.revoked_for, after.valid_until) == ("revoked", "other", held.valid_until)
    [approved] = [t for t in await transitions(harness, filed.application_id) if t.to_status == "recognized"]
    assert approved.reason == f"re-review approved, but certificate {held.certificate_no} is revoked"
    async with harness.sessionmaker() as session:
        told = await session.scalars(
            select(OutboxEvent.type).where(OutboxEvent.aggregate_id == filed.application_id)
        )
        assert "application.recognized" not in list(told)


async def test_a_revocation_temporal_did_not_take_is_told_by_the_reconciler(harness: Harness) -> None:
    """An imported title revoked while Temporal does not answer (or by an API that dies after its commit):
    the revocation stands, its benefits are not told, and the title is left untold; the worker's reconciler
    tells them to stop (its credit line does not stay open) and marks it, once."""
    uscc = random_uscc("500103")
    await harness.seed(uscc=uscc)  # the enterprise, registered
    listed = await imported(harness, uscc)
    benefits = harness.env.client.get_workflow_handle(f"benefits-{listed.id}")
    away = harness.resources.settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with harness.sessionmaker() as session:
        row = await session.get(Recognition, listed.id)
        assert row is not None
        await imported_titles.revoke(
            session,
            await connect_temporal(away),
            user=CurrentUser(sub="admin-1", role=Role.admin),
            key=None,
            recognition=row,
            data=RevocationCreate(reason="listed in error", revoked_for="other"),
        )
    [untold] = await rows(harness, listed.id)
    assert (untold.status, untold.stop_sent_at) == ("revoked", None)
    assert (await benefits.describe()).status == WorkflowExecutionStatus.RUNNING

    def reconcile() -> Any:
        return imported_titles.tell_untold(harness.env.client, harness.sessionmaker, older_than_seconds=0)

    assert await reconcile() >= 1
    assert await benefits.result() == "revoked"
    [told] = await rows(harness, listed.id)
    assert told.stop_sent_at is not None
    await reconcile()
    [again] = await rows(harness, listed.id)
    assert again.stop_sent_at == told.stop_sent_at  # told once
