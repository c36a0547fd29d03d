"""The disbursement workflow (credit domain): placeholder until the credit issue lands."""

from __future__ import annotations

from temporalio import workflow


@workflow.defn(name="DisbursementWorkflow")
class DisbursementWorkflow:
    @workflow.run
    async def run(self, drawdown_id: str) -> str:
        return drawdown_id
