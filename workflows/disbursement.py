"""The disbursement workflow: one per payout - a credit-line drawdown (id ``disbursement-{drawdown_id}``), a
bridge loan (``disbursement-bridge-loan-{id}``) or a listing reward (``disbursement-listing-reward-{id}``) -
started when the payout is requested (and what it draws on reserved).

1. Approval: finance decisions arrive as the Update ``decide``; its validator refuses the requester and a
   second decision by the same officer before anything enters history, and its activity records the
   decision under a row lock. When the program's approval deadline passes first, the payout expires and
   its reservation is released. The signal ``refresh`` makes the workflow look again (the benefit was
   frozen and the payout rejected).
2. Payment: the bank is paid under an idempotency key derived from the payout's id. Timeouts and 5xx are
   retried with backoff, and after such an ambiguous failure the payment is looked up by its key before
   paying again. On confirmation the ledger entry is posted (debit what the payout is owed as - the
   enterprise's credit or bridge receivable, the program's fund for a reward - credit ``bank_settlement``);
   a definite refusal releases the reservation and records the bank's reason.
3. A bridge loan paid out is then watched until it falls due: at the due time (a timer) it is flagged
   overdue unless it was repaid; the signal ``refresh`` (sent when the repayment is recorded) ends the watch
   early. Before that, at the start of the working day the program's ``reminder_working_days`` before the
   day it is due (another timer; since the patch ``BRIDGE_LOAN_REMINDER``), the enterprise and finance are
   told it falls due soon (``bridge_loan.due_soon``) - once, unless it was repaid first. A loan paid out
   later than that moment (a term shorter than the reminder) is reminded of at once: nothing else told its
   due date.

The bookkeeping steps (a decision, a check, the payment order, the confirmation or failure) are local
activities - short transactions on our own database, with no task round trips through the server - since
the patch ``BOOKKEEPING_LOCAL``; the bank payment is a regular activity. The activity types
``record_drawdown_decision`` and ``check_drawdown`` keep the names they had when every payout was a drawdown:
they are in the histories of workflows started since then.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.retries import until_done

with workflow.unsafe.imports_passed_through():
    from services import contracts


ACTIVITY_TIMEOUT = timedelta(seconds=30)
BUSINESS_ERRORS = ["Forbidden", "Conflict", "NotFound", "Unprocessable", "LedgerError"]
RETRY = until_done(timedelta(seconds=1), timedelta(seconds=30), but=BUSINESS_ERRORS)
# Ambiguous bank failures are retried for as long as it takes: giving up could not release the reservation
# (the money may have moved), so the workflow keeps asking. Definite refusals are not retried.
BANK_TIMEOUT = timedelta(seconds=30)
# The payment activity heartbeats while it waits for the bank, so a worker that dies mid-payment is noticed
# in seconds rather than at the 30 s timeout (the retry then looks the payment up by its key first).
BANK_HEARTBEAT = timedelta(seconds=5)
BANK_RETRY = until_done(timedelta(milliseconds=500), timedelta(seconds=60), but=["BankRejected"])


NOUNS = {"drawdown": "drawdown", "bridge_loan": "bridge loan", "listing_reward": "listing reward"}
# Patch: the bookkeeping activities (decisions, checks, payment order, confirmation, failure) became local.
BOOKKEEPING_LOCAL = "bookkeeping-as-local-activities"
# Patch: a bridge loan paid out is reminded of before it falls due (a timer, then an activity).
BRIDGE_LOAN_REMINDER = "bridge-loan-reminder"
T = TypeVar("T")


def _failure(message: str, kind: str) -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


@workflow.defn(name="DisbursementWorkflow")
class DisbursementWorkflow:
    @workflow.init
    def __init__(self, data: contracts.DisbursementInput) -> None:
        self._data = data
        self._noun = NOUNS[data.kind]
        self._state = contracts.PayoutState(
            kind=data.kind, payout_id=data.payout_id, status="pending_approval"
        )
        self._deciders: set[str] = set()
        self._refresh = False
        self._expiring = False

    def _decided(self) -> bool:
        return self._state.status != "pending_approval"

    def _observe(self, state: contracts.PayoutState) -> None:
        # A payout only ever leaves "pending_approval"; an older read never undoes a newer one.
        if state.status != "pending_approval" or not self._decided():
            self._state = state

    @workflow.run
    async def run(self, data: contracts.DisbursementInput) -> contracts.PayoutState:
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
            self._observe(await self._check(expire=expire))
        if self._state.status == "approved":
            await self._pay()
        if self._state.status == "disbursed" and self._state.due_at is not None:
            await self._watch_until_due(self._state.due_at)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state

    async def _check(self, *, expire: bool, overdue: bool = False) -> contracts.PayoutState:
        state: contracts.PayoutState = await self._book(
            "check_drawdown",
            contracts.PayoutCheck(
                kind=self._data.kind,
                payout_id=self._data.payout_id,
                expire=expire,
                overdue=overdue,
                at=workflow.now(),
            ),
            contracts.PayoutState,
        )
        return state

    async def _watch_until_due(self, due_at: datetime) -> None:
        """A bridge loan paid out: wait for its repayment (signal ``refresh``) or its due time, then look;
        on the way, at its reminder time, remind of it (histories from before BRIDGE_LOAN_REMINDER replay
        without the reminder)."""
        remind_at = None
        if workflow.patched(BRIDGE_LOAN_REMINDER):
            reminder: contracts.PayoutReminderTime = await self._book(
                "payout_reminder_time",
                contracts.PayoutRef(kind=self._data.kind, payout_id=self._data.payout_id),
                contracts.PayoutReminderTime,
            )
            remind_at = reminder.remind_at
        while True:
            until = due_at if remind_at is None else min(remind_at, due_at)
            remaining = (until - workflow.now()).total_seconds()
            if remaining > 0:
                try:
                    await workflow.wait_condition(lambda: self._refresh, timeout=timedelta(seconds=remaining))
                except TimeoutError:
                    pass
            if remind_at is not None and not self._refresh and workflow.now() >= remind_at:
                remind_at = None
                if workflow.now() < due_at:  # due already: the check below flags it overdue instead
                    self._state = await self._remind()
                    if self._state.status != "disbursed":
                        return
                continue
            self._refresh = False
            overdue = workflow.now() >= due_at
            self._state = await self._check(expire=False, overdue=overdue)
            if overdue or self._state.status != "disbursed":
                return

    async def _remind(self) -> contracts.PayoutState:
        state: contracts.PayoutState = await self._book(
            "remind_payout",
            contracts.PayoutReminder(kind=self._data.kind, payout_id=self._data.payout_id, at=workflow.now()),
            contracts.PayoutState,
        )
        return state

    async def _pay(self) -> None:
        payout_id = self._data.payout_id
        order: contracts.PaymentOrder = await self._book(
            "payment_order",
            contracts.PayoutRef(kind=self._data.kind, payout_id=payout_id),
            contracts.PaymentOrder,
        )
        try:
            receipt: contracts.PaymentReceipt = await workflow.execute_activity(
                "pay_through_bank",
                order,
                result_type=contracts.PaymentReceipt,
                start_to_close_timeout=BANK_TIMEOUT,
                heartbeat_timeout=BANK_HEARTBEAT,
                retry_policy=BANK_RETRY,
            )
        except ActivityError as exc:
            cause = exc.cause
            if not (isinstance(cause, ApplicationError) and cause.type == "BankRejected"):
                raise
            self._state = await self._book(
                "fail_disbursement",
                contracts.PaymentFailure(kind=self._data.kind, payout_id=payout_id, reason=cause.message),
                contracts.PayoutState,
            )
            return
        self._state = await self._book("confirm_disbursement", receipt, contracts.PayoutState)

    async def _book(self, activity: str, arg: Any, result_type: type[T]) -> T:
        """One bookkeeping step - a short transaction on our own database - as a local activity: no task
        round trips through the server (the bank payment stays a regular activity, with its heartbeat).
        Histories from before BOOKKEEPING_LOCAL replay through regular activities."""
        local = workflow.patched(BOOKKEEPING_LOCAL)
        execute = workflow.execute_local_activity if local else workflow.execute_activity
        result: T = await execute(
            activity,
            arg,
            result_type=result_type,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
        )
        return result

    @workflow.update(name="decide")
    async def decide(self, request: contracts.ApprovalRequest) -> contracts.PayoutState:
        self._deciders.add(request.approver)
        try:
            state: contracts.PayoutState = await self._book(
                "record_drawdown_decision", request, contracts.PayoutState
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
    def _validate_decision(self, request: contracts.ApprovalRequest) -> None:
        if (request.kind, request.payout_id) != (self._data.kind, self._data.payout_id):
            raise _failure(f"The decision is for another {self._noun}.", "Unprocessable")
        if request.approver == self._data.requested_by:
            raise _failure(f"The requester of a {self._noun} never decides on it.", "Forbidden")
        if self._decided():
            raise _failure(
                f"The {self._noun} is {self._state.status}; it is no longer waiting for approval.", "Conflict"
            )
        if self._expiring or workflow.now() >= self._data.approval_deadline:
            raise _failure("The approval deadline has passed.", "Conflict")
        if request.approver in self._deciders:
            raise _failure(f"This officer has already decided on the {self._noun}.", "Conflict")

    @workflow.signal(name="refresh")
    def refresh(self) -> None:
        self._refresh = True

    @workflow.query(name="state")
    def state(self) -> contracts.PayoutState:
        return self._state
