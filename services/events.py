"""What happened, told to whoever must hear it: the transactional outbox.

A domain that changes state someone must hear about calls ``emit`` with the event in the same session, before
its transaction commits: the event row commits with the change or not at all (never "after commit", never
from workflow code - a workflow's changes are written by activities, and so are its events). The relay
(services/notifications/relay.py) fans each committed event out to the webhook endpoints and mailboxes that
subscribe to it and delivers them at least once, in order per aggregate; the in-app feed
(``GET /notifications``) reads the events themselves, by audience.

Each event type is a payload model below, with its ``type`` and the aggregate it belongs to; the models are
the webhook schemas of the OpenAPI document. Amounts are decimal strings, as everywhere in the API.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from sqlalchemy import BigInteger, Identity, Index, String, func, insert
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base
from services.vocabulary import Level, PayoutKind

Amount = Annotated[Decimal, PlainSerializer(lambda value: f"{value:.2f}", return_type=str)]

EventType = Literal[
    "application.submitted",
    "application.screened",
    "application.returned",
    "application.supplement_due_soon",
    "application.decided",
    "application.on_notice",
    "application.supplemented",
    "application.withdrawn",
    "application.rejected",
    "objection.filed",
    "application.recognized",
    "recognition.expiring",
    "recognition.revoked",
    "review_task.overdue",
    "review_task.escalated",
    "payout.awaiting_approval",
    "payout.approved",
    "payout.rejected",
    "disbursement.paid",
    "disbursement.refused",
    "bridge_loan.due_soon",
    "bridge_loan.overdue",
    "drawdown.repaid",
    "drawdown.overdue",
    "reconciliation.mismatch_found",
]
AggregateType = Literal["application", "recognition", "payout", "reconciliation"]


class Audience(BaseModel):
    """Who hears of an event besides admins (who hear of everything): the enterprise it concerns, the
    reviewers whose scope covers it (a level and the division code their region must cover), a reviewer
    group (a program's backup group), finance."""

    model_config = ConfigDict(frozen=True)

    uscc: str | None = None
    reviewer_level: Level | None = None
    region_code: str | None = None
    group: str | None = None
    finance: bool = False


class Event(BaseModel):
    """One event type's payload (the ``data`` of a webhook body)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ClassVar[EventType]
    aggregate_type: ClassVar[AggregateType]  # the aggregate is the row whose id is `<aggregate_type>_id`

    def aggregate_id(self) -> uuid.UUID:
        ident: uuid.UUID = getattr(self, f"{self.aggregate_type}_id")
        return ident


class EnterpriseEvent(Event):
    """An event about one enterprise's object in one program (every event but the bank reconciliation's)."""

    uscc: str = Field(description="the enterprise's unified social credit code")
    program: str


class ApplicationEvent(EnterpriseEvent):
    """An application's step, heard by its enterprise (and where a review task opens, by that stage's
    reviewers)."""

    aggregate_type: ClassVar[AggregateType] = "application"

    application_id: uuid.UUID
    tier: str
    status: str = Field(description="the application's status after the change")


class ApplicationSubmitted(ApplicationEvent):
    """Filed by the enterprise; screening follows at once."""

    batch: str


class ApplicationScreened(ApplicationEvent):
    """Screened against the ruleset of its batch: into the first stage's queue when it passed
    (whose reviewers hear of it), ineligible when it did not."""

    passed: bool
    failed_rules: list[str] = Field(description="the rules the figures did not meet")


class ApplicationReturned(ApplicationEvent):
    """A reviewer asked for more information; the enterprise supplements it before
    ``supplement_due_at``, or the application is withdrawn then."""

    stage: str
    reason: str
    supplement_due_at: datetime | None = Field(
        description="when the supplement is due; after it the application is withdrawn"
    )


class SupplementDueSoon(ApplicationEvent):
    """A reminder: the supplement is due soon (the program's ``durations.supplement_reminder`` before)."""

    supplement_due_at: datetime


class ApplicationDecided(ApplicationEvent):
    """A stage's reviewer decided (approve, return or reject), with the reason the enterprise reads."""

    stage: str
    decision: Literal["approve", "return", "reject"]
    reason: str


class ApplicationOnNotice(ApplicationEvent):
    """Approved at the last stage and on public notice until ``notice_ends_at``; anyone may object."""

    notice_ends_at: datetime | None


class ApplicationSupplemented(ApplicationEvent):
    """The enterprise answered a return: the application is back in the stage's queue, screened again."""

    stage: str
    passed: bool = Field(description="whether the figures, as now declared, pass screening")


class ApplicationWithdrawn(ApplicationEvent):
    """Withdrawn by the enterprise, or when its supplement deadline passed without a supplement."""

    reason: str


class ApplicationRejected(ApplicationEvent):
    """Rejected after its reviews: an objection upheld during its public notice, or, when the notice ended,
    the enterprise barred after a revocation for fraud (a stage's rejection is ``application.decided``)."""

    reason: str


class ObjectionFiled(ApplicationEvent):
    """An objection to an application on public notice; the recognition waits until it is resolved."""

    objection_id: uuid.UUID


class ApplicationRecognized(ApplicationEvent):
    """The notice period passed: recognised, with its certificate number, valid until ``valid_until``;
    the tier's benefits follow."""

    recognition_id: uuid.UUID
    certificate_no: str | None
    valid_until: date


class RecognitionEvent(EnterpriseEvent):
    """A recognition's step, heard by its enterprise."""

    aggregate_type: ClassVar[AggregateType] = "recognition"

    recognition_id: uuid.UUID
    tier: str
    valid_until: date


class RecognitionExpiring(RecognitionEvent):
    """A reminder: the recognition's validity ends soon (the program's ``durations.expiry_reminder``
    before); its re-review follows the expiry."""


class RecognitionRevoked(RecognitionEvent):
    """Revoked by an admin, with the reason; the benefits it opened are frozen."""

    reason: str


class ReviewTaskOverdue(ApplicationEvent):
    """A stage's SLA passed with the task undecided: its reviewers and the backup group hear."""

    stage: str
    due_at: datetime
    escalation_group: str | None


class ReviewTaskEscalated(ApplicationEvent):
    """The overdue task is now in the program's backup group's queue, and any member may decide it."""

    stage: str
    escalation_group: str


class PayoutEvent(EnterpriseEvent):
    """A payout's step (a drawdown, a bridge loan, a listing reward), heard by its enterprise and finance."""

    aggregate_type: ClassVar[AggregateType] = "payout"

    payout_id: uuid.UUID
    kind: PayoutKind
    amount: Amount
    status: str = Field(description="the payout's status after the change")


class PayoutAwaitingApproval(PayoutEvent):
    """Requested, or approved once with more approvals needed: ``approvals_needed`` more finance
    officers, none of them the requester, must decide before the approval deadline."""

    approvals_needed: int


class PayoutApproved(PayoutEvent):
    """Approved by as many finance officers as it needs; the payment to the bank follows."""


class PayoutRejected(PayoutEvent):
    """Rejected by finance (``status`` rejected), expired at the approval deadline (expired), or
    rejected when its benefit was frozen; what it held is released."""

    reason: str


class DisbursementEvent(PayoutEvent):
    """The bank's answer to a payment: the bank's reference when it paid, its reason when it refused."""

    bank_reference: str | None = Field(default=None, description="the bank's reference of the payment made")
    reason: str | None = Field(default=None, description="why the bank refused the payment")


class DisbursementPaid(DisbursementEvent):
    """The bank paid it, once, under the payout's idempotency key; the ledger entry is posted."""


class DisbursementRefused(DisbursementEvent):
    """The bank definitely refused the payment (a closed account, say); what it held is released."""


class BridgeLoanDueSoon(PayoutEvent):
    """A reminder: the bridge loan falls due on ``due_on`` (the program's
    ``bridge_pool.reminder_working_days`` working days before)."""

    due_on: date


class BridgeLoanOverdue(PayoutEvent):
    """The bridge loan's term passed without its repayment (told once per loan, with what is outstanding
    after any parts repaid)."""

    due_on: date
    outstanding: Amount | None = Field(default=None, description="what is still to repay of the loan")


class DrawdownRepaid(PayoutEvent):
    """A repayment of a drawdown was recorded (``status`` ``repaid`` once nothing is outstanding): the
    credit line's available amount grew by ``repayment``."""

    repayment_id: uuid.UUID
    repayment: Amount = Field(description="the amount repaid now")
    outstanding: Amount = Field(description="what is still to repay of the drawdown")


class DrawdownOverdue(PayoutEvent):
    """The drawdown's term passed with an amount outstanding: its credit line takes no new drawdowns until
    it is repaid."""

    due_at: datetime
    outstanding: Amount


class ReconciliationMismatchFound(Event):
    """The bank reconciliation of a day found mismatches between the bank's statement and the ledger (heard
    by finance): payments on the statement the ledger has not posted, postings the bank has no payment for,
    amounts that differ. ``GET /reconciliations/{day}`` lists them."""

    aggregate_type: ClassVar[AggregateType] = "reconciliation"

    reconciliation_id: uuid.UUID
    day: date = Field(description="the statement's day (China Standard Time)")
    mismatches: int = Field(description="how many keys the statement and the ledger disagree on")
    paid_not_posted: int
    posted_not_paid: int
    amount_differs: int


# Every event type and its payload model: the vocabulary of the outbox, and each model's `type`.
EVENT_MODELS: dict[str, type[Event]] = {
    "application.submitted": ApplicationSubmitted,
    "application.screened": ApplicationScreened,
    "application.returned": ApplicationReturned,
    "application.supplement_due_soon": SupplementDueSoon,
    "application.decided": ApplicationDecided,
    "application.on_notice": ApplicationOnNotice,
    "application.supplemented": ApplicationSupplemented,
    "application.withdrawn": ApplicationWithdrawn,
    "application.rejected": ApplicationRejected,
    "objection.filed": ObjectionFiled,
    "application.recognized": ApplicationRecognized,
    "recognition.expiring": RecognitionEvent,
    "recognition.revoked": RecognitionRevoked,
    "review_task.overdue": ReviewTaskOverdue,
    "review_task.escalated": ReviewTaskEscalated,
    "payout.awaiting_approval": PayoutEvent,
    "payout.approved": PayoutApproved,
    "payout.rejected": PayoutRejected,
    "disbursement.paid": DisbursementEvent,
    "disbursement.refused": DisbursementRefused,
    "bridge_loan.due_soon": BridgeLoanDueSoon,
    "bridge_loan.overdue": BridgeLoanOverdue,
    "drawdown.repaid": DrawdownRepaid,
    "drawdown.overdue": DrawdownOverdue,
    "reconciliation.mismatch_found": ReconciliationMismatchFound,
}
for _type, _model in EVENT_MODELS.items():
    _model.type = cast(EventType, _type)
assert set(EVENT_MODELS) == set(get_args(EventType)), "every event type has its payload model"


class OutboxEvent(Base):
    """An event, committed with the change it tells of. ``seq`` orders events (within an aggregate, the order
    its changes committed in: they lock the aggregate's row); ``fanned_out_at`` is set when the relay has made
    its deliveries."""

    __tablename__ = "outbox_events"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    type: Mapped[str] = mapped_column(String(64))
    aggregate_type: Mapped[str] = mapped_column(String(32))
    aggregate_id: Mapped[uuid.UUID]
    uscc: Mapped[str | None] = mapped_column(String(18))
    reviewer_level: Mapped[str | None] = mapped_column(String(20))
    region_code: Mapped[str | None] = mapped_column(String(6))
    group_name: Mapped[str | None] = mapped_column(String(100))
    finance: Mapped[bool] = mapped_column(default=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(server_default=func.clock_timestamp())
    fanned_out_at: Mapped[datetime | None]

    __table_args__ = (
        # The relay's work: events not fanned out yet, oldest first.
        Index("ix_outbox_events_pending", "seq", postgresql_where="fanned_out_at IS NULL"),
        # The feed: an enterprise's events, a reviewer scope's, a group's, finance's; newest first.
        Index("ix_outbox_events_uscc", "uscc", "occurred_at", postgresql_where="uscc IS NOT NULL"),
        Index(
            "ix_outbox_events_reviewers",
            "reviewer_level",
            "region_code",
            "occurred_at",
            postgresql_where="reviewer_level IS NOT NULL",
        ),
        Index(
            "ix_outbox_events_group", "group_name", "occurred_at", postgresql_where="group_name IS NOT NULL"
        ),
        Index("ix_outbox_events_finance", "occurred_at", postgresql_where="finance"),
        Index("ix_outbox_events_aggregate", "aggregate_id", "seq"),
    )


def event_row(event: Event, audience: Audience) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "type": event.type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id(),
        "uscc": audience.uscc,
        "reviewer_level": audience.reviewer_level,
        "region_code": audience.region_code,
        "group_name": audience.group,
        "finance": audience.finance,
        "data": event.model_dump(mode="json"),
    }


async def emit(session: AsyncSession, event: Event, audience: Audience) -> uuid.UUID:
    """Write ``event`` into the outbox in ``session``'s transaction (it commits with the change, or neither
    does); the event's id, which every delivery of it carries (``webhook-id``)."""
    row = event_row(event, audience)
    await session.execute(insert(OutboxEvent).values(**row))
    event_id: uuid.UUID = row["id"]
    return event_id
