"""The benefits workflow: started by the review workflow on recognition (id ``benefits-{recognition_id}``).

It reads the program's schedule for the tier, opens the credit line, registers bridge-loan eligibility and
arms the listing rewards - each once per recognition, however often an activity is retried (the rows are
unique per recognition and kind). Then it waits for the signal ``stop`` (revoked or expired) or the end of
validity - which the signal ``extend`` moves (a re-review filed holds it open until decided, an approved one
extends it; EXTENSIBLE_VALIDITY) - and freezes: the credit line takes no new drawdowns and those awaiting
approval are rejected with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

from temporalio import workflow

from workflows.retries import until_done

with workflow.unsafe.imports_passed_through():
    from services.contracts import (
        BenefitGrant,
        BenefitSchedule,
        BenefitsExtension,
        BenefitsFreeze,
        BenefitsInput,
        BenefitsStop,
    )

ACTIVITY_TIMEOUT = timedelta(seconds=30)
# Patch: the validity the benefits wait out follows the recognition's re-reviews (signal ``extend``).
EXTENSIBLE_VALIDITY = "extensible-validity"
RETRY = until_done(timedelta(seconds=1), timedelta(seconds=60), but=["NotFound", "Unprocessable", "Conflict"])


@workflow.defn(name="BenefitsWorkflow")
class BenefitsWorkflow:
    def __init__(self) -> None:
        self._stop: BenefitsStop | None = None
        self._until: datetime | None = None  # None: while a re-review is undecided
        self._extensions = 0

    @workflow.run
    async def run(self, data: BenefitsInput) -> str:
        if not self._extensions:  # an `extend` may already have come in
            self._until = data.valid_until
        schedule: BenefitSchedule = await workflow.execute_activity(
            "benefit_schedule",
            data,
            result_type=BenefitSchedule,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        grants: list[BenefitGrant] = []
        if schedule.credit_line_limit is not None:
            grants.append(self._grant(data, "credit_line", schedule))
        if schedule.bridge_loan:
            grants.append(self._grant(data, "bridge_loan", schedule))
        if schedule.listing_reward:
            grants.append(self._grant(data, "listing_reward", schedule))
        for grant in grants:
            if self._stop is not None:
                break
            await workflow.execute_activity(
                "grant_benefit", grant, start_to_close_timeout=ACTIVITY_TIMEOUT, retry_policy=RETRY
            )
        if workflow.patched(EXTENSIBLE_VALIDITY):
            await self._wait_out_validity()
            remaining = 0.0
        else:  # workflows started before EXTENSIBLE_VALIDITY
            remaining = (data.valid_until - workflow.now()).total_seconds()
        if self._stop is None and remaining > 0:
            try:
                await workflow.wait_condition(
                    lambda: self._stop is not None, timeout=timedelta(seconds=remaining)
                )
            except TimeoutError:
                pass
        stop = self._stop or BenefitsStop(reason="the recognition's validity ended", cause="expired")
        await workflow.execute_activity(
            "freeze_benefits",
            BenefitsFreeze(recognition_id=data.recognition_id, reason=stop.reason, at=workflow.now()),
            result_type=int,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        return stop.cause

    @staticmethod
    def _grant(
        data: BenefitsInput,
        kind: Literal["credit_line", "bridge_loan", "listing_reward"],
        schedule: BenefitSchedule,
    ) -> BenefitGrant:
        return BenefitGrant(
            **data.model_dump(include={"recognition_id", "uscc", "tier", "program"}),
            kind=kind,
            amount=schedule.credit_line_limit if kind == "credit_line" else None,
        )

    async def _wait_out_validity(self) -> None:
        """Until stopped or the validity ends, as ``extend`` last set it."""
        while self._stop is None:
            changed = self._changed(self._extensions)
            if self._until is None:
                await workflow.wait_condition(changed)
                continue
            remaining = self._until - workflow.now()
            if remaining <= timedelta(0):
                return
            try:
                await workflow.wait_condition(changed, timeout=remaining)
            except TimeoutError:
                if not changed():
                    return

    def _changed(self, seen: int) -> Callable[[], bool]:
        """Stopped, or extended since `seen` extensions."""
        return lambda: self._stop is not None or self._extensions != seen

    @workflow.signal(name="extend")
    def extend(self, request: BenefitsExtension) -> None:
        self._until = request.valid_until
        self._extensions += 1

    @workflow.signal(name="stop")
    def stop(self, request: BenefitsStop) -> None:
        if self._stop is None:
            self._stop = request
