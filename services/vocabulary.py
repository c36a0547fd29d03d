"""The service's vocabulary, spelled once: tiers, review levels, application and payout statuses, and the
region rule. API schemas, ORM constraints, program files and the models that cross the Temporal boundary all
draw on these (standard library only, so workflow code may import it)."""

from __future__ import annotations

from typing import Literal, Protocol, get_args

# --- the cultivation ladder and its review ----------------------------------------------------------------

Tier = Literal["innovative", "specialized_new", "little_giant", "invisible_champion", "single_champion"]
TIERS: tuple[Tier, ...] = get_args(Tier)
# A review level is also a stage of the review, and a reviewer's `level` claim.
Level = Literal["municipal", "provincial", "national"]
LEVELS: tuple[Level, ...] = get_args(Level)
# ``draft``: saved and edited by its enterprise, not submitted: no review; its owner and admins see it.
ApplicationStatus = Literal[
    "draft",
    "screening",
    "in_review",
    "returned",
    "public_notice",
    "recognized",
    "ineligible",
    "rejected",
    "withdrawn",
]
DRAFT: ApplicationStatus = "draft"
TERMINAL: frozenset[ApplicationStatus] = frozenset({"recognized", "ineligible", "rejected", "withdrawn"})
Decision = Literal["approve", "reject", "return"]

# --- benefits and payouts ---------------------------------------------------------------------------------

BenefitKind = Literal["credit_line", "bridge_loan", "listing_reward"]
BenefitStatus = Literal["active", "frozen"]
# A payout is money paid through the partner bank once finance approves it.
PayoutKind = Literal["drawdown", "bridge_loan", "listing_reward"]
PAYOUT_KINDS: tuple[PayoutKind, ...] = get_args(PayoutKind)
PayoutStatus = Literal["pending_approval", "approved", "disbursed", "repaid", "rejected", "expired", "failed"]
PAYOUT_STATUSES: tuple[PayoutStatus, ...] = get_args(PayoutStatus)
ApprovalDecision = Literal["approve", "reject"]
DisbursementStatus = Literal["pending", "paid", "failed"]

# --- the region rule --------------------------------------------------------------------------------------


NATIONWIDE = "000000"  # the region claim of a national reviewer: the whole country


def region_prefix(region: str) -> str:
    """What a region claim covers, as a prefix of 6-digit division codes: ``000000`` the whole country (the
    empty prefix), a code ending in ``0000`` its province (2 digits), in ``00`` its city (4), any other only
    itself (all 6)."""
    if region == NATIONWIDE:
        return ""
    if region.endswith("0000"):
        return region[:2]
    if region.endswith("00"):
        return region[:4]
    return region


def covers_region(region: str | None, code: str) -> bool:
    """Whether a region claim covers a division code (``region_prefix``); no claim covers nothing."""
    return region is not None and code.startswith(region_prefix(region))


# --- what rows of both domains share -----------------------------------------------------------------------


class Owned(Protocol):
    """Something of an enterprise under a program and tier: an application, a benefit, a credit line, a
    payout, a disbursement."""

    @property
    def uscc(self) -> str: ...
    @property
    def program(self) -> str: ...
    @property
    def tier(self) -> str: ...


def whose(row: Owned) -> dict[str, str]:
    """The enterprise, program and tier of ``row``: what a row made from it copies (a drawdown from its credit
    line, a disbursement from its payout, a re-review from the recognised application)."""
    return {"uscc": row.uscc, "program": row.program, "tier": row.tier}
