"""Talking to the review workflows: start one per application, send reviewer and applicant actions as
Updates, and turn their refusals into problems."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from services.applications.models import Application
from services.applications.service import review_input
from services.errors import Conflict, Forbidden, ServiceUnavailable, temporal_unreachable
from services.programs import Program
from workflows.inputs import ReviewState

log = structlog.get_logger(__name__)


def workflow_id(application_id: uuid.UUID | str) -> str:
    return f"review-{application_id}"


async def start_review(
    temporal: Client, *, application: Application, program: Program, task_queue: str
) -> None:
    """Start the application's review workflow; starting it again is harmless (same id, USE_EXISTING)."""
    try:
        await temporal.start_workflow(
            "ReviewWorkflow",
            review_input(application, program),
            id=workflow_id(application.id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    except (RPCError, RuntimeError) as exc:
        if not temporal_unreachable(exc):
            raise
        raise ServiceUnavailable(
            "The workflow engine is unavailable; the application is saved and its "
            "review will start automatically."
        ) from exc


async def mark_started(session: AsyncSession, application_id: uuid.UUID) -> None:
    await session.execute(
        update(Application).where(Application.id == application_id).values(workflow_started=True)
    )


async def send_update(
    temporal: Client, *, application_id: uuid.UUID, name: str, arg: Any, update_id: str | None = None
) -> ReviewState:
    handle = temporal.get_workflow_handle(workflow_id(application_id))
    try:
        result: ReviewState = await handle.execute_update(name, arg, id=update_id, result_type=ReviewState)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError):
            if cause.type == "Forbidden":
                raise Forbidden(cause.message) from None
            if cause.type == "Conflict":
                raise Conflict(cause.message) from None
        log.warning("update_failed", name=name, error=str(cause))
        raise Conflict("The application could not take this action in its current state.") from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict("The application's review has finished; it no longer takes this action.") from None
        raise
    return result


async def reconcile(
    temporal: Client,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    programs: dict[str, Program],
    task_queue: str,
    older_than_seconds: float = 30.0,
) -> int:
    """Start workflows for committed applications that have none (the API died between commit and start)."""
    from datetime import UTC, datetime, timedelta

    from services.applications import repository as repo

    started = 0
    async with sessionmaker.begin() as session:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        for application in await repo.applications_without_workflow(session, older_than=cutoff):
            program = programs.get(application.program)
            if program is None:
                continue
            await start_review(temporal, application=application, program=program, task_queue=task_queue)
            await mark_started(session, application.id)
            started += 1
    if started:
        log.info("reconciled", started=started)
    return started
