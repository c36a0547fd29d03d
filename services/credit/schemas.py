"""API schemas of the credit domain. Money is a string with exactly two decimals, both ways."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

from services.contracts import PayoutKind
from services.credit.models import BridgeLoanQualification
from services.pagination import Page
from services.vocabulary import (
    ApprovalDecision,
    BenefitKind,
    BenefitStatus,
    DisbursementStatus,
    PayoutStatus,
)

USCC_PATTERN = "^[0-9A-HJ-NP-RTUWXY]{18}$"
KEY_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"  # program keys (and other policy ids)
CENT = Decimal("0.01")
# The JSON schema states exactly what the parser accepts: two decimals, no sign, no leading zeros.
MONEY_PATTERN = r"^(0|[1-9][0-9]{0,15})\.[0-9]{2}$"
POSITIVE_MONEY_PATTERN = r"^(0\.(0[1-9]|[1-9][0-9])|[1-9][0-9]{0,15}\.[0-9]{2})$"


def _money_parser(pattern: str, what: str) -> Callable[[Any], Decimal]:
    compiled = re.compile(pattern)

    def parse(value: Any) -> Decimal:
        if isinstance(value, Decimal):  # from the database
            return value.quantize(CENT)
        if not isinstance(value, str):
            raise ValueError('money is a string with two decimals, e.g. "3000000.00", never a JSON number')
        if not compiled.fullmatch(value):
            raise ValueError(f'money is {what} with exactly two decimals, e.g. "3000000.00"')
        return Decimal(value)

    return parse


def format_money(value: Decimal) -> str:
    return f"{value.quantize(CENT):.2f}"


Money = Annotated[
    Decimal,
    BeforeValidator(_money_parser(MONEY_PATTERN, "a non-negative amount")),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": MONEY_PATTERN, "examples": ["3000000.00"]}),
]
"""Yuan: a string with two decimals in JSON; a Decimal in Python."""

PositiveMoney = Annotated[
    Decimal,
    BeforeValidator(_money_parser(POSITIVE_MONEY_PATTERN, "a positive amount")),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": POSITIVE_MONEY_PATTERN, "examples": ["1000000.00"]}),
]


# --- reads -------------------------------------------------------------------------------------------------


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class _RecognitionBenefitRead(_Read):
    """What a benefit and the credit line it opened both show: the recognition they came with (the
    enterprise, program and tier) and whether, since when and why they are frozen."""

    id: uuid.UUID
    recognition_id: uuid.UUID
    uscc: str
    program: str
    tier: str
    status: BenefitStatus
    frozen_at: datetime | None
    freeze_reason: str | None


class BenefitRead(_RecognitionBenefitRead):
    kind: BenefitKind
    amount: Money | None = Field(description="the credit line's limit for kind credit_line")
    credit_line_id: uuid.UUID | None = None
    granted_at: datetime


class CreditLineRead(_RecognitionBenefitRead):
    limit: Money = Field(validation_alias="credit_limit")
    reserved: Money = Field(description="held by drawdowns awaiting approval or payment")
    drawn: Money = Field(description="paid out in all")
    repaid: Money = Field(description="paid back in all (drawdown repayments)")
    outstanding: Money = Field(description="drawn - repaid: paid out and not repaid yet")
    available: Money = Field(description="limit - reserved - outstanding: the line revolves")
    overdue: Money = Field(
        default=Decimal("0.00"),
        description="outstanding on drawdowns past their due time; while it is above zero the line takes no "
        "new drawdowns",
    )
    opened_at: datetime


class LedgerLineRead(BaseModel):
    account: str
    debit: Money
    credit: Money


class LedgerEntryRead(BaseModel):
    id: uuid.UUID
    memo: str
    lines: list[LedgerLineRead]
    reverses: uuid.UUID | None = None


class DisbursementRead(_Read):
    id: uuid.UUID
    kind: PayoutKind = Field(description="what is paid out: a drawdown, a bridge loan or a listing reward")
    payout_id: uuid.UUID = Field(description="the drawdown, bridge loan or listing reward paid")
    drawdown_id: uuid.UUID | None = Field(description="the drawdown paid (kind `drawdown` only)")
    uscc: str
    program: str
    tier: str
    amount: Money
    status: DisbursementStatus
    bank_reference: str | None
    failure_reason: str | None
    ledger_entry_id: uuid.UUID | None
    created_at: datetime
    completed_at: datetime | None
    repaid: Money | None = Field(
        default=None, description="repaid so far of the drawdown paid (kind `drawdown`, once paid)"
    )
    outstanding: Money | None = Field(
        default=None, description="paid and not repaid yet of the drawdown (kind `drawdown`, once paid)"
    )


class StatusTotal(BaseModel):
    count: int
    amount: Money


class DisbursementPage(Page[DisbursementRead]):
    totals: dict[str, StatusTotal] = Field(description="count and amount per status over every matching row")


class ApprovalRead(_Read):
    approver: str
    decision: ApprovalDecision
    reason: str | None
    created_at: datetime


class PayoutRead(_Read):
    """What every payout shows: the maker-checker approvals, the disbursement and the ledger entries."""

    id: uuid.UUID
    uscc: str
    program: str
    tier: str
    amount: Money
    requested_by: str
    required_approvals: int = Field(description="two distinct finance approvers above the threshold")
    approvals: list[ApprovalRead] = []
    approval_deadline: datetime = Field(description="not approved by then, the payout expires")
    reason: str | None = Field(description="why it was rejected, expired or failed")
    decided_at: datetime | None
    created_at: datetime
    disbursement: DisbursementRead | None = None
    ledger_entries: list[LedgerEntryRead] = []


class DrawdownRead(PayoutRead):
    credit_line_id: uuid.UUID
    status: PayoutStatus = Field(description="`repaid` once nothing of it is outstanding")
    term: str | None = Field(
        default=None, description="ISO 8601 duration from payment to due time (the program's, when requested)"
    )
    due_at: datetime | None = Field(default=None, description="set when the bank paid it: term after payment")
    repaid: Money = Field(default=Decimal("0.00"), description="repaid so far")
    outstanding: Money = Field(
        default=Decimal("0.00"), description="paid out and not repaid (zero until it is paid out)"
    )
    overdue: bool = Field(default=False, description="past its due time with an amount outstanding")
    overdue_since: datetime | None = Field(default=None, description="when the worker's sweep flagged it")


class DrawdownRepaymentRead(_Read):
    id: uuid.UUID
    drawdown_id: uuid.UUID
    credit_line_id: uuid.UUID
    uscc: str
    amount: Money
    paid_on: date
    reference: str | None
    recorded_by: str
    created_at: datetime
    ledger_entry: LedgerEntryRead | None = Field(
        default=None, description="debit bank_settlement, credit the enterprise's credit receivable"
    )


# --- the finance inbox -------------------------------------------------------------------------------------

# The inbox names a payout still waiting for finance `awaiting_approval` (API.md); its other statuses are the
# payout's own (``PayoutStatus``; tests/credit/test_inbox.py keeps the two lists in step).
AWAITING_APPROVAL = "awaiting_approval"
InboxStatus = Literal["awaiting_approval", "approved", "disbursed", "repaid", "rejected", "expired", "failed"]


class PayoutInboxItem(BaseModel):
    """One payout in the finance inbox (GET /payouts), whatever its kind: what a checker decides on. Decide
    through the kind's own resource: `POST /drawdowns/{id}/approvals`, `/bridge-loans/{id}/approvals`,
    `/listing-rewards/{id}/approvals`."""

    kind: PayoutKind
    id: uuid.UUID
    uscc: str
    program: str
    tier: str
    amount: Money
    status: InboxStatus
    requested_by: str
    requested_at: datetime
    approval_deadline: datetime = Field(description="not approved by then, the payout expires")
    approvals: list[ApprovalRead] = Field(description="the finance decisions so far, oldest first")
    approvals_needed: int = Field(
        description="distinct finance approvals the payout needs in all: 2 above the program's "
        "dual-approval threshold (as it stood when the payout was requested), else 1"
    )
    approvals_missing: int = Field(description="approvals still needed while it awaits approval, else 0")
    can_approve: bool = Field(
        description="whether the caller may decide on it now: finance, never its requester, once each, "
        "only while it awaits approval (before its deadline)"
    )


# --- writes ------------------------------------------------------------------------------------------------


class _Write(BaseModel):
    model_config = ConfigDict(extra="forbid")


NO_NUL = "^[^\\x00]*$"  # PostgreSQL text cannot hold NUL


class DrawdownCreate(_Write):
    amount: PositiveMoney


class ApprovalCreate(_Write):
    decision: ApprovalDecision
    reason: Annotated[str, Field(max_length=2000, pattern=NO_NUL)] | None = None


class DrawdownRepaymentCreate(_Write):
    amount: Annotated[PositiveMoney, Field(description="at most what is outstanding on the drawdown")]
    paid_on: Annotated[
        date | None, Field(description="the day the money came in (default: today, China Standard Time)")
    ] = None
    reference: Annotated[
        str | None, Field(max_length=100, pattern="^[ -~]+$", description="the incoming transfer's reference")
    ] = None


# --- bridge-loan pools and listing rewards ------------------------------------------------------------


class FundRead(BaseModel):
    program: str
    capacity: Money
    committed: Money = Field(description="reserved + lent: never more than the capacity")
    available: Money = Field(description="capacity - committed")
    reserved: Money = Field(description="held by loans awaiting approval or payment")
    lent: Money = Field(description="paid out and not yet repaid")
    per_use_cap: Money
    term_working_days: int


SIGNED_MONEY_PATTERN = r"^-?(0|[1-9][0-9]{0,15})\.[0-9]{2}$"
SignedMoney = Annotated[
    Decimal,
    BeforeValidator(_money_parser(SIGNED_MONEY_PATTERN, "an amount (negative: a cut)")),
    PlainSerializer(format_money, return_type=str),
    WithJsonSchema({"type": "string", "pattern": SIGNED_MONEY_PATTERN, "examples": ["-500000.00"]}),
]


class FundCapacityChangeCreate(_Write):
    """Exactly one of ``capacity`` (the new capacity) and ``delta`` (a raise, or a cut when negative)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={  # the `_one_of` rule, for clients: exactly one of the two is given (not null)
            "oneOf": [
                {"required": ["capacity"], "properties": {"capacity": {"type": "string"}}},
                {"required": ["delta"], "properties": {"delta": {"type": "string"}}},
            ]
        },
    )

    capacity: Annotated[Money | None, Field(description="the fund's new capacity")] = None
    delta: Annotated[SignedMoney | None, Field(description="added to the capacity (negative: a cut)")] = None
    reason: Annotated[str, Field(min_length=1, max_length=2000, pattern=NO_NUL)]

    @model_validator(mode="after")
    def _one_of(self) -> FundCapacityChangeCreate:
        if (self.capacity is None) == (self.delta is None):
            raise ValueError("give exactly one of `capacity` (the new capacity) and `delta`")
        return self


class FundCapacityChangeRead(_Read):
    id: uuid.UUID
    program: str
    previous_capacity: Money
    new_capacity: Money
    delta: SignedMoney = Field(description="new_capacity - previous_capacity (negative: a cut)")
    committed_then: Money = Field(description="what the fund had committed when the change was made")
    reason: str
    changed_by: str
    created_at: datetime
    ledger_entry: LedgerEntryRead = Field(
        description="a raise debits fund_capacity:<program> and credits fund_appropriation:<program>; a cut "
        "the other way round"
    )


class BridgeLoanCreate(_Write):
    amount: PositiveMoney
    term_days: Annotated[
        int,
        Field(
            ge=1,
            le=366,
            description="working days from approval (China's official calendar: public holidays off, "
            "adjusted weekends worked); at most the fund's term",
        ),
    ]
    purpose: Annotated[str, Field(min_length=1, max_length=500, pattern=NO_NUL)]
    program: Annotated[
        str | None,
        Field(
            pattern=KEY_PATTERN,
            description="needed only when several programs qualify (an active recognition's programs, or "
            "when none has one, the programs whose fund is open to a cultivation pool you are in)",
        ),
    ] = None


BridgeLoanStatus = PayoutStatus


class BridgeLoanRead(PayoutRead):
    term_days: int = Field(
        description="working days from approval (China's official calendar, China Standard Time)"
    )
    purpose: str
    status: BridgeLoanStatus
    due_on: date | None = Field(description="set on approval: the day it must be repaid")
    overdue: bool = Field(description="paid out, not repaid, and past its due date")
    overdue_since: datetime | None = Field(description="when the loan's workflow flagged it overdue")
    repaid_at: datetime | None = Field(description="when the last repayment made it repaid in full")
    repaid_by: str | None
    repayment_reference: str | None = Field(description="the last repayment's reference")
    repaid: Money = Field(default=Decimal("0.00"), description="repaid so far (in one or more parts)")
    outstanding: Money = Field(
        default=Decimal("0.00"), description="amount - repaid: what it still holds of the fund once paid out"
    )
    qualified_by: BridgeLoanQualification = Field(
        default="recognition",
        description="what qualified the enterprise: `recognition` (an active recognition whose benefit "
        "carries the fund, `recognition_id`) or `pool` (a membership of the program's cultivation pool, "
        "when its fund is open to the pool; `tier` is the tier the member aims at)",
    )
    recognition_id: uuid.UUID | None = Field(
        default=None, description="the recognition that qualified it; null when a pool membership did"
    )


class RepaymentCreate(_Write):
    amount: Annotated[
        PositiveMoney,
        Field(description="a part or the whole of what is outstanding; more than outstanding is a 409"),
    ]
    reference: Annotated[
        str | None, Field(max_length=100, pattern="^[ -~]+$", description="the incoming transfer's reference")
    ] = None


class ListingCreate(_Write):
    board: Annotated[str, Field(pattern=KEY_PATTERN, description="a board with a reward in the program")]
    listed_on: date
    security_code: Annotated[str, Field(pattern="^[0-9A-Z]{4,12}$")]


class ListingRewardRead(PayoutRead):
    board: str
    listed_on: date
    security_code: str
    reported_by: str = Field(description="who reported the listing (the reward's requester)")
    status: PayoutStatus


# --- list filters ------------------------------------------------------------------------------------------


class ListFilters(BaseModel):
    """What a list is filtered by, as its route's query gives it (None: any). Each is a column of the listed
    rows that must equal the value, but those the repository applies itself: ``overdue`` (paid out, not
    repaid and past due), ``date_from`` and ``date_to`` (created on or after, on or before, UTC days),
    ``amount_min`` and ``amount_max`` (at least, at most). ``uscc`` is what a reader's scope narrows
    (``service.scoped``)."""

    uscc: str | None = None
    recognition_id: uuid.UUID | None = None
    kind: str | None = None
    status: str | None = None
    program: str | None = None
    tier: str | None = None
    board: str | None = None
    credit_line_id: uuid.UUID | None = None
    overdue: bool | None = None
    date_from: date | None = None
    date_to: date | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
