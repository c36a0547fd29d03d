"""The benefits workflow: started by the review workflow on recognition (id ``benefits-{recognition_id}``).

Placeholder boundary; the credit domain implements the benefit schedule behind it.
"""

from __future__ import annotations

from temporalio import workflow

from workflows.inputs import BenefitsInput, BenefitsStop


@workflow.defn(name="BenefitsWorkflow")
class BenefitsWorkflow:
    def __init__(self) -> None:
        self._stop: BenefitsStop | None = None

    @workflow.run
    async def run(self, data: BenefitsInput) -> str:
        await workflow.wait_condition(lambda: self._stop is not None)
        assert self._stop is not None
        return self._stop.cause

    @workflow.signal(name="stop")
    def stop(self, request: BenefitsStop) -> None:
        self._stop = request
