"""Activities of the review workflow. Each attempt is one transaction and is idempotent: transitions are
keyed by an event key from the workflow, so a retried attempt changes nothing twice. What is not worth
retrying (a row that is gone, a business rule, a refused value) is decided for every activity by the worker's
interceptor (``services.temporal.activity_failure``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from temporalio import activity

from services.applications import records
from services.contracts import (
    EscalationInput,
    ObjectionUpdate,
    RecognitionChange,
    RecognitionOutcome,
    RecognizeInput,
    ReReviewInput,
    ReReviewOutcome,
    ScreenAndEnterInput,
    ScreenInput,
    ScreenOutcome,
    TransitionInput,
)
from services.resources import Resources


class ReviewActivities:
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.screen_application,
            self.screen_and_enter,
            self.apply_transition,
            self.escalate_task,
            self.record_objection,
            self.recognize,
            self.change_recognition,
            self.open_re_review,
        ]

    @activity.defn(name="screen_application")
    async def screen_application(self, data: ScreenInput) -> ScreenOutcome:
        async with self.resources.sessionmaker.begin() as session:
            return await records.record_screening(session, application_id=uuid.UUID(data.application_id))

    @activity.defn(name="screen_and_enter")
    async def screen_and_enter(self, data: ScreenAndEnterInput) -> ScreenOutcome:
        """Run as a local activity: the review's first step costs the workflow no task round trips."""
        async with self.resources.sessionmaker.begin() as session:
            return await records.screen_and_enter(session, data=data)

    @activity.defn(name="apply_transition")
    async def apply_transition(self, data: TransitionInput) -> None:
        async with self.resources.sessionmaker.begin() as session:
            await records.apply_transition(session, data=data)

    @activity.defn(name="escalate_task")
    async def escalate_task(self, data: EscalationInput) -> None:
        async with self.resources.sessionmaker.begin() as session:
            await records.escalate(session, data=data)

    @activity.defn(name="record_objection")
    async def record_objection(self, data: ObjectionUpdate) -> None:
        async with self.resources.sessionmaker.begin() as session:
            await records.record_objection(session, data=data)

    @activity.defn(name="recognize")
    async def recognize(self, data: RecognizeInput) -> RecognitionOutcome:
        async with self.resources.sessionmaker.begin() as session:
            return await records.recognize(session, data=data, programs=self.resources.programs)

    @activity.defn(name="change_recognition")
    async def change_recognition(self, data: RecognitionChange) -> None:
        async with self.resources.sessionmaker.begin() as session:
            await records.change_recognition(session, data=data)

    @activity.defn(name="open_re_review")
    async def open_re_review(self, data: ReReviewInput) -> ReReviewOutcome:
        async with self.resources.sessionmaker.begin() as session:
            return await records.open_re_review(session, data=data, programs=self.resources.programs)
