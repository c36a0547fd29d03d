"""Activities of the credit domain (benefits, payout approvals, disbursements).

Each attempt is one transaction and is idempotent (unique constraints and conditional updates, ledger entries
keyed by the payout), so a retried attempt changes nothing twice. Business failures become non-retryable
``ApplicationError``s whose ``type`` names the problem (``Forbidden``, ``Conflict``, ``NotFound``, ...) in the
worker's interceptor (``services.temporal.activity_failure``); the bank's answers are named here
(``BankRejected`` is final, ``BankUnavailable`` is retried); everything else is retried by the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.contracts import (
    ApprovalRequest,
    BenefitGrant,
    BenefitSchedule,
    BenefitsFreeze,
    BenefitsInput,
    PaymentFailure,
    PaymentOrder,
    PaymentReceipt,
    PayoutCheck,
    PayoutRef,
    PayoutReminder,
    PayoutReminderTime,
    PayoutState,
)
from services.credit import payouts, policy, service
from services.credit.bank import BankClient, BankRejected, BankUnavailable
from services.programs import program_at
from services.resources import Resources
from services.tasks import alongside
from workflows.base import Activities


@contextlib.asynccontextmanager
async def _heartbeating(every: float = 1.0) -> AsyncIterator[None]:
    """Heartbeat while the body waits on the outside world, so the server notices a dead worker quickly."""

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    async with alongside(beat()):
        yield


class CreditActivities(Activities):
    def __init__(self, resources: Resources, *, bank: BankClient | None = None) -> None:
        super().__init__(resources)
        self.bank = bank or BankClient(resources.http, resources.settings.bank_url)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.benefit_schedule,
            self.grant_benefit,
            self.freeze_benefits,
            self.record_decision,
            self.check_payout,
            self.payment_order,
            self.pay_through_bank,
            self.confirm_disbursement,
            self.fail_disbursement,
            self.payout_reminder_time,
            self.remind_payout,
        ]

    # --- benefits ------------------------------------------------------------------------------------------

    @activity.defn(name="benefit_schedule")
    async def benefit_schedule(self, data: BenefitsInput) -> BenefitSchedule:
        programs = self.resources.programs
        if data.program in programs:  # as the version that judged the recognition says (None: in force)
            programs = {data.program: program_at(programs, data.program, data.program_version)}
        return policy.benefit_schedule(programs, program_key=data.program, tier=data.tier)

    @activity.defn(name="grant_benefit")
    async def grant_benefit(self, data: BenefitGrant) -> None:
        await self._in_transaction(service.grant_benefit, grant=data)

    @activity.defn(name="freeze_benefits")
    async def freeze_benefits(self, data: BenefitsFreeze) -> int:
        """Freeze in one transaction, then tell each rejected payout's workflow to look again (best effort:
        a workflow not told ends at its approval deadline anyway). Returns how many were rejected."""
        rejected = await self._in_transaction(service.freeze_benefits, data=data)
        for kind, payout_id in rejected:
            await payouts.refresh(self.resources.temporal, kind, payout_id)
        return len(rejected)

    # --- payouts (drawdowns, bridge loans, listing rewards) and their disbursements ------------------------
    # "record_drawdown_decision" and "check_drawdown" are the names these activities had when every payout was
    # a drawdown; workflow histories hold them.

    @activity.defn(name="record_drawdown_decision")
    async def record_decision(self, data: ApprovalRequest) -> PayoutState:
        return await self._in_transaction(payouts.record_decision, request=data)

    @activity.defn(name="check_drawdown")
    async def check_payout(self, data: PayoutCheck) -> PayoutState:
        return await self._in_transaction(payouts.check, check=data)

    @activity.defn(name="payment_order")
    async def payment_order(self, data: PayoutRef | str) -> PaymentOrder:
        """``data`` names the payout; a bare string is a drawdown id (scheduled before payouts had kinds)."""
        ref = PayoutRef(payout_id=data) if isinstance(data, str) else data
        return await self._in_transaction(payouts.payment_order, ref=ref)

    @activity.defn(name="pay_through_bank")
    async def pay_through_bank(self, order: PaymentOrder) -> PaymentReceipt:
        """Pay once under the order's key. After an ambiguous failure (an earlier attempt timed out or got a
        5xx) the payment is looked up by its key before paying again; the bank's own idempotency on the key
        is the second guard. A definite refusal is non-retryable."""
        async with _heartbeating():
            return await self._pay(order)

    async def _pay(self, order: PaymentOrder) -> PaymentReceipt:
        try:
            if activity.info().attempt > 1:
                found = await self.bank.get_payment(order.key)
                if found is not None:
                    return PaymentReceipt(kind=order.kind, payout_id=order.payout_id, bank_reference=found.id)
            payment = await self.bank.create_payment(
                key=order.key, amount=order.amount, beneficiary=order.beneficiary, reference=order.reference
            )
        except BankRejected as exc:
            raise ApplicationError(exc.reason, type="BankRejected", non_retryable=True) from exc
        except BankUnavailable as exc:
            raise ApplicationError(exc.reason, type="BankUnavailable") from exc
        return PaymentReceipt(kind=order.kind, payout_id=order.payout_id, bank_reference=payment.id)

    @activity.defn(name="confirm_disbursement")
    async def confirm_disbursement(self, data: PaymentReceipt) -> PayoutState:
        return await self._in_transaction(payouts.confirm, receipt=data)

    @activity.defn(name="fail_disbursement")
    async def fail_disbursement(self, data: PaymentFailure) -> PayoutState:
        return await self._in_transaction(payouts.fail, failure=data)

    # --- reminders (a bridge loan falls due soon) -----------------------------------------------------------

    @activity.defn(name="payout_reminder_time")
    async def payout_reminder_time(self, data: PayoutRef) -> PayoutReminderTime:
        return await self._in_transaction(payouts.reminder_time, ref=data, programs=self.resources.programs)

    @activity.defn(name="remind_payout")
    async def remind_payout(self, data: PayoutReminder) -> PayoutState:
        return await self._in_transaction(payouts.remind, reminder=data)
