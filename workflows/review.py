"""Placeholder replaced below."""

from temporalio import workflow


@workflow.defn(name="ReviewWorkflow")
class ReviewWorkflow:
    @workflow.run
    async def run(self, application_id: str) -> str:
        return application_id
