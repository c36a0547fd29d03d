"""What the review workflow's activities write (workflows/activities.py), one transaction per attempt: the
screening result, each state change with its reviewer-queue row and audit row, escalations, objections,
recognitions and re-reviews. Each function takes the session first and the rest keyword-only, never commits
(the activity attempt owns the transaction) and is idempotent: a change is keyed by the workflow's event key,
so a retried attempt writes nothing twice. The rules the API applies are in ``service``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import announce, revocation
from services.applications import repository as repo
from services.applications.metrics import DeclaredMetrics, changed_figures
from services.applications.models import Application, Objection, Recognition, ReviewTask, Transition
from services.applications.screening import ScreeningResult
from services.applications.service import (
    FraudBarred,
    check_figures,
    check_not_barred,
    evidence_documents,
    filed,
    opening,
    review_input,
    screen_application,
)
from services.contracts import (
    Actor,
    EscalationInput,
    ExpiryReminder,
    FraudBar,
    FraudBarCheck,
    ObjectionUpdate,
    RecognitionChange,
    RecognitionChanged,
    RecognitionOutcome,
    RecognizeInput,
    ReReviewFiling,
    ReReviewInput,
    ReReviewOutcome,
    ReReviewWindow,
    ScreenAndEnterInput,
    ScreenOutcome,
    SupplementReminder,
    TransitionInput,
)
from services.errors import Conflict
from services.programs import Program, program_at
from services.vocabulary import whose

SYSTEM_ACTOR = Actor(sub="system", role="system")
# What an audit row is written for: a workflow event with its application and event key.
Audited = (
    TransitionInput
    | EscalationInput
    | ObjectionUpdate
    | RecognitionChange
    | SupplementReminder
    | ExpiryReminder
    | ReReviewWindow
)


async def _screen(
    session: AsyncSession, application: Application, *, programs: Mapping[str, Program], at: datetime
) -> ScreeningResult:
    """Screen the application's figures as they stand (``service.screen_application``: the ruleset of its
    batch, awards in the 3 years before the batch opened, the tiers held at ``at``), and keep the result."""
    result = await screen_application(session, application, programs=programs, at=at)
    application.screening = result.model_dump(mode="json")
    return result


async def record_screening(
    session: AsyncSession,
    *,
    application_id: uuid.UUID,
    programs: Mapping[str, Program],
    at: datetime | None = None,
) -> ScreenOutcome:
    """Screen the application (``_screen``) with the tiers held at ``at`` (default: when it was filed)."""
    application = await _locked(session, application_id)
    result = await _screen(session, application, programs=programs, at=at or application.created_at)
    return ScreenOutcome(passed=result.passed, ruleset=result.ruleset)


async def _locked(session: AsyncSession, application_id: uuid.UUID) -> Application:
    """The application, locked for this transaction's change (``LookupError``, not retried, if it is gone)."""
    application = await repo.get_application(session, application_id, for_update=True)
    if application is None:
        raise LookupError(f"application {application_id} does not exist")
    return application


async def screen_and_enter(
    session: AsyncSession, *, data: ScreenAndEnterInput, programs: Mapping[str, Program]
) -> ScreenOutcome:
    """The review's first step in one transaction: the screening result, ``workflow_started`` (the workflow
    is evidently running), and the transition to the first stage's queue - or to ``ineligible``."""
    application_id = data.application_id
    if await repo.transition_exists(session, data.event_key):  # a retry of an attempt that committed
        application = await repo.get_application(session, application_id)
        screening = application.screening if application is not None else None
        assert screening is not None, "a screened transition without a screening result"
        return ScreenOutcome(passed=screening["passed"], ruleset=screening["ruleset"])
    application = await _locked(session, application_id)
    result = await _screen(session, application, programs=programs, at=data.at)
    outcome = ScreenOutcome(passed=result.passed, ruleset=result.ruleset)
    application.workflow_started = True  # written with the transition's own update of the row
    await _apply(
        session,
        application,
        data=TransitionInput(
            application_id=data.application_id,
            event_key=data.event_key,
            actor=SYSTEM_ACTOR,
            action="screened",
            from_status="screening",
            to_status="in_review" if outcome.passed else "ineligible",
            stage=data.open_task.stage if outcome.passed else None,
            reason=f"passed {outcome.ruleset}"
            if outcome.passed
            else f"failed {outcome.ruleset}; see the screening result",
            at=data.at,
            open_task=data.open_task if outcome.passed else None,
        ),
        programs=programs,
    )
    return outcome


async def _note(
    session: AsyncSession,
    data: Audited,
    *,
    actor: Actor,
    action: str,
    status: str,
    reason: str | None,
    stage: str | None = None,
) -> None:
    """An audit row for an event that leaves the application's status as it is (an objection filed or
    resolved, a recognition that expired or was revoked, an escalation, a reminder)."""
    session.add(
        _audit(
            data, actor=actor, action=action, from_status=status, to_status=status, stage=stage, reason=reason
        )
    )
    await session.flush()


async def _system_note(
    session: AsyncSession, data: Audited, action: str, *, status: str, reason: str, stage: str | None = None
) -> None:
    """``_note`` of what the service itself did (an escalation, a reminder)."""
    await _note(session, data, actor=SYSTEM_ACTOR, action=action, status=status, reason=reason, stage=stage)


# The columns of an audit row a state change states as they are (``TransitionInput``'s fields of those names).
STATED = {"action", "from_status", "to_status", "stage", "reason", "internal_note"}


def _audit(
    data: Audited,
    *,
    actor: Actor,
    changes: list[dict[str, Any]] | None = None,
    **stated: str | None,
) -> Transition:
    """The audit row of ``data``'s event, by ``actor``: ``stated`` gives the row's ``STATED`` columns (action,
    from_status and to_status, stage, reason, internal_note: each left out is None); ``changes``, what the
    event changed, field by field."""
    return Transition(
        **stated,
        application_id=data.application_id,
        event_key=data.event_key,
        actor=actor.sub,
        role=actor.role,
        changes=changes or None,
        at=data.at,
    )


async def apply_transition(
    session: AsyncSession, *, data: TransitionInput, programs: Mapping[str, Program]
) -> None:
    if await repo.transition_exists(session, data.event_key):
        return
    await _apply(session, await _locked(session, data.application_id), data=data, programs=programs)


async def _apply(
    session: AsyncSession, application: Application, *, data: TransitionInput, programs: Mapping[str, Program]
) -> None:
    """``apply_transition`` to the application, locked by this transaction, whose event is not yet applied."""
    application_id = application.id
    changes: list[dict[str, Any]] = []
    rescreened = None
    if data.supplement is not None:
        changes, rescreened = await _supplement(session, application, data, programs)
    application.status = data.to_status
    application.stage = data.stage if data.to_status in ("in_review", "returned") else None
    application.supplement_due_at = data.supplement_due_at
    if data.to_status == "public_notice":
        application.notice_ends_at = data.notice_ends_at
    application.updated_at = data.at
    if data.close_task_as is not None:
        decided = data.close_task_as in ("approve", "reject", "return")
        closed = await repo.close_open_task(
            session,
            application_id,
            status="decided" if decided else "closed",
            decision=data.close_task_as if decided else None,
            decided_by=data.actor.sub if decided else None,
            at=data.at,
        )
        if decided and not closed:  # claimed by another reviewer since the API looked (service.check_claim)
            raise Conflict("Another reviewer holds this review task; it is theirs to decide until released.")
    if data.open_task is not None:
        session.add(
            ReviewTask(
                application_id=application_id,
                stage=data.open_task.stage,
                region_code=data.open_task.region_code,
                status="open",
                due_at=data.open_task.due_at,
                created_at=data.at,
            )
        )
    session.add(_audit(data, actor=data.actor, changes=changes, **data.model_dump(include=STATED)))
    await session.flush()
    if rescreened is not None:  # after the supplement's row, so history shows it second
        session.add(rescreened)
        await session.flush()
    await announce.transition(session, application, data)


async def _supplement(
    session: AsyncSession, application: Application, data: TransitionInput, programs: Mapping[str, Program]
) -> tuple[list[dict[str, Any]], Transition | None]:
    """A supplement's evidence and corrected figures, written with its transition: the documents it cites
    (the applicant's own; one already cited is not cited twice), the figures replaced, and - when a figure
    changed - the application screened again. Returns what changed, field by field (old and new values),
    and the re-screening's audit row, if any.

    A re-screening that fails the criteria does not end the review: the result (a reason per rule) replaces
    the screening result, the history says so, and the application goes back to the stage's queue like any
    supplement. Automated screening only gates what enters review; once a reviewer has asked for more
    information, the reviewer who asked decides what the corrected file is worth (reject it, or return it
    again) - a correction never silently ends an application that a person is reviewing."""
    assert data.supplement is not None
    content = data.supplement
    documents = await evidence_documents(session, uscc=application.uscc, ids=content.evidence)
    ids = [d.id for d in documents]
    cited = await repo.cite_documents(
        session, application.id, ids, source="supplement", cited_by=data.actor.sub, at=data.at
    )
    changes: list[dict[str, Any]] = []
    rescreened = None
    if content.metrics is not None:
        before = DeclaredMetrics.model_validate(application.metrics)
        after = DeclaredMetrics.model_validate(content.metrics)
        changes = [{"field": f, "old": old, "new": new} for f, old, new in changed_figures(before, after)]
        if changes:
            application.metrics = after.model_dump(mode="json")
            rescreened = await _rescreen(session, application, data, programs)
    changes += [
        {"field": "evidence", "old": None, "new": {"id": str(d.id), "kind": d.kind, "filename": d.filename}}
        for d in documents
        if d.id in cited
    ]
    return changes, rescreened


async def _rescreen(
    session: AsyncSession, application: Application, data: TransitionInput, programs: Mapping[str, Program]
) -> Transition:
    """Screen the corrected figures (the application's ruleset stays the one of its batch); the audit row
    says how it went and what changed in the result."""
    before = application.screening or {}
    result = await _screen(session, application, programs=programs, at=data.at)
    after = application.screening or {}
    if result.passed:
        reason = f"passed {result.ruleset} with the corrected figures"
    else:
        reason = (
            f"failed {result.ruleset} with the corrected figures; see the screening result. The review "
            f"goes on: the {data.stage} reviewer decides"
        )
    return Transition(
        application_id=application.id,
        event_key=f"{data.event_key}:rescreened",
        actor=SYSTEM_ACTOR.sub,
        role=SYSTEM_ACTOR.role,
        action="rescreened",
        from_status=data.to_status,
        to_status=data.to_status,
        stage=data.stage,
        reason=reason,
        changes=[
            {"field": f"screening.{name}", "old": before.get(name), "new": after.get(name)}
            for name in ("passed", "score", "direct_path")
            if before.get(name) != after.get(name)
        ]
        or None,
        at=data.at,
    )


async def escalate(session: AsyncSession, *, data: EscalationInput) -> None:
    if await repo.transition_exists(session, data.event_key):
        return
    application_id = data.application_id
    application = await repo.get_application(session, application_id)
    if application is None:
        raise LookupError(f"application {application_id} does not exist")
    await repo.escalate_open_task(session, application_id, escalated_to=data.escalated_to)
    await announce.escalated(session, application, data)
    reason = f"stage SLA passed; escalated to {data.escalated_to}"
    await _system_note(session, data, "sla_escalated", status="in_review", stage=data.stage, reason=reason)


async def record_objection(session: AsyncSession, *, data: ObjectionUpdate) -> None:
    if await repo.transition_exists(session, data.event_key):
        return
    application_id, objection_id = data.application_id, data.objection_id
    if data.resolution == "open":
        session.add(
            Objection(
                id=objection_id,
                application_id=application_id,
                filed_by=data.actor.sub,
                filed_role=data.actor.role,
                reason=data.reason,
                status="open",
                filed_at=data.at,
            )
        )
        action = "objection_filed"
        application = await repo.get_application(session, application_id)
        if application is None:
            raise LookupError(f"application {application_id} does not exist")
        await announce.objection_filed(session, application, data)
    else:
        objection = await repo.get_objection(session, objection_id)
        if objection is None:
            raise LookupError(f"objection {objection_id} does not exist")
        objection.status = data.resolution
        objection.resolved_by = data.actor.sub
        objection.resolution_reason = data.reason
        objection.resolved_at = data.at
        action = f"objection_{data.resolution}"
    await _note(session, data, actor=data.actor, action=action, status="public_notice", reason=data.reason)


async def fraud_bar(
    session: AsyncSession, *, data: FraudBarCheck, programs: Mapping[str, Program]
) -> FraudBar:
    """Whether the application's enterprise is barred at ``data.at`` after a revocation for fraud: the bar
    that refuses a filing (``service.check_not_barred``) also refuses the recognition of an application filed
    before the fraud was found - fraud bars the enterprise, whatever it had in review."""
    application = await repo.get_application(session, data.application_id)
    if application is None:
        raise LookupError(f"application {data.application_id} does not exist")
    program = program_at(programs, application.program, application.program_version)
    try:
        await check_not_barred(session, uscc=application.uscc, program=program, now=data.at)
    except FraudBarred as barred:
        return FraudBar(reason=barred.detail)
    return FraudBar()


async def recognize(
    session: AsyncSession, *, data: RecognizeInput, programs: dict[str, Program]
) -> RecognitionOutcome:
    if data.renews is not None:
        return await _renew(session, data=data, renews=data.renews, programs=programs)
    application_id = data.application_id
    existing = await repo.recognition_for_application(session, application_id)
    if existing is None:
        application = await _locked(session, application_id)
        program = program_at(programs, application.program, application.program_version)  # what judged it
        year = data.at.astimezone(UTC).year
        sequence = await repo.next_certificate_number(
            session, program=program.key, year=year, tier=application.tier
        )
        existing = Recognition(
            application_id=application_id,
            uscc=application.uscc,
            program=program.key,
            tier=application.tier,
            certificate_no=f"{program.key.upper()}-{year}-{application.tier.upper()}-{sequence:05d}",
            valid_from=data.at,
            valid_until=program.durations.validity.add_to(data.at),
            status="active",
        )
        session.add(existing)
        await _recognized(
            session,
            application,
            existing,
            data,
            f"notice period passed; certificate {existing.certificate_no}",
        )
    return _outcome(existing)


async def _recognized(
    session: AsyncSession,
    application: Application,
    recognition: Recognition,
    data: RecognizeInput,
    reason: str,
) -> None:
    """The application out of its notice and recognised (``recognition``), in its history and announced."""
    session.add(
        Transition(
            application_id=application.id,
            event_key=data.event_key,
            actor="system",
            role="system",
            action="recognized",
            from_status="public_notice",
            to_status="recognized",
            stage=None,
            reason=reason,
            at=data.at,
        )
    )
    application.status = "recognized"
    application.stage = None
    application.updated_at = data.at
    await session.flush()
    if recognition.status == "active":  # a re-review's of a title revoked or lapsed meanwhile grants nothing
        await announce.recognized(session, application, recognition)


def _outcome(recognition: Recognition) -> RecognitionOutcome:
    return RecognitionOutcome(
        recognition_id=recognition.id,
        certificate_no=recognition.certificate_no,
        valid_from=recognition.valid_from,
        valid_until=recognition.valid_until,
    )


async def _renew(
    session: AsyncSession, *, data: RecognizeInput, renews: uuid.UUID, programs: Mapping[str, Program]
) -> RecognitionOutcome:
    """An approved re-review, past its notice: the recognition it renews is extended by the program's validity
    from its current end (not from today: an early filing loses nothing), its window closed, and the re-review
    application recognised. A recognition revoked meanwhile stays revoked."""
    recognition = await repo.get_recognition(session, renews)
    if recognition is None:
        raise LookupError(f"recognition {renews} does not exist")
    if not await repo.transition_exists(session, data.event_key):
        application = await _locked(session, data.application_id)
        program = program_at(programs, application.program, application.program_version)  # what judged it
        # A recognition revoked meanwhile stays revoked (and one lapsed, lapsed): nothing to extend.
        reason = f"re-review approved, but certificate {recognition.certificate_no} is {recognition.status}"
        if recognition.status == "active":
            recognition.valid_until = program.durations.validity.add_to(recognition.valid_until)
            recognition.re_review_opened_at = None
            until = recognition.valid_until.astimezone(UTC).date().isoformat()
            reason = f"re-review approved; certificate {recognition.certificate_no} valid until {until}"
        await _recognized(session, application, recognition, data, reason)
    return _outcome(recognition)


async def change_recognition(session: AsyncSession, *, data: RecognitionChange) -> RecognitionChanged:
    """The recognition expires or is revoked (``revocation.revoke``: for fraud, with every other title of its
    enterprise, in this one transaction); what else was revoked with it, the same on a retried attempt."""
    recognition = await repo.get_recognition(session, data.recognition_id)
    if recognition is None:
        raise LookupError(f"recognition {data.recognition_id} does not exist")
    if await repo.transition_exists(session, data.event_key):
        if data.status == "revoked" and recognition.revoked_at == data.at:
            return RecognitionChanged(also_revoked=await revocation.revoked_with(session, recognition))
        return RecognitionChanged()
    also_revoked = []
    if data.status == "revoked":
        also_revoked = await revocation.revoke(
            session,
            recognition,
            actor=data.actor,
            reason=data.reason,
            revoked_for=data.revoked_for or "other",
            at=data.at,
            told=True,  # the review workflow tells each title's workflows (durably, after this activity)
        )
    elif recognition.status == "active":
        recognition.status = data.status
    await _note(
        session,
        data,
        actor=data.actor,
        action=f"recognition_{data.status}",
        status="recognized",
        reason=data.reason,
    )
    return RecognitionChanged(also_revoked=also_revoked)


async def remind_supplement(session: AsyncSession, *, data: SupplementReminder) -> None:
    """The review workflow's reminder before a supplement is due: the event for the enterprise and an audit
    row (under the reminder's event key: a retried attempt writes neither twice). An application no longer
    waiting for its supplement is not reminded."""
    if await repo.transition_exists(session, data.event_key):
        return
    application = await _locked(session, data.application_id)
    if application.status != "returned":
        return
    due = data.supplement_due_at.astimezone(UTC).isoformat(timespec="minutes")
    reason = f"the supplement is due at {due}; the enterprise was reminded"
    await _system_note(
        session, data, "supplement_due_soon", status="returned", stage=application.stage, reason=reason
    )
    await announce.supplement_due_soon(session, application, data.supplement_due_at)


async def _still_active(session: AsyncSession, data: ExpiryReminder | ReReviewWindow) -> Recognition | None:
    """The recognition a timer before its expiry is about, while it is active and the event not yet applied
    (None: nothing to do); ``LookupError`` if it is gone."""
    if await repo.transition_exists(session, data.event_key):
        return None
    recognition = await repo.get_recognition(session, data.recognition_id)
    if recognition is None:
        raise LookupError(f"recognition {data.recognition_id} does not exist")
    return recognition if recognition.status == "active" else None


async def remind_expiry(session: AsyncSession, *, data: ExpiryReminder) -> None:
    """The review workflow's reminder before a recognition expires: the event for the enterprise and an audit
    row on the recognized application (keyed by the event key). A recognition no longer active is not
    reminded."""
    recognition = await _still_active(session, data)
    if recognition is None:
        return
    until = recognition.valid_until.astimezone(UTC).date().isoformat()
    reason = f"the recognition is valid until {until}; the enterprise was reminded"
    await _system_note(session, data, "recognition_expiring", status="recognized", reason=reason)
    await announce.recognition_expiring(session, recognition)


async def open_re_review(
    session: AsyncSession, *, data: ReReviewInput, programs: dict[str, Program]
) -> ReReviewOutcome:
    recognition_id = data.recognition_id
    existing = await repo.re_review_of(session, recognition_id)
    original = await repo.get_application(session, data.application_id)
    if original is None:
        raise LookupError(f"application {data.application_id} does not exist")
    program = programs.get(original.program)
    if existing is None:
        if program is None:
            return ReReviewOutcome(application_id="", review=None)
        open_batches = program.open_batches(data.at.date())
        batch = open_batches[0].key if open_batches else original.batch
        existing = _re_review(
            original,
            uuid.uuid4(),
            batch=batch,
            programs=programs,
            region_code=original.region_code,
            metrics=original.metrics,
            by=SYSTEM_ACTOR,
            recognition_id=recognition_id,
            at=data.at,
        )
        session.add(existing)
        await session.flush()
        session.add(
            opening(
                existing,
                event_key=f"re-review-{recognition_id}",
                actor=(SYSTEM_ACTOR.sub, SYSTEM_ACTOR.role),
                at=data.at,
                action="opened_for_re_review",
                reason=f"recognition {recognition_id} expired; re-review (复核)",
            )
        )
        await session.flush()
    assert program is not None
    # A re-review opened at expiry (workflows started before re-review windows) is a new recognition's
    # review, as it always was: not one that extends the expired recognition.
    review = review_input(existing, program).model_copy(update={"re_review_of": None})
    return ReReviewOutcome(application_id=existing.id, review=review)


async def open_re_review_window(session: AsyncSession, *, data: ReReviewWindow) -> None:
    """The re-review window of an active recognition opens (the review workflow's timer, the program's
    ``re_review_window`` before expiry): marked on the recognition, an audit row on its application, and
    ``recognition.expiring`` for the enterprise - once per window (keyed by the event key)."""
    recognition = await _still_active(session, data)
    if recognition is None:
        return
    recognition.re_review_opened_at = data.at
    until = recognition.valid_until.astimezone(UTC).date().isoformat()
    reason = (
        f"the recognition is valid until {until}; its re-review (复核) is open: the enterprise files current "
        "figures and evidence before then"
    )
    await _system_note(session, data, "re_review_opened", status="recognized", reason=reason)
    await announce.recognition_expiring(session, recognition)


def _re_review(
    original: Application,
    application_id: uuid.UUID,
    *,
    batch: str,
    programs: Mapping[str, Program],
    region_code: str,
    metrics: dict[str, Any],
    by: Actor,
    recognition_id: uuid.UUID,
    at: datetime,
) -> Application:
    """The re-review of ``original``'s recognition as a new application in ``batch``, judged by that batch's
    ruleset and the program's version in force; its workflow is started by the recognition's own."""
    return filed(
        Application(
            id=application_id,
            **whose(original),
            batch=batch,
            region_code=region_code,
            metrics=metrics,
            submitted_by=by.sub,
            re_review_of=recognition_id,
            workflow_started=True,
        ),
        programs,
        at=at,
    )


async def file_re_review(
    session: AsyncSession, *, data: ReReviewFiling, programs: Mapping[str, Program]
) -> ReReviewOutcome:
    """The enterprise files the re-review of its recognition in the window: a new application
    (``re_review_of`` the recognition) with its current figures and evidence, in the batch open today (else
    the last that opened; else the recognised application's), judged by that batch's ruleset; its review is
    started by the recognition's workflow, as a child. Idempotent: the application's id comes from the
    workflow."""
    existing = await repo.get_application(session, data.re_review_id)
    original = await repo.get_application(session, data.application_id)
    if original is None:
        raise LookupError(f"application {data.application_id} does not exist")
    program = programs.get(original.program)
    if program is None:
        raise Conflict(
            f"Program {original.program} is no longer offered; its recognitions are not re-reviewed."
        )
    if existing is None:
        enterprise = await repo.get_enterprise(session, original.uscc)
        assert enterprise is not None  # a foreign key
        metrics = DeclaredMetrics.model_validate(data.metrics)
        check_figures(enterprise, metrics)
        documents = await evidence_documents(session, uscc=original.uscc, ids=data.evidence)
        today = data.at.date()
        opened = sorted((b for b in program.batches if b.opens_on <= today), key=lambda b: b.opens_on)
        batch = (program.open_batches(today) or opened[-1:] or [program.batch(original.batch)])[0].key
        existing = _re_review(
            original,
            data.re_review_id,
            batch=batch,
            programs=programs,
            region_code=enterprise.region_code,
            metrics=metrics.model_dump(mode="json"),
            by=data.actor,
            recognition_id=data.recognition_id,
            at=data.at,
        )
        session.add(existing)
        await session.flush()
        ids = [d.id for d in documents]
        await repo.cite_documents(session, existing.id, ids, cited_by=data.actor.sub, at=data.at)
        session.add(
            opening(
                existing,
                event_key=data.event_key,
                actor=(data.actor.sub, data.actor.role),
                at=data.at,
                reason=f"re-review (复核) of recognition {data.recognition_id}, with current figures",
            )
        )
        await session.flush()
        await announce.submitted(session, existing)
    return ReReviewOutcome(application_id=existing.id, review=review_input(existing, program))
