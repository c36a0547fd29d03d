"""Talking to the review workflows: start one per application, send reviewer and applicant actions as
Updates, and turn their refusals into problems."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from services import temporal as temporal_boundary
from services.applications import repository as repo
from services.applications.models import Application
from services.applications.service import Reviewed, review_input
from services.contracts import (
    REVIEW_WORKFLOW,
    ReReviewFiled,
    ReReviewRequest,
    ReviewState,
    ReviewUpdate,
    review_workflow_id,
    search_attributes,
)
from services.programs import Program, program_at

log = structlog.get_logger(__name__)


async def start_review(temporal: Client, *, application: Reviewed, program: Program, task_queue: str) -> None:
    """Start the application's review workflow; starting it again is harmless (same id)."""
    data = review_input(application, program)
    await temporal_boundary.start_workflow(
        temporal,
        REVIEW_WORKFLOW,
        data,
        id=review_workflow_id(application.id),
        task_queue=task_queue,
        search_attributes=search_attributes(
            uscc=data.uscc, program=data.program, tier=data.tier, stage="screening"
        ),
        unavailable="The workflow engine is unavailable; the application is saved and its "
        "review will start automatically.",
    )


async def start_after_commit(
    session: AsyncSession,
    temporal: Client,
    *,
    application: Reviewed,
    programs: dict[str, Program],
    task_queue: str,
) -> None:
    """The write-then-start protocol's second half (services/temporal.py) for an application the request
    has written (``application``: as the request answers it, so nothing is read again): commit it (with the
    request's idempotent answer), then start its review. The workflow's first activity marks the application
    started; an API that dies in between leaves a committed, unstarted application for ``reconcile``."""
    await session.commit()
    program = program_at(programs, application.program, application.program_version)  # the one judging it
    await start_review(temporal, application=application, program=program, task_queue=task_queue)


async def mark_started(session: AsyncSession, application_id: uuid.UUID) -> None:
    await session.execute(
        update(Application).where(Application.id == application_id).values(workflow_started=True)
    )


async def send_update(
    temporal: Client,
    *,
    application_id: uuid.UUID,
    name: ReviewUpdate,
    arg: Any,
    update_id: str | None = None,
) -> ReviewState:
    return await temporal_boundary.execute_update(
        temporal,
        review_workflow_id(application_id),
        name,
        arg,
        update_id=update_id,
        result_type=ReviewState,
        refused="The application could not take this action in its current state.",
        finished="The application's review has finished; it no longer takes this action.",
    )


async def file_re_review(
    temporal: Client, *, application_id: uuid.UUID, request: ReReviewRequest, update_id: str | None
) -> ReReviewFiled:
    """The re-review of the recognition granted on ``application_id``, filed with its review workflow."""
    return await temporal_boundary.execute_update(
        temporal,
        review_workflow_id(application_id),
        "file_re_review",
        request,
        update_id=update_id,
        result_type=ReReviewFiled,
        refused="The recognition could not take a re-review in its current state.",
        finished="The recognition's workflow has finished; it takes no re-review.",
    )


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

    started = 0
    async with sessionmaker.begin() as session:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        for application in await repo.applications_without_workflow(session, older_than=cutoff):
            if application.program not in programs:
                continue
            program = program_at(programs, application.program, application.program_version)
            await start_review(temporal, application=application, program=program, task_queue=task_queue)
            await mark_started(session, application.id)
            started += 1
    if started:
        log.info("reconciled", started=started)
    return started
