"""The bank reconciliation of a day: one activity compares the bank's statement with the ledger and keeps the
day's run and mismatches (services/credit/reconciliation.py).

Started by the Temporal Schedule ``reconciliation-daily`` (each day at 06:00 Asia/Shanghai, for the day
before: the schedule's input names no day, so the day is the one before the scheduled time) or by finance
(``POST /reconciliations/{date}/run``, for the day it names). Running a day again replaces its run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from services import contracts

RECONCILE_TIMEOUT = timedelta(minutes=5)
# The bank may be down for a while in the morning: retried for up to 6 hours, the interval doubling from 5 s
# to 10 min. A day to come, a refused request or a malformed value is final at once.
RECONCILE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["Unprocessable", "BadRequest", "BankRejected", "RefusedValue", "ValueError"],
)
RECONCILE_DEADLINE = timedelta(hours=6)
# Set by the server on the workflows a schedule starts: the time the action was scheduled for.
SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


@workflow.defn(name=contracts.RECONCILIATION_WORKFLOW)
class ReconciliationWorkflow:
    @workflow.run
    async def run(self, data: contracts.ReconciliationInput) -> contracts.ReconciliationOutcome:
        day = data.day or contracts.statement_day_before(self._scheduled_at())
        outcome: contracts.ReconciliationOutcome = await workflow.execute_activity(
            "reconcile_day",
            contracts.ReconcileDay(day=day, workflow_id=workflow.info().workflow_id),
            result_type=contracts.ReconciliationOutcome,
            start_to_close_timeout=RECONCILE_TIMEOUT,
            schedule_to_close_timeout=RECONCILE_DEADLINE,
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RECONCILE_RETRY,
        )
        return outcome

    @staticmethod
    def _scheduled_at() -> datetime:
        """When the schedule meant this run to start (a run caught up after an outage reconciles the day it
        was scheduled for), else now."""
        scheduled = workflow.info().typed_search_attributes.get(SCHEDULED_START)
        return scheduled if scheduled is not None else workflow.now()
