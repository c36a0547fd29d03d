"""The cohort report and the cultivation plan as the API answers them (JSON; the CSV, XLSX, PDF and charts
are drawn from the same ``Report``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.credit.schemas import Money
from services.vocabulary import Level, Tier


class _Read(BaseModel):
    model_config = ConfigDict(frozen=True)


# The recognition counts every row of recognitions carries: through review, imported, both.
IMPORTED = "recognitions imported from a ministry's published list (no application), not in `recognized`"
Recognized = Annotated[int, Field(description="recognitions through review")]
Imported = Annotated[int, Field(description=IMPORTED)]
RecognizedTotal = Annotated[int, Field(description="recognized + imported")]


class FunnelRow(_Read):
    """A tier's applications, step by step; a review level the tier does not go through is null. The steps
    are the applications' only; the tier's imported recognitions follow them, apart."""

    tier: Tier
    applied: int
    screened_in: int
    passed_municipal: int | None
    passed_provincial: int | None
    passed_national: int | None
    on_notice: int
    recognized: int = Field(description="recognitions through review of these applications")
    imported: Imported
    recognized_total: RecognizedTotal


class RuleRow(_Read):
    tier: Tier
    rule: str
    description: str
    checked: int
    passed: int
    pass_rate: float = Field(description="passed / checked, 4 decimals")


class StageTimes(_Read):
    """A review stage's decisions: time from the task's opening to its decision, in seconds (p50, p90 by
    ``percentile_cont``, null without decisions), and SLA breaches - decided after the due time, and still
    open past it now."""

    stage: Level
    decided: int
    p50_seconds: float | None
    p90_seconds: float | None
    decided_late: int
    open: int
    open_overdue: int
    breaches: int


class RegionRow(_Read):
    """Recognitions of a city and tier: through review by the code the application was filed in, imported by
    the code its enterprise is registered in."""

    province: str = Field(description="6-digit code of the province (GB/T 2260), e.g. 500000")
    city: str = Field(description="6-digit code of the city, e.g. 500100")
    tier: Tier
    recognized: Recognized
    imported: Imported
    recognized_total: RecognizedTotal


class IndustryRow(_Read):
    industry: str
    tier: Tier
    recognized: Recognized
    imported: Imported
    recognized_total: RecognizedTotal


class BenefitRow(_Read):
    """A kind, tier and status of benefits: those of recognitions through review (``granted``, ``amount``),
    those of imported recognitions, and both together."""

    kind: str
    tier: Tier
    status: str
    granted: int
    amount: Money
    imported_granted: int
    imported_amount: Money
    granted_total: int
    amount_total: Money


class MoneyRow(_Read):
    """A payout kind's money: awaiting approval or payment, paid out by the bank, repaid, outstanding (paid
    out and not repaid; a listing reward is a grant, never outstanding)."""

    kind: Literal["drawdown", "bridge_loan", "listing_reward"]
    payouts: int
    pending: Money
    disbursed: Money
    repaid: Money
    outstanding: Money


class PlanRow(_Read):
    """A tier's year of the cultivation plan against the new recognitions of that year (China Standard
    Time), and both summed over the tier's years so far ("50 little giants by 2023"). ``achieved`` counts
    recognitions through review and imported ones (by their list's recognized_on), each also apart."""

    year: int
    tier: Tier
    planned: int | None
    achieved: int
    cumulative_planned: int
    cumulative_achieved: int
    progress: float | None = Field(description="cumulative_achieved / cumulative_planned, 4 decimals")
    achieved_reviewed: int = Field(description="of achieved: through review")
    achieved_imported: int = Field(description="of achieved: imported from ministry lists")


class Report(_Read):
    """The cohort report of a program (and batch). Sections a caller may not read are null: finance reads
    the money (``benefits``, ``money``); a reviewer reads every section over the applications filed in its
    region (``region``)."""

    program: str
    program_name: str
    batch: str | None
    region: str | None = Field(description="the reviewer's region the figures are limited to; null: all")
    generated_at: datetime
    plan_source: Literal["file", "admin", "none"]
    funnel: list[FunnelRow] | None
    screening_rules: list[RuleRow] | None
    review_times: list[StageTimes] | None
    by_region: list[RegionRow] | None
    by_industry: list[IndustryRow] | None
    benefits: list[BenefitRow] | None
    money: list[MoneyRow] | None
    plan: list[PlanRow] | None


class PlanLine(_Read):
    year: Annotated[int, Field(ge=2000, le=2100)]
    tier: Tier
    target: Annotated[int, Field(ge=0, le=1_000_000)]


class PlanLineWrite(PlanLine):
    """A line of a plan as an admin sends it: nothing beside its three fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanUpdate(BaseModel):
    """The whole plan of a program, replacing what was set before; an empty list returns to the file's."""

    model_config = ConfigDict(extra="forbid")

    targets: Annotated[list[PlanLineWrite], Field(max_length=500)]


class PlanRead(_Read):
    program: str
    source: Literal["file", "admin", "none"]
    targets: list[PlanLine]
    set_by: str | None = None
    set_at: datetime | None = None
