"""What crosses the Temporal boundary: workflow names and ids, Update names, and one input model per
workflow, activity and message. The API (``services.temporal``) and the workflows both import it; it imports
nothing of either.

Plain pydantic models (the client and worker use the pydantic data converter); standard library, pydantic
and temporalio's common types only, so workflow code may import this module freely.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from services.vocabulary import (
    TERMINAL,
    ApplicationStatus,
    ApprovalDecision,
    BenefitKind,
    Decision,
    Level,
    PayoutKind,
    PayoutStatus,
)

__all__ = ["TERMINAL", "Decision", "PayoutKind", "PayoutStatus"]  # re-exported for workflow code

Stage = Level  # a stage of the review is a review level
Status = ApplicationStatus


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- workflows, their ids and their Updates ----------------------------------------------------------------

REVIEW_WORKFLOW = "ReviewWorkflow"
BENEFITS_WORKFLOW = "BenefitsWorkflow"
DISBURSEMENT_WORKFLOW = "DisbursementWorkflow"
ReviewUpdate = Literal[
    "decide",
    "supplement",
    "withdraw",
    "object",
    "resolve_objection",
    "revoke",
    "file_re_review",
    "score_panel",
]


def review_workflow_id(application_id: object) -> str:
    """The id of an application's ReviewWorkflow."""
    return f"review-{application_id}"


def benefits_workflow_id(recognition_id: object) -> str:
    """The id of a recognition's BenefitsWorkflow."""
    return f"benefits-{recognition_id}"


def disbursement_workflow_id(kind: PayoutKind, payout_id: object) -> str:
    """The id of a payout's DisbursementWorkflow (drawdowns keep the id they had before payouts had kinds)."""
    if kind == "drawdown":
        return f"disbursement-{payout_id}"
    return f"disbursement-{kind.replace('_', '-')}-{payout_id}"


# Search attributes, so that an operator finds a business object's workflows in the Temporal UI
# (``Uscc="..."``): the enterprise, program and tier of every review, benefits and disbursement workflow, set
# when it starts, and a review's ``Stage`` - the level it waits at (in review or returned), else its status -
# kept current by the workflow. Registered by `giantflow temporal-setup` (a cluster), `giantflow dev` and the
# tests' servers.
USCC = SearchAttributeKey.for_keyword("Uscc")
PROGRAM = SearchAttributeKey.for_keyword("Program")
TIER = SearchAttributeKey.for_keyword("Tier")
STAGE = SearchAttributeKey.for_keyword("Stage")
SEARCH_ATTRIBUTES: tuple[SearchAttributeKey[str], ...] = (USCC, PROGRAM, TIER, STAGE)


def search_attributes(
    *, uscc: str, program: str, tier: str, stage: str | None = None
) -> TypedSearchAttributes:
    """The search attributes a workflow of this enterprise, program and tier starts with."""
    pairs = [
        SearchAttributePair(USCC, uscc),
        SearchAttributePair(PROGRAM, program),
        SearchAttributePair(TIER, tier),
    ]
    if stage is not None:
        pairs.append(SearchAttributePair(STAGE, stage))
    return TypedSearchAttributes(pairs)


# --- review workflow -------------------------------------------------------------------------------------


class ReviewDurations(_Model):
    """Seconds, resolved from the program's ISO 8601 durations when the workflow starts. The reminders say
    how long before a supplement is due, and before a recognition expires, the enterprise is reminded (the
    program's ``supplement_reminder`` and ``expiry_reminder``); None, no reminder: the input of a workflow
    started before reminders existed."""

    stage_sla: float
    supplement_deadline: float
    supplement_reminder: float | None = None
    notice_period: float
    expiry_reminder: float | None = None
    # How long before expiry the re-review opens (the program's ``re_review_window``); None: the input of a
    # workflow started before re-review windows existed (it opens a re-review of the old figures at expiry).
    re_review_window: float | None = None


PanelRule = Literal["average_score", "majority"]


class PanelPolicy(_Model):
    """A stage decided by a panel of `size` experts drawn from the pool (the program's
    ``[tiers.<tier>.panels.<level>]``): passes with an average score >= `pass_score`, or by majority vote."""

    size: int
    rule: PanelRule
    pass_score: int | None = None


class ReviewInput(_Model):
    application_id: uuid.UUID
    uscc: str
    program: str
    tier: str
    region_code: str
    stages: list[Stage]
    durations: ReviewDurations
    escalation_group: str
    # A re-review's: the recognition it renews. Its approval extends that recognition (whose workflow, the
    # parent, keeps it) instead of granting a new one.
    re_review_of: uuid.UUID | None = None
    # The program version that judges the application (services/catalog), handed on to its benefits; None:
    # the version in force when the activity runs (a workflow started before versions were recorded).
    program_version: int | None = None
    # The stages an expert panel decides (services/applications/panels.py); empty: the input of a workflow
    # started before panels, or a program without them.
    panels: dict[Stage, PanelPolicy] = {}


class Actor(_Model):
    sub: str
    role: str
    uscc: str | None = None
    level: Stage | None = None
    region: str | None = None
    # A reviewer's groups: a member of a program's backup group decides the tasks escalated to it. Empty by
    # default, so an actor recorded before groups existed decodes unchanged.
    groups: list[str] = []
    expert_id: str | None = None  # an expert's (panels); None for everyone else


class DecisionRequest(_Model):
    actor: Actor
    stage: Stage | None = None  # the stage the reviewer believes is current; None means "the current one"
    decision: Decision
    reason: str = Field(min_length=1, max_length=2000)
    internal_note: str | None = Field(default=None, max_length=4000)
    # With `return`: when the supplement is due, at most the program's supplement_deadline from now; None
    # gives the program's deadline.
    supplement_due_at: datetime | None = None


class SupplementContent(_Model):
    """What a supplement adds beside its note: documents of the applicant's to cite, and corrected figures
    (the whole declaration, as JSON; None: the figures stand)."""

    evidence: list[uuid.UUID] = []
    metrics: dict[str, Any] | None = None


class SupplementRequest(_Model):
    actor: Actor
    note: str = Field(min_length=1, max_length=4000)
    # Both default to nothing, so a request sent before supplements carried them decodes unchanged.
    evidence: list[uuid.UUID] = []
    metrics: dict[str, Any] | None = None


class WithdrawRequest(_Model):
    actor: Actor
    reason: str | None = None


class ObjectionRequest(_Model):
    actor: Actor
    objection_id: uuid.UUID
    reason: str = Field(min_length=1, max_length=4000)


class ObjectionResolution(_Model):
    actor: Actor
    objection_id: uuid.UUID
    upheld: bool
    reason: str = Field(min_length=1, max_length=2000)


RevokedFor = Literal["fraud", "other"]
"""What a recognition is revoked for: ``fraud`` also bars the enterprise from applying (``fraud_bar``)."""


class RevokeRequest(_Model):
    actor: Actor
    reason: str = Field(min_length=1, max_length=2000)
    revoked_for: RevokedFor = "other"


class RevokedTitle(_Model):
    """A recognition a revocation for fraud revoked with the one it named (the enterprise's other titles)."""

    recognition_id: uuid.UUID
    certificate_no: str
    program: str
    tier: str
    application_id: uuid.UUID | None = None  # whose review workflow keeps it; none for an imported one


class ReviewState(_Model):
    """What an Update returns and a query answers: the application's state after the change."""

    application_id: uuid.UUID
    status: Status
    stage: Stage | None = None
    due_at: datetime | None = None
    overdue: bool = False
    supplement_due_at: datetime | None = None
    notice_ends_at: datetime | None = None
    open_objections: list[str] = []
    recognition_id: uuid.UUID | None = None
    certificate_no: str | None = None
    valid_until: datetime | None = None  # the recognition's, as extended by approved re-reviews
    # The revocation's answer only: a revocation for fraud revokes the enterprise's other titles too.
    also_revoked: list[RevokedTitle] = []


# --- activities of the review workflow -------------------------------------------------------------------


class ScreenInput(_Model):
    application_id: uuid.UUID


class ScreenOutcome(_Model):
    passed: bool
    ruleset: str


class OpenTask(_Model):
    stage: Stage
    region_code: str
    due_at: datetime


class ScreenAndEnterInput(_Model):
    """Screen, mark the workflow as running, and enter the first stage (or ``ineligible``) in one
    transaction; ``event_key`` makes a retried attempt change nothing twice."""

    application_id: uuid.UUID
    event_key: str
    at: datetime
    open_task: OpenTask


class TransitionInput(_Model):
    """One state change, written in one transaction: application row, review task, audit row."""

    application_id: uuid.UUID
    event_key: str
    actor: Actor
    action: str
    from_status: Status
    to_status: Status
    stage: Stage | None = None
    reason: str | None = None
    internal_note: str | None = None
    at: datetime
    close_task_as: str | None = None  # decision or "closed"; closes the open task when set
    open_task: OpenTask | None = None
    supplement_due_at: datetime | None = None
    # A supplement's evidence and corrected figures, written with the transition (which then re-screens).
    supplement: SupplementContent | None = None
    # When the public notice this transition opens ends (the workflow's timer); None for other transitions.
    notice_ends_at: datetime | None = None


class EscalationInput(_Model):
    application_id: uuid.UUID
    event_key: str
    stage: Stage
    escalated_to: str
    at: datetime


class ObjectionUpdate(_Model):
    application_id: uuid.UUID
    event_key: str
    objection_id: uuid.UUID
    actor: Actor
    at: datetime
    reason: str
    resolution: Literal["open", "upheld", "dismissed"]


class RecognizeInput(_Model):
    application_id: uuid.UUID
    event_key: str
    at: datetime
    renews: uuid.UUID | None = None  # a re-review's approval: the recognition it extends


class FraudBarCheck(_Model):
    """Before recognition: is the enterprise barred after a revocation for fraud (of any of its titles, found
    while this application was under review)?"""

    application_id: uuid.UUID
    event_key: str
    at: datetime


class FraudBar(_Model):
    reason: str | None = None  # None: not barred; else why, and until when


class RecognitionOutcome(_Model):
    recognition_id: uuid.UUID
    certificate_no: str
    valid_from: datetime
    valid_until: datetime


class RecognitionChange(_Model):
    recognition_id: uuid.UUID
    application_id: uuid.UUID
    event_key: str
    status: Literal["expired", "revoked"]
    actor: Actor
    reason: str
    at: datetime
    revoked_for: RevokedFor | None = None  # a revocation's ground; histories before fraud bars have none


def revoked_with_reason(certificate_no: str, reason: str) -> str:
    """The reason recorded on a title revoked with another's revocation for fraud, naming that certificate."""
    return f"revoked for fraud with certificate {certificate_no}: {reason}"


class RecognitionChanged(_Model):
    """What ``change_recognition`` did beside the recognition it names: a revocation for fraud revoked the
    enterprise's other titles too (the same on a retried attempt). Read only by workflows that ask
    ``FRAUD_REVOKES_EVERY_TITLE``: the activity returned nothing before."""

    also_revoked: list[RevokedTitle] = []


class TitleRevoked(_Model):
    """Signal ``revoked`` to the review workflow keeping a recognition another recognition's revocation for
    fraud revoked: already recorded (row, history, event) and its benefits told; the workflow only ends its
    lifecycle."""

    recognition_id: uuid.UUID
    revoked_with: uuid.UUID  # the recognition whose revocation for fraud revoked it
    reason: str  # as recorded on it (naming that recognition's certificate)


class SupplementReminder(_Model):
    """The supplement of a returned application is due soon: tell the enterprise (once per return, keyed by
    ``event_key``)."""

    application_id: uuid.UUID
    event_key: str
    supplement_due_at: datetime
    at: datetime


class ExpiryReminder(_Model):
    """A recognition expires soon: tell the enterprise (once, keyed by ``event_key``)."""

    recognition_id: uuid.UUID
    application_id: uuid.UUID
    event_key: str
    at: datetime


class ReReviewInput(_Model):
    recognition_id: uuid.UUID
    application_id: uuid.UUID
    at: datetime


class ReReviewOutcome(_Model):
    application_id: uuid.UUID
    review: ReviewInput | None


class ReReviewWindow(_Model):
    """The re-review window of a recognition opens (activity ``open_re_review_window``)."""

    recognition_id: uuid.UUID
    application_id: uuid.UUID
    event_key: str
    at: datetime


class ReReviewRequest(_Model):
    """Update ``file_re_review`` of the recognition's review workflow: the enterprise's current figures and
    evidence for the re-review (复核) of its recognition, while the window is open."""

    actor: Actor
    metrics: dict[str, Any]
    evidence: list[uuid.UUID] = []


class ReReviewFiling(_Model):
    """Activity ``file_re_review``: write the re-review application (id ``re_review_id``) of the recognition
    of ``application_id``, with the request's figures and evidence."""

    recognition_id: uuid.UUID
    application_id: uuid.UUID
    event_key: str
    at: datetime
    re_review_id: uuid.UUID
    actor: Actor
    metrics: dict[str, Any]
    evidence: list[uuid.UUID] = []


class ReReviewFiled(_Model):
    """What ``file_re_review`` answers: the re-review application, under review, and the recognition it
    renews (valid until its decision, at least)."""

    application_id: uuid.UUID
    recognition_id: uuid.UUID
    valid_until: datetime


# --- the benefits boundary (implemented by the credit domain) ------------------------------------------


class BenefitsInput(_Model):
    """Started by the review workflow on recognition: workflow id ``benefits-{recognition_id}``."""

    recognition_id: uuid.UUID
    uscc: str
    tier: str
    program: str
    valid_until: datetime
    # The program version whose benefits it grants; None: the version in force when the schedule is read
    # (a workflow started before versions were recorded).
    program_version: int | None = None


class BenefitsExtension(_Model):
    """Signal ``extend`` to the benefits workflow: the recognition now holds until ``valid_until``, or while
    its re-review is undecided (None)."""

    valid_until: datetime | None


class BenefitsStop(_Model):
    """Signal ``stop`` to the benefits workflow: the recognition was revoked or expired."""

    reason: str
    cause: Literal["revoked", "expired"]


class BenefitGrant(_Model):
    recognition_id: uuid.UUID
    uscc: str
    tier: str
    program: str
    kind: BenefitKind
    amount: Decimal | None = None


class BenefitsFreeze(_Model):
    recognition_id: uuid.UUID
    reason: str
    at: datetime


# --- the credit domain: benefit schedule, payout approvals, disbursements --------------------------------
#
# A payout is money the programs pay out through the partner bank after finance approves it: a credit-line
# drawdown, a bridge loan from a program's fund, or a listing reward. One DisbursementWorkflow per payout
# runs the approval and the payment for every kind. The models below were first written for drawdowns only:
# ``payout_id`` still accepts the old name ``drawdown_id`` and ``kind`` defaults to ``drawdown``, so the
# histories recorded then (and workflows running since then) decode unchanged.


def _payout_id() -> Any:
    return Field(validation_alias=AliasChoices("payout_id", "drawdown_id"))


class BenefitSchedule(_Model):
    """What the recognition's program grants its tier (read by the benefits workflow through an activity)."""

    credit_line_limit: Decimal | None = None
    bridge_loan: bool = False
    listing_reward: bool = False


class DisbursementInput(_Model):
    """Started when a payout is requested: workflow id ``disbursement-{drawdown_id}`` for a drawdown,
    ``disbursement-bridge-loan-{id}`` and ``disbursement-listing-reward-{id}`` for the other kinds. The
    workflow waits for the approvals (Update ``decide``) until the deadline, then pays through the bank; a
    bridge loan is then watched until it is repaid or falls due."""

    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()
    requested_by: str
    approval_deadline: datetime


class PayoutRef(_Model):
    """Names one payout (input of the activity ``payment_order``)."""

    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()


class ApprovalRequest(_Model):
    """Update ``decide`` of the disbursement workflow: one finance officer's decision."""

    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()
    approver: str
    decision: ApprovalDecision
    reason: str | None = Field(default=None, max_length=2000)


class PayoutState(_Model):
    """A payout's state after an activity: what Updates return and the workflow ends with. ``due_at`` and
    ``overdue`` are a bridge loan's: when it falls due, and whether it was flagged overdue."""

    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()
    status: PayoutStatus
    approvals: int = 0
    required_approvals: int = 1
    reason: str | None = None
    due_at: datetime | None = None
    overdue: bool = False


class PayoutCheck(_Model):
    """Look at a payout. With ``expire`` one still awaiting approval expires (deadline passed); with
    ``overdue`` a bridge loan paid out and not repaid is flagged overdue (it fell due)."""

    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()
    expire: bool
    overdue: bool = False
    at: datetime


class PayoutReminderTime(_Model):
    """When a bridge loan paid out is reminded of (the program's ``reminder_working_days`` before it is
    due); None: never (not a bridge loan, not paid out, or its program has no bridge fund any more)."""

    remind_at: datetime | None = None


class PayoutReminder(_Model):
    """A bridge loan falls due soon: tell the enterprise and finance - once, and only while it is paid out,
    not repaid and not yet due."""

    kind: PayoutKind = "bridge_loan"
    payout_id: uuid.UUID
    at: datetime


class PaymentOrder(_Model):
    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()
    key: str  # the bank's Idempotency-Key, derived from the payout's id
    amount: Decimal
    beneficiary: str
    reference: str


class PaymentReceipt(_Model):
    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()
    bank_reference: str


class PaymentFailure(_Model):
    kind: PayoutKind = "drawdown"
    payout_id: uuid.UUID = _payout_id()
    reason: str


# --- bank reconciliation ---------------------------------------------------------------------------------

RECONCILIATION_WORKFLOW = "ReconciliationWorkflow"
# The daily schedule (Temporal Schedules) that starts a ReconciliationWorkflow for the day before, at 06:00 in
# China Standard Time; its workflows' ids are this id and the scheduled time.
RECONCILIATION_SCHEDULE_ID = "reconciliation-daily"
# The bank's business day: statements and the ledger's postings are compared by their day in UTC+8.
CHINA_STANDARD_TIME = timezone(timedelta(hours=8), "CST")


def reconciliation_workflow_id(day: date, request: str) -> str:
    """The id of a reconciliation of ``day`` asked for by one request (its Idempotency-Key's digest)."""
    return f"reconciliation-{day.isoformat()}-{request}"


def statement_day_before(at: datetime) -> date:
    """The day a run at ``at`` reconciles: the day before, in China Standard Time."""
    return (at.astimezone(CHINA_STANDARD_TIME) - timedelta(days=1)).date()


class ReconciliationInput(_Model):
    """A ReconciliationWorkflow's input: the day to reconcile, or None - the schedule's runs - for the day
    before the run was scheduled (China Standard Time)."""

    day: date | None = None


class ReconcileDay(_Model):
    """The reconciliation activity's input: the day, and the workflow that asked (kept on the run)."""

    day: date
    workflow_id: str


class ReconciliationOutcome(_Model):
    """What a reconciliation of a day found."""

    day: date
    run_id: uuid.UUID
    status: Literal["clean", "mismatches"]
    mismatches: int


# --- expert panels (services/applications/panels.py) --------------------------------------------------------


class PanelDraw(_Model):
    """Draw the stage's panel from the pool with `seed` (made in the workflow) and open its assignments."""

    application_id: uuid.UUID
    event_key: str
    at: datetime
    stage: Stage
    seed: str
    policy: PanelPolicy
    due_at: datetime


class PanelDrawn(_Model):
    """The drawn panel: its assignments (id -> expert_id); no panel (`panel_id` None) when too few experts
    were eligible, with the reason recorded - the stage is then a reviewer's decision as without a panel."""

    panel_id: uuid.UUID | None
    assignments: dict[str, str] = {}
    reason: str | None = None


class ScoreRequest(_Model):
    """An expert's score (rule ``average_score``) or vote (``majority``) on its assignment."""

    actor: Actor
    assignment_id: uuid.UUID
    score: int | None = Field(default=None, ge=0, le=100)
    vote: Literal["approve", "reject"] | None = None


class PanelScore(_Model):
    application_id: uuid.UUID
    event_key: str
    at: datetime
    panel_id: uuid.UUID
    assignment_id: uuid.UUID
    score: int | None = None
    vote: Literal["approve", "reject"] | None = None


class PanelScored(_Model):
    assignment_id: uuid.UUID
    answered: int  # of the panel, so far
    size: int


class PanelClose(_Model):
    """The panel's answers are in, or its time is up: absentees recorded, the rule applied."""

    application_id: uuid.UUID
    event_key: str
    at: datetime
    panel_id: uuid.UUID


class PanelVerdict(_Model):
    """The rule's decision with its reason; None: fewer answers than the quorum (the stage escalates)."""

    decision: Literal["approve", "reject"] | None
    reason: str
