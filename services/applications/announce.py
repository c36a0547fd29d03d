"""What the applications domain tells the outbox (services/events.py), written by the functions that make
each change, in their transaction: which events a state change raises and who hears them.

- The enterprise hears of everything that happens to its application and recognitions.
- The reviewers of a stage (its level, in a region covering the application's) hear when a task opens in
  their queue and when one of theirs is overdue or objected to; the program's backup group hears of an
  escalation to it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.applications.models import Application, Recognition
from services.contracts import EscalationInput, ObjectionUpdate, TransitionInput
from services.events import (
    ApplicationDecided,
    ApplicationOnNotice,
    ApplicationRecognized,
    ApplicationRejected,
    ApplicationReturned,
    ApplicationScreened,
    ApplicationSubmitted,
    ApplicationSupplemented,
    ApplicationWithdrawn,
    Audience,
    ObjectionFiled,
    RecognitionExpiring,
    RecognitionRevoked,
    ReviewTaskEscalated,
    ReviewTaskOverdue,
    SupplementDueSoon,
    emit,
)


def _columns(row: Application | Recognition, *names: str) -> dict[str, Any]:
    return {name: getattr(row, name) for name in ("uscc", "program", "tier", *names)}


def _about(application: Application) -> dict[str, Any]:
    return {"application_id": application.id, **_columns(application, "status")}


def _recognition(recognition: Recognition) -> dict[str, Any]:
    return {
        "recognition_id": recognition.id,
        "valid_until": recognition.valid_until.date(),
        **_columns(recognition),
    }


def _enterprise(application: Application) -> Audience:
    return Audience(uscc=application.uscc)


def _enterprise_and_stage(application: Application, stage: str | None) -> Audience:
    """The enterprise, and the reviewers of ``stage`` whose region covers the application."""
    if stage is None:
        return _enterprise(application)
    return Audience(uscc=application.uscc, reviewer_level=stage, region_code=application.region_code)


async def submitted(session: AsyncSession, application: Application) -> None:
    await emit(
        session,
        ApplicationSubmitted(**_about(application), batch=application.batch),
        _enterprise(application),
    )


def _failed_rules(application: Application) -> list[str]:
    screening = application.screening or {}
    return [str(rule.get("rule", "")) for rule in screening.get("rules", []) if rule.get("passed") is False]


async def transition(session: AsyncSession, application: Application, data: TransitionInput) -> None:
    """The events of one state change (``records.apply_transition``), the application already changed."""
    about = _about(application)
    opened = data.open_task.stage if data.open_task is not None else None
    if data.action == "screened":
        screening = application.screening or {}
        await emit(
            session,
            ApplicationScreened(
                **about, passed=bool(screening.get("passed")), failed_rules=_failed_rules(application)
            ),
            _enterprise_and_stage(application, opened),
        )
        return
    if data.close_task_as in ("approve", "reject", "return"):
        assert data.stage is not None
        await emit(
            session,
            ApplicationDecided(
                **about, stage=data.stage, decision=data.close_task_as, reason=data.reason or ""
            ),
            _enterprise_and_stage(application, opened),
        )
    if data.to_status == "returned":
        await emit(
            session,
            ApplicationReturned(
                **about,
                stage=data.stage or "",
                reason=data.reason or "",
                supplement_due_at=data.supplement_due_at,
            ),
            _enterprise(application),
        )
    elif data.to_status == "public_notice" and data.from_status != "public_notice":
        await emit(
            session,
            ApplicationOnNotice(**about, notice_ends_at=data.notice_ends_at),
            _enterprise(application),
        )
    elif data.to_status == "withdrawn":
        await emit(
            session,
            ApplicationWithdrawn(**about, reason=data.reason or data.action),
            _enterprise(application),
        )
    elif data.to_status == "rejected" and data.close_task_as != "reject":  # a stage's: decided, above
        await emit(
            session,
            ApplicationRejected(**about, reason=data.reason or data.action),
            _enterprise(application),
        )
    elif data.action == "supplemented":
        # Back in the stage's queue: its reviewers hear, with how the corrected figures screened.
        await emit(
            session,
            ApplicationSupplemented(
                **about, stage=data.stage or "", passed=bool((application.screening or {}).get("passed"))
            ),
            _enterprise_and_stage(application, opened),
        )


async def escalated(session: AsyncSession, application: Application, data: EscalationInput) -> None:
    """A stage's SLA passed: overdue for its reviewers and the backup group; escalated for the group."""
    about = _about(application)
    await emit(
        session,
        ReviewTaskOverdue(**about, stage=data.stage, due_at=data.at, escalation_group=data.escalated_to),
        Audience(reviewer_level=data.stage, region_code=application.region_code, group=data.escalated_to),
    )
    await emit(
        session,
        ReviewTaskEscalated(**about, stage=data.stage, escalation_group=data.escalated_to),
        Audience(group=data.escalated_to),
    )


async def objection_filed(session: AsyncSession, application: Application, data: ObjectionUpdate) -> None:
    await emit(
        session,
        ObjectionFiled(**_about(application), objection_id=data.objection_id),
        _enterprise(application),  # and admins, who resolve objections
    )


async def recognized(session: AsyncSession, application: Application, recognition: Recognition) -> None:
    await emit(
        session,
        ApplicationRecognized(
            **_about(application),
            recognition_id=recognition.id,
            certificate_no=recognition.certificate_no,
            valid_until=recognition.valid_until.date(),
        ),
        _enterprise(application),
    )


async def supplement_due_soon(session: AsyncSession, application: Application, due_at: datetime) -> None:
    """The review workflow's reminder: the supplement of a returned application is due at ``due_at``."""
    await emit(
        session, SupplementDueSoon(**_about(application), supplement_due_at=due_at), _enterprise(application)
    )


async def recognition_expiring(session: AsyncSession, recognition: Recognition) -> None:
    """The review workflow's reminder: the recognition's validity ends soon (the enterprise; admins hear of
    every event)."""
    await emit(
        session,
        RecognitionExpiring(**_recognition(recognition)),
        Audience(uscc=recognition.uscc),
    )


async def revoked(session: AsyncSession, recognition: Recognition, reason: str) -> None:
    await emit(
        session,
        RecognitionRevoked(**_recognition(recognition), reason=reason),
        Audience(uscc=recognition.uscc),
    )
