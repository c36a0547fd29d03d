"""Activities of the credit domain (benefits, drawdown approvals, disbursements).

Each attempt is one transaction and is idempotent (unique constraints and conditional updates, ledger entries
keyed by the drawdown), so a retried attempt changes nothing twice. Business failures are non-retryable
``ApplicationError``s whose ``type`` names the problem (``Forbidden``, ``Conflict``, ``NotFound``,
``BankRejected``); everything else is retried by the workflow's retry policy.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from services.credit import policy, service
from services.credit.bank import BankClient, BankRejected, BankUnavailable
from services.credit.ledger import LedgerError
from services.credit.models import disbursement_workflow_id
from services.errors import GiantflowError
from services.resources import Resources
from workflows.inputs import (
    ApprovalRequest,
    BenefitGrant,
    BenefitSchedule,
    BenefitsFreeze,
    BenefitsInput,
    DrawdownCheck,
    DrawdownState,
    PaymentFailure,
    PaymentOrder,
    PaymentReceipt,
)

log = structlog.get_logger("giantflow.credit")


@contextlib.contextmanager
def _business_failures() -> Iterator[None]:
    """Domain errors end the activity for good; the workflow decides what they mean."""
    try:
        yield
    except GiantflowError as exc:
        raise ApplicationError(exc.detail, type=type(exc).__name__, non_retryable=True) from exc
    except LedgerError as exc:
        raise ApplicationError(str(exc), type="LedgerError", non_retryable=True) from exc


class CreditActivities:
    def __init__(self, resources: Resources, *, bank: BankClient | None = None) -> None:
        self.resources = resources
        self.bank = bank or BankClient(resources.http, resources.settings.bank_url)

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.benefit_schedule,
            self.grant_benefit,
            self.freeze_benefits,
            self.record_drawdown_decision,
            self.check_drawdown,
            self.payment_order,
            self.pay_through_bank,
            self.confirm_disbursement,
            self.fail_disbursement,
        ]

    # --- benefits ------------------------------------------------------------------------------------------

    @activity.defn(name="benefit_schedule")
    async def benefit_schedule(self, data: BenefitsInput) -> BenefitSchedule:
        with _business_failures():
            return policy.benefit_schedule(self.resources.programs, program_key=data.program, tier=data.tier)

    @activity.defn(name="grant_benefit")
    async def grant_benefit(self, data: BenefitGrant) -> None:
        with _business_failures():
            async with self.resources.sessionmaker.begin() as session:
                await service.grant_benefit(session, grant=data)

    @activity.defn(name="freeze_benefits")
    async def freeze_benefits(self, data: BenefitsFreeze) -> int:
        """Freeze in one transaction, then tell each rejected drawdown's workflow to look again (best effort:
        a workflow not told ends at its approval deadline anyway). Returns how many were rejected."""
        with _business_failures():
            async with self.resources.sessionmaker.begin() as session:
                rejected = await service.freeze_benefits(session, data=data)
        for drawdown_id in rejected:
            await self._refresh(drawdown_id)
        return len(rejected)

    async def _refresh(self, drawdown_id: uuid.UUID) -> None:
        try:
            await self.resources.temporal.get_workflow_handle(disbursement_workflow_id(drawdown_id)).signal(
                "refresh"
            )
        except RPCError as exc:
            log.warning("refresh_signal_failed", drawdown_id=str(drawdown_id), error=str(exc))

    # --- drawdowns and disbursements -----------------------------------------------------------------------

    @activity.defn(name="record_drawdown_decision")
    async def record_drawdown_decision(self, data: ApprovalRequest) -> DrawdownState:
        with _business_failures():
            async with self.resources.sessionmaker.begin() as session:
                return await service.record_decision(session, request=data)

    @activity.defn(name="check_drawdown")
    async def check_drawdown(self, data: DrawdownCheck) -> DrawdownState:
        with _business_failures():
            async with self.resources.sessionmaker.begin() as session:
                return await service.check_drawdown(session, check=data)

    @activity.defn(name="payment_order")
    async def payment_order(self, drawdown_id: str) -> PaymentOrder:
        with _business_failures():
            async with self.resources.sessionmaker.begin() as session:
                return await service.payment_order(session, drawdown_id=drawdown_id)

    @activity.defn(name="pay_through_bank")
    async def pay_through_bank(self, order: PaymentOrder) -> PaymentReceipt:
        """Pay once under the order's key. After an ambiguous failure (an earlier attempt timed out or got a
        5xx) the payment is looked up by its key before paying again; the bank's own idempotency on the key
        is the second guard. A definite refusal is non-retryable."""
        try:
            if activity.info().attempt > 1:
                found = await self.bank.get_payment(order.key)
                if found is not None:
                    return PaymentReceipt(drawdown_id=order.drawdown_id, bank_reference=found.id)
            payment = await self.bank.create_payment(
                key=order.key, amount=order.amount, beneficiary=order.beneficiary, reference=order.reference
            )
        except BankRejected as exc:
            raise ApplicationError(exc.reason, type="BankRejected", non_retryable=True) from exc
        except BankUnavailable as exc:
            raise ApplicationError(exc.reason, type="BankUnavailable") from exc
        return PaymentReceipt(drawdown_id=order.drawdown_id, bank_reference=payment.id)

    @activity.defn(name="confirm_disbursement")
    async def confirm_disbursement(self, data: PaymentReceipt) -> DrawdownState:
        with _business_failures():
            async with self.resources.sessionmaker.begin() as session:
                return await service.confirm_disbursement(session, receipt=data)

    @activity.defn(name="fail_disbursement")
    async def fail_disbursement(self, data: PaymentFailure) -> DrawdownState:
        with _business_failures():
            async with self.resources.sessionmaker.begin() as session:
                return await service.fail_disbursement(session, failure=data)
