"""The disbursement workflow: one per drawdown (id ``disbursement-{drawdown_id}``), started when the drawdown
is requested and its amount reserved.

1. Approval: finance decisions arrive as the Update ``decide``; its validator refuses the requester and a
   second decision by the same officer before anything enters history, and its activity records the
   decision under a row lock. When the program's approval deadline passes first, the drawdown expires and
   its reservation is released. The signal ``refresh`` makes the workflow look again (the credit line was
   frozen and the drawdown rejected).
2. Payment: the bank is paid under an idempotency key derived from the drawdown id. Timeouts and 5xx are
   retried with backoff, and after such an ambiguous failure the payment is looked up by its key before
   paying again. On confirmation the ledger entry is posted (debit ``credit_receivable:<uscc>``, credit
   ``bank_settlement``); a definite refusal releases the reservation and records the bank's reason.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.inputs import (
        ApprovalRequest,
        DisbursementInput,
        DrawdownCheck,
        DrawdownState,
        PaymentFailure,
        PaymentOrder,
        PaymentReceipt,
    )

ACTIVITY_TIMEOUT = timedelta(seconds=30)
BUSINESS_ERRORS = ["Forbidden", "Conflict", "NotFound", "Unprocessable", "LedgerError"]
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
    non_retryable_error_types=BUSINESS_ERRORS,
)
# Ambiguous bank failures are retried for as long as it takes: giving up could not release the reservation
# (the money may have moved), so the workflow keeps asking. Definite refusals are not retried.
BANK_TIMEOUT = timedelta(seconds=30)
BANK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=0,
    non_retryable_error_types=["BankRejected"],
)


def _failure(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


@workflow.defn(name="DisbursementWorkflow")
class DisbursementWorkflow:
    @workflow.init
    def __init__(self, data: DisbursementInput) -> None:
        self._data = data
        self._state = DrawdownState(drawdown_id=data.drawdown_id, status="pending_approval")
        self._deciders: set[str] = set()
        self._refresh = False
        self._expiring = False

    def _decided(self) -> bool:
        return self._state.status != "pending_approval"

    def _observe(self, state: DrawdownState) -> None:
        # A drawdown only ever leaves "pending_approval"; an older read never undoes a newer one.
        if state.status != "pending_approval" or not self._decided():
            self._state = state

    @workflow.run
    async def run(self, data: DisbursementInput) -> DrawdownState:
        while not self._decided():
            remaining = (data.approval_deadline - workflow.now()).total_seconds()
            if remaining > 0:
                try:
                    await workflow.wait_condition(
                        lambda: self._decided() or self._refresh, timeout=timedelta(seconds=remaining)
                    )
                except TimeoutError:
                    pass
            self._refresh = False
            expire = workflow.now() >= data.approval_deadline
            self._expiring = expire
            await workflow.wait_condition(workflow.all_handlers_finished)
            if self._decided():
                break
            self._observe(
                await workflow.execute_activity(
                    "check_drawdown",
                    DrawdownCheck(drawdown_id=data.drawdown_id, expire=expire, at=workflow.now()),
                    result_type=DrawdownState,
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=RETRY,
                )
            )
        if self._state.status == "approved":
            await self._pay()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    async def _pay(self) -> None:
        drawdown_id = self._data.drawdown_id
        order: PaymentOrder = await workflow.execute_activity(
            "payment_order",
            drawdown_id,
            result_type=PaymentOrder,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        try:
            receipt: PaymentReceipt = await workflow.execute_activity(
                "pay_through_bank",
                order,
                result_type=PaymentReceipt,
                start_to_close_timeout=BANK_TIMEOUT,
                retry_policy=BANK_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if not (isinstance(cause, ApplicationError) and cause.type == "BankRejected"):
                raise
            self._state = await workflow.execute_activity(
                "fail_disbursement",
                PaymentFailure(drawdown_id=drawdown_id, reason=cause.message),
                result_type=DrawdownState,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
            )
            return
        self._state = await workflow.execute_activity(
            "confirm_disbursement",
            receipt,
            result_type=DrawdownState,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )

    @workflow.update(name="decide")
    async def decide(self, request: ApprovalRequest) -> DrawdownState:
        self._deciders.add(request.approver)
        try:
            state: DrawdownState = await workflow.execute_activity(
                "record_drawdown_decision",
                request,
                result_type=DrawdownState,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
            )
        except ActivityError as exc:
            self._deciders.discard(request.approver)
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                raise _failure(cause.message, cause.type or "Conflict") from None
            raise
        self._observe(state)
        return state

    @decide.validator
    def _validate_decision(self, request: ApprovalRequest) -> None:
        if request.drawdown_id != self._data.drawdown_id:
            raise _failure("The decision is for another drawdown.", "Unprocessable")
        if request.approver == self._data.requested_by:
            raise _failure("The requester of a drawdown never decides on it.", "Forbidden")
        if self._decided():
            raise _failure(
                f"The drawdown is {self._state.status}; it is no longer waiting for approval.", "Conflict"
            )
        if self._expiring or workflow.now() >= self._data.approval_deadline:
            raise _failure("The approval deadline has passed.", "Conflict")
        if request.approver in self._deciders:
            raise _failure("This officer has already decided on the drawdown.", "Conflict")

    @workflow.signal(name="refresh")
    def refresh(self) -> None:
        self._refresh = True

    @workflow.query(name="state")
    def state(self) -> DrawdownState:
        return self._state
