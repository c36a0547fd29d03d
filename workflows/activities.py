"""Activities of the review workflow. Each attempt is one transaction and is idempotent: transitions are
keyed by an event key from the workflow, so a retried attempt changes nothing twice. What is not worth
retrying (a row that is gone, a business rule, a refused value) is decided for every activity by the worker's
interceptor (``services.temporal.activity_failure``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from services import contracts
from services.applications import records
from workflows.base import Activities


class ReviewActivities(Activities):
    def all(self) -> list[Callable[..., Any]]:
        return [
            self.screen_application,
            self.screen_and_enter,
            self.apply_transition,
            self.escalate_task,
            self.record_objection,
            self.fraud_bar,
            self.recognize,
            self.change_recognition,
            self.open_re_review,
            self.open_re_review_window,
            self.file_re_review,
            self.remind_supplement,
            self.remind_expiry,
        ]

    @activity.defn(name="screen_application")
    async def screen_application(self, data: contracts.ScreenInput) -> contracts.ScreenOutcome:
        return await self._in_transaction(
            records.record_screening, application_id=data.application_id, programs=self.resources.programs
        )

    @activity.defn(name="screen_and_enter")
    async def screen_and_enter(self, data: contracts.ScreenAndEnterInput) -> contracts.ScreenOutcome:
        """Run as a local activity: the review's first step costs the workflow no task round trips."""
        return await self._in_transaction(
            records.screen_and_enter, data=data, programs=self.resources.programs
        )

    @activity.defn(name="apply_transition")
    async def apply_transition(self, data: contracts.TransitionInput) -> None:
        await self._in_transaction(records.apply_transition, data=data, programs=self.resources.programs)

    @activity.defn(name="escalate_task")
    async def escalate_task(self, data: contracts.EscalationInput) -> None:
        await self._in_transaction(records.escalate, data=data)

    @activity.defn(name="record_objection")
    async def record_objection(self, data: contracts.ObjectionUpdate) -> None:
        await self._in_transaction(records.record_objection, data=data)

    @activity.defn(name="fraud_bar")
    async def fraud_bar(self, data: contracts.FraudBarCheck) -> contracts.FraudBar:
        return await self._in_transaction(records.fraud_bar, data=data, programs=self.resources.programs)

    @activity.defn(name="recognize")
    async def recognize(self, data: contracts.RecognizeInput) -> contracts.RecognitionOutcome:
        return await self._in_transaction(records.recognize, data=data, programs=self.resources.programs)

    @activity.defn(name="change_recognition")
    async def change_recognition(self, data: contracts.RecognitionChange) -> contracts.RecognitionChanged:
        return await self._in_transaction(records.change_recognition, data=data)

    @activity.defn(name="open_re_review")
    async def open_re_review(self, data: contracts.ReReviewInput) -> contracts.ReReviewOutcome:
        return await self._in_transaction(records.open_re_review, data=data, programs=self.resources.programs)

    @activity.defn(name="open_re_review_window")
    async def open_re_review_window(self, data: contracts.ReReviewWindow) -> None:
        await self._in_transaction(records.open_re_review_window, data=data)

    @activity.defn(name="file_re_review")
    async def file_re_review(self, data: contracts.ReReviewFiling) -> contracts.ReReviewOutcome:
        return await self._in_transaction(records.file_re_review, data=data, programs=self.resources.programs)

    @activity.defn(name="remind_supplement")
    async def remind_supplement(self, data: contracts.SupplementReminder) -> None:
        await self._in_transaction(records.remind_supplement, data=data)

    @activity.defn(name="remind_expiry")
    async def remind_expiry(self, data: contracts.ExpiryReminder) -> None:
        await self._in_transaction(records.remind_expiry, data=data)
