"""Programs as data: each ``programs/*.toml`` file is one program's policy.

A program names its tiers, criteria rulesets, batches, durations and money.

Money is written as a string with exactly two decimals (``"2000000.00"``); TOML floats and integers are
refused so that no amount ever passes through binary floating point. Durations are ISO 8601 strings
(``"P7D"``, ``"PT30S"``, ``"P3Y"``). Dates are TOML local dates (``2026-04-01``).

File layout (unknown keys are refused)::

    key = "chongqing-2020"                  # unique across the folder
    name = "..."
    authority = "..."
    region_code = "500000"                  # GB/T 2260, 6 digits
    currency = "CNY"                        # optional
    escalation_group = "cq-backup-reviewers"
    dual_approval_threshold = "1000000.00"  # drawdowns above need two distinct finance approvers
    listing_rewards = { growth = "250000.00" }           # optional: board -> one-time reward
    listing_qualifying_tiers = ["specialized_new"]       # optional
    listing_reward_budget_per_year = "5000000.00"        # optional: what the rewards requested in a year
                                                         # (China Standard Time) may hold in all; none: no cap

    [[rulesets]]                            # one or more, effective_from strictly increasing
    version = "national-2022"               # a version in STANDARDS (screening implements each)
    effective_from = 2022-06-01

    [[rulesets]]                            # a batch is judged by the ruleset in force when it opens,
    version = "national-2026"               # which must be its standard's then (national-2022 is
    effective_from = 2026-04-01             # superseded by national-2026 from 2026-04-01)

    [[batches]]                             # zero or more, keys unique
    key = "2026"
    opens_on = 2026-04-25
    closes_on = 2026-05-25

    [durations]
    notice_period = "P7D"
    stage_sla = "P30D"
    supplement_deadline = "P15D"
    validity = "P3Y"
    approval_deadline = "P10D"
    claim_ttl = "PT4H"                      # optional (default PT4H): a reviewer's claim on a task lapses
    supplement_reminder = "P3D"             # optional (default P3D): remind the enterprise before a
                                            # supplement is due
    expiry_reminder = "P90D"                # optional (default P90D): ... and before a recognition expires
                                            # (recognitions granted before re-review windows existed)
    re_review_window = "P90D"               # optional (default P90D): the re-review (复核) opens this long
                                            # before a recognition expires; shorter than the validity
    fraud_bar = "P3Y"                       # optional (default P3Y): a revocation for fraud bars the
                                            # enterprise from applying to any tier for this long
    drawdown_term = "P12M"                  # optional (default P12M): a drawdown is repaid this long after
                                            # the bank paid it; then it is overdue

    [tiers.little_giant]                    # keys from screening.TIERS
    name = "..."
    review_levels = ["municipal", "provincial", "national"]   # non-empty, in this order
    requires_tier = "specialized_new"       # optional, a lower tier
    required_documents = ["business_licence"]
    credit_line_limit = "3000000.00"        # optional

    [tiers.little_giant.panels.national]    # optional: a stage decided by an expert panel drawn at random
    size = 5                                # from the pool (services/applications/panels.py), 1-25 experts
    rule = "average_score"                  # passes with an average score >= pass_score (0-100), or
    pass_score = 70                         # rule = "majority" (more approve votes than reject; no score)

    [bridge_pool]                           # optional
    capacity = "3000000000.00"
    per_use_cap = "80000000.00"
    term_working_days = 15
    qualifying_tiers = ["specialized_new"]
    reminder_working_days = 3               # optional (default 3): a loan is reminded of before it is due
    open_to_pool_members = true             # optional (default false): the program's cultivation-pool
                                            # members borrow from the fund too (services/credit/funds.py)

    [[plan]]                                # optional: the three-year cultivation plan, new recognitions
    year = 2025                             # wanted per calendar year (China Standard Time) and tier; a
    tier = "little_giant"                   # tier of this program, each (year, tier) once, target >= 0;
    target = 30                             # the report sets planned against achieved (services/reports)

    [notifications]                         # optional: staff mailboxes e-mailed about the program's events
    finance = ["finance@example.cn"]        # finance's events (every payout's steps)

    [notifications.reviewers]               # optional: a level's reviewers (tasks, overdue), any region
    municipal = ["review@example.cn"]

    [notifications.groups]                  # optional: the escalation_group's (escalations); no other group
    cq-backup-reviewers = ["backup@example.cn"]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import isodate
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from services.identifiers import validate_email, validate_region_code
from services.vocabulary import LEVELS, TIERS, Level, Tier

TierKey = Tier


@dataclass(frozen=True, slots=True)
class Standard:
    """A national criteria standard: in force from ``effective_from`` until the next one replaces it."""

    effective_from: date
    superseded_on: date | None = None

    def in_force(self, on: date) -> bool:
        return self.effective_from <= on and (self.superseded_on is None or on < self.superseded_on)


# The criteria rulesets the screening engine implements (services.applications.screening), each with the
# period its national standard is in force (../shared/DOMAIN.md: the 2026 standard replaces the 2022 one
# from 2026-04-01). A program's batch must be judged by a standard in force on the day it opens.
STANDARDS: dict[str, Standard] = {
    "national-2022": Standard(date(2022, 6, 1), superseded_on=date(2026, 4, 1)),
    "national-2026": Standard(date(2026, 4, 1)),
}
RULESETS: frozenset[str] = frozenset(STANDARDS)

__all__ = [
    "REVIEW_LEVELS",
    "STANDARDS",
    "Batch",
    "BridgePool",
    "Durations",
    "IsoDuration",
    "Money",
    "NoRulesetInForce",
    "Notifications",
    "PanelPolicy",
    "PlanTarget",
    "Program",
    "ProgramBook",
    "ProgramFileError",
    "ProgramVersionNotLoaded",
    "ReviewLevel",
    "RulesetChoice",
    "Standard",
    "TierKey",
    "TierPolicy",
    "document_problems",
    "load_program_file",
    "load_programs",
    "program_at",
    "program_version",
]

ReviewLevel = Level
REVIEW_LEVELS = LEVELS

_When = TypeVar("_When", bound=date)


class ProgramFileError(ValueError):
    """A program file cannot be used; the one-line message names the file and the field."""


class NoRulesetInForce(ValueError):
    """No ruleset of the program is in force on the date asked about."""


# -- durations --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IsoDuration:
    """A positive ISO 8601 duration, kept with its original text.

    ``timedelta`` is exact for days and times; years and months count as 365 and 30 days there, so
    use :meth:`add_to` for calendar arithmetic (``P3Y`` from 29 Feb 2024 is 28 Feb 2027). In a pydantic
    model it validates from the ISO text and serializes back to it.
    """

    iso: str
    _parsed: Any = field(compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> IsoDuration:
        try:
            parsed = isodate.parse_duration(text)
        except isodate.ISO8601Error:
            raise ValueError(f'{text!r} is not an ISO 8601 duration (e.g. "P5D", "PT30S", "P3Y")') from None
        if isinstance(parsed, isodate.Duration):
            years, months, rest = parsed.years, parsed.months, parsed.tdelta
            if years != int(years) or months != int(months):
                raise ValueError(f"{text!r}: years and months must be whole numbers")
            if years < 0 or months < 0 or rest < timedelta(0) or (years == months == 0 and not rest):
                raise ValueError(f"{text!r}: a duration must be positive")
        elif parsed <= timedelta(0):
            raise ValueError(f"{text!r}: a duration must be positive")
        return cls(text, parsed)

    @property
    def timedelta(self) -> timedelta:
        parsed = self._parsed
        if isinstance(parsed, isodate.Duration):
            days = int(parsed.years) * 365 + int(parsed.months) * 30
            delta: timedelta = timedelta(days=days) + parsed.tdelta
            return delta
        assert isinstance(parsed, timedelta)
        return parsed

    def add_to(self, when: _When) -> _When:
        """``when`` plus this duration, with calendar years and months."""
        result: _When = when + self._parsed
        return result

    def __str__(self) -> str:
        return self.iso

    @classmethod
    def _validate(cls, value: Any) -> IsoDuration:
        if isinstance(value, IsoDuration):
            return value
        if not isinstance(value, str):
            raise ValueError('a duration is an ISO 8601 string, e.g. "P5D", "PT30S", "P3Y"')
        return cls.parse(value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            json_schema_input_schema=core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )


# -- money ------------------------------------------------------------------------------------------


def _money_input(value: Any) -> Any:
    if isinstance(value, str | Decimal):
        return value
    kind = type(value).__name__
    raise ValueError(f'money is a quoted string with two decimals, e.g. "2000000.00", not {kind} {value!r}')


def _two_decimals(value: Decimal) -> Decimal:
    if value.as_tuple().exponent != -2:
        raise ValueError(f'money needs exactly two decimals, e.g. "2000000.00", got "{value}"')
    if value < 0:
        raise ValueError(f"money cannot be negative, got {value}")
    return value


Money = Annotated[
    Decimal, BeforeValidator(_money_input), Field(allow_inf_nan=False), AfterValidator(_two_decimals)
]
"""Yuan with exactly two decimals, written as a string."""

PositiveMoney = Annotated[Money, Field(gt=0)]
_Name = Annotated[str, Field(min_length=1)]
_Id = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]


# -- models -----------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RulesetChoice(_Frozen):
    version: str
    effective_from: date

    @field_validator("version")
    @classmethod
    def _known(cls, version: str) -> str:
        if version not in RULESETS:
            raise ValueError(f"unknown ruleset {version!r}; known: {', '.join(sorted(RULESETS))}")
        return version


class Batch(_Frozen):
    """An annual filing window; both dates are included."""

    key: _Id
    opens_on: date
    closes_on: date

    @field_validator("closes_on")
    @classmethod
    def _after_opening(cls, closes_on: date, info: ValidationInfo) -> date:
        opens_on = info.data.get("opens_on")
        if opens_on is not None and closes_on < opens_on:
            raise ValueError(f"closes on {closes_on}, before it opens on {opens_on}")
        return closes_on

    def is_open(self, on: date) -> bool:
        return self.opens_on <= on <= self.closes_on


DEFAULT_CLAIM_TTL = "PT4H"
DEFAULT_SUPPLEMENT_REMINDER = "P3D"
DEFAULT_EXPIRY_REMINDER = "P90D"
DEFAULT_FRAUD_BAR = "P3Y"
DEFAULT_RE_REVIEW_WINDOW = "P90D"
DEFAULT_DRAWDOWN_TERM = "P12M"
DEFAULT_REMINDER_WORKING_DAYS = 3


class Durations(_Frozen):
    notice_period: IsoDuration
    stage_sla: IsoDuration
    supplement_deadline: IsoDuration
    validity: IsoDuration
    approval_deadline: IsoDuration
    # How long a reviewer's claim on a review task holds (POST /review-tasks/{id}/claim); a lapsed claim
    # counts as none. Files written before claims existed get the default.
    claim_ttl: IsoDuration = IsoDuration.parse(DEFAULT_CLAIM_TTL)
    # Reminders, the review workflow's timers (events application.supplement_due_soon, recognition.expiring):
    # how long before a supplement is due, and before a recognition expires, the enterprise is told. A window
    # shorter than its reminder (a supplement due sooner) gets none: the event that opened it gave the date.
    # Files written before reminders existed get the defaults.
    supplement_reminder: IsoDuration = IsoDuration.parse(DEFAULT_SUPPLEMENT_REMINDER)
    expiry_reminder: IsoDuration = IsoDuration.parse(DEFAULT_EXPIRY_REMINDER)
    # A revocation for fraud bars the enterprise from applying to any tier for this long from the revocation
    # (../shared/DOMAIN.md: 3 years). Files written before fraud bars existed get the default.
    fraud_bar: IsoDuration = IsoDuration.parse(DEFAULT_FRAUD_BAR)
    # Re-review (复核, ../shared/DOMAIN.md): this long before a recognition expires, its re-review opens: the
    # enterprise files current figures and evidence, the recognition holds while the re-review is undecided
    # and is extended by `validity` on approval; without a filing it lapses at expiry. Shorter than the
    # validity. Files written before re-review windows existed get the default.
    re_review_window: IsoDuration = IsoDuration.parse(DEFAULT_RE_REVIEW_WINDOW)
    # A credit-line drawdown's term: it falls due this long after the bank paid it out (calendar months and
    # years, services/credit/repayments.py), and is overdue while anything of it is outstanding after that.
    # Files written before repayments existed get the default.
    drawdown_term: IsoDuration = IsoDuration.parse(DEFAULT_DRAWDOWN_TERM)

    @model_validator(mode="after")
    def _window_inside_validity(self) -> Durations:
        if self.re_review_window.timedelta >= self.validity.timedelta:
            raise ValueError(
                f"re_review_window: {self.re_review_window} is not shorter than the validity "
                f"({self.validity})"
            )
        return self


class PanelPolicy(_Frozen):
    """An expert panel deciding one review level (``[tiers.<tier>.panels.<level>]``)."""

    size: Annotated[int, Field(ge=1, le=25)]
    rule: Literal["average_score", "majority"]
    pass_score: Annotated[int, Field(ge=0, le=100)] | None = None

    @model_validator(mode="after")
    def _score_with_its_rule(self) -> PanelPolicy:
        if (self.rule == "average_score") != (self.pass_score is not None):
            raise ValueError('pass_score goes with rule = "average_score" (and only with it)')
        return self


class TierPolicy(_Frozen):
    name: _Name
    review_levels: list[ReviewLevel]
    requires_tier: TierKey | None = None
    required_documents: list[_Id] = Field(default_factory=list)
    credit_line_limit: PositiveMoney | None = None
    panels: dict[ReviewLevel, PanelPolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _panels_on_own_levels(self) -> TierPolicy:
        stray = sorted(set(self.panels) - set(self.review_levels))
        if stray:
            raise ValueError(f"panels name levels the tier is not reviewed at: {', '.join(stray)}")
        return self

    @field_validator("review_levels")
    @classmethod
    def _ordered(cls, levels: list[ReviewLevel]) -> list[ReviewLevel]:
        if not levels:
            raise ValueError("at least one review level is required")
        order = [REVIEW_LEVELS.index(level) for level in levels]
        if order != sorted(set(order)):
            raise ValueError(f"levels must be distinct and in the order {', '.join(REVIEW_LEVELS)}")
        return levels

    @field_validator("required_documents")
    @classmethod
    def _distinct(cls, documents: list[str]) -> list[str]:
        if len(set(documents)) != len(documents):
            raise ValueError("a document is listed twice")
        return documents


class BridgePool(_Frozen):
    """A municipal bridge ("转贷") fund: never committed beyond ``capacity``."""

    capacity: PositiveMoney
    per_use_cap: PositiveMoney
    term_working_days: Annotated[int, Field(gt=0)]
    qualifying_tiers: Annotated[list[TierKey], Field(min_length=1)]
    # A loan paid out and not repaid is reminded of (event bridge_loan.due_soon, the disbursement workflow's
    # timer) at the start of the working day this many working days before the day it is due. Files written
    # before reminders existed get the default.
    reminder_working_days: Annotated[int, Field(gt=0)] = DEFAULT_REMINDER_WORKING_DAYS
    # The fund lends to the program's cultivation-pool members (``pool_members``, whatever tier they aim
    # at) as well as to the enterprises whose recognition in a ``qualifying_tiers`` tier carries it (the
    # Chongqing seed opens its fund to the pool; services/credit/funds.py). Files and versions written
    # before this existed mean what they meant: closed.
    open_to_pool_members: Annotated[bool, Field(strict=True)] = False

    @field_validator("per_use_cap")
    @classmethod
    def _within_capacity(cls, cap: Decimal, info: ValidationInfo) -> Decimal:
        capacity = info.data.get("capacity")
        if capacity is not None and cap > capacity:
            raise ValueError(f"per-use cap {cap} exceeds the pool capacity {capacity}")
        return cap


Mailbox = Annotated[str, AfterValidator(validate_email)]


class Notifications(_Frozen):
    """The staff mailboxes that receive a program's events by e-mail (services/notifications/mail.py), beside
    the enterprise's own contact address: finance's, each review level's (one mailbox per level for the
    whole program, whatever the region), and a reviewer group's. None by default."""

    finance: list[Mailbox] = Field(default_factory=list)
    reviewers: dict[ReviewLevel, list[Mailbox]] = Field(default_factory=dict)
    groups: dict[_Name, list[Mailbox]] = Field(default_factory=dict)


class PlanTarget(_Frozen):
    """One line of a cultivation plan: how many enterprises a program means to see recognised in a tier in a
    calendar year (../shared/DOMAIN.md: "50 little giants by 2023" is the sum of a tier's years)."""

    year: Annotated[int, Field(strict=True, ge=2000, le=2100)]
    tier: TierKey
    target: Annotated[int, Field(strict=True, ge=0, le=1_000_000)]


class Program(_Frozen):
    key: _Id
    name: _Name
    authority: _Name
    region_code: Annotated[str, AfterValidator(validate_region_code)]
    currency: Literal["CNY"] = "CNY"
    rulesets: Annotated[list[RulesetChoice], Field(min_length=1)]
    batches: list[Batch] = Field(default_factory=list)
    durations: Durations
    escalation_group: _Name
    tiers: Annotated[dict[TierKey, TierPolicy], Field(min_length=1)]
    dual_approval_threshold: PositiveMoney
    bridge_pool: BridgePool | None = None
    listing_rewards: dict[_Id, PositiveMoney] = Field(default_factory=dict)
    listing_qualifying_tiers: list[TierKey] = Field(default_factory=list)
    # The listing rewards' yearly budget (services/credit/funds.py): a report beyond what is left is refused.
    listing_reward_budget_per_year: PositiveMoney | None = None
    notifications: Notifications = Field(default_factory=Notifications)
    # The three-year cultivation plan (``[[plan]]``); an admin may replace it (PUT /programs/{key}/plan).
    plan: list[PlanTarget] = Field(default_factory=list)

    @field_validator("rulesets")
    @classmethod
    def _increasing(cls, rulesets: list[RulesetChoice]) -> list[RulesetChoice]:
        dates = [choice.effective_from for choice in rulesets]
        if any(later <= earlier for earlier, later in pairwise(dates)):
            raise ValueError("effective_from dates must be strictly increasing")
        return rulesets

    @field_validator("batches")
    @classmethod
    def _unique_batches(cls, batches: list[Batch]) -> list[Batch]:
        keys = [batch.key for batch in batches]
        if len(set(keys)) != len(keys):
            raise ValueError("batch keys must be unique")
        return batches

    @model_validator(mode="after")
    def _consistent(self) -> Program:
        for key, policy in self.tiers.items():
            required = policy.requires_tier
            if required is not None and TIERS.index(required) >= TIERS.index(key):
                raise ValueError(f"tiers.{key}.requires_tier: {required!r} is not a lower tier than {key!r}")
        for index, batch in enumerate(self.batches):
            self._judged_by_its_standard(index, batch)
        if self.bridge_pool is not None:
            self._offered("bridge_pool.qualifying_tiers", self.bridge_pool.qualifying_tiers)
        self._offered("listing_qualifying_tiers", self.listing_qualifying_tiers)
        if self.listing_rewards and not self.listing_qualifying_tiers:
            raise ValueError("listing_qualifying_tiers: listing rewards need at least one qualifying tier")
        budget = self.listing_reward_budget_per_year
        if budget is not None and budget < max(self.listing_rewards.values(), default=budget):
            raise ValueError("listing_reward_budget_per_year: smaller than one reward it is meant to pay")
        self._offered("plan", sorted({line.tier for line in self.plan}))
        if len({(line.year, line.tier) for line in self.plan}) != len(self.plan):
            raise ValueError("plan: a (year, tier) is planned twice")
        for group in self.notifications.groups:
            if group != self.escalation_group:
                raise ValueError(
                    f"notifications.groups: {group!r} is not this program's group ({self.escalation_group!r})"
                )
        return self

    def _judged_by_its_standard(self, index: int, batch: Batch) -> None:
        """A batch maps to the ruleset in force when it opens, and that ruleset's standard is the national
        one in force that day: a batch opening after a standard was replaced is not judged by the old one."""
        opens_on = batch.opens_on
        choice = self._choice_on(opens_on)
        if choice is None:
            raise ValueError(f"batches[{index}].opens_on: no ruleset is in force on {opens_on}")
        standard = STANDARDS[choice.version]
        if standard.in_force(opens_on):
            return
        current = [version for version, other in STANDARDS.items() if other.in_force(opens_on)]
        instead = f"; add a [[rulesets]] entry for {' or '.join(current)}" if current else ""
        raise ValueError(
            f"batches[{index}].opens_on: batch {batch.key!r} opens on {opens_on} and would be judged by "
            f"{choice.version}, whose standard is not in force that day{instead}"
        )

    def _offered(self, path: str, tiers: list[TierKey]) -> None:
        missing = [tier for tier in tiers if tier not in self.tiers]
        if missing:
            raise ValueError(f"{path}: {', '.join(missing)} not among this program's tiers")

    def _choice_on(self, on: date) -> RulesetChoice | None:
        in_force = [choice for choice in self.rulesets if choice.effective_from <= on]
        return in_force[-1] if in_force else None

    def ruleset_for(self, on: date) -> str:
        """The ruleset version in force on ``on``."""
        choice = self._choice_on(on)
        if choice is None:
            raise NoRulesetInForce(f"program {self.key!r} has no ruleset in force on {on}")
        return choice.version

    def batch(self, key: str) -> Batch:
        for batch in self.batches:
            if batch.key == key:
                return batch
        raise KeyError(f"program {self.key!r} has no batch {key!r}")

    def ruleset_for_batch(self, key: str) -> str:
        """The ruleset an application in batch ``key`` is judged by: the one in force when it opens."""
        return self.ruleset_for(self.batch(key).opens_on)

    def open_batches(self, on: date) -> list[Batch]:
        """Batches whose filing window includes ``on``."""
        return [batch for batch in self.batches if batch.is_open(on)]


# -- loading ----------------------------------------------------------------------------------------


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (key)"
        else:
            path += f".{part}" if path else part
    return path


def _describe(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    where = _location(tuple(error["loc"]))
    return f"{where}: {message}" if where else message


def load_program_file(path: Path) -> Program:
    """Read and validate one program file; raises :class:`ProgramFileError`."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ProgramFileError(f"{path}: TOML syntax error: {error}") from None
    except UnicodeDecodeError as error:
        raise ProgramFileError(f"{path}: not UTF-8 text: {error}") from None
    except OSError as error:
        raise ProgramFileError(f"{path}: cannot read: {error.strerror}") from None
    try:
        return Program.model_validate(data)
    except ValidationError as error:
        details = "; ".join(_describe(item) for item in error.errors(include_url=False))
        raise ProgramFileError(f"{path}: {details}") from None


def load_programs(folder: Path) -> dict[str, Program]:
    """Every ``*.toml`` program in ``folder`` by key, files read in name order.

    Raises :class:`ProgramFileError` for an unreadable or malformed file, a key used twice, or a folder
    without program files.
    """
    if not folder.is_dir():
        raise ProgramFileError(f"{folder}: not a directory")
    files = sorted(folder.glob("*.toml"))
    if not files:
        raise ProgramFileError(f"{folder}: no *.toml program files")
    programs: dict[str, Program] = {}
    sources: dict[str, Path] = {}
    for path in files:
        program = load_program_file(path)
        if program.key in programs:
            first = sources[program.key]
            raise ProgramFileError(f"{path}: key: duplicate program key {program.key!r} (also in {first})")
        programs[program.key] = program
        sources[program.key] = path
    return programs


# -- managed versions (services/catalog) --------------------------------------------------------------


def document_problems(error: ValidationError) -> list[tuple[str, str]]:
    """A program document's validation errors as (field path, message), worded as a file's are: the API's
    422 for a program version (services/catalog) and a file's one-line error say the same thing."""
    return [
        (_location(tuple(item["loc"])), str(item["msg"]).removeprefix("Value error, "))
        for item in error.errors(include_url=False)
    ]


class ProgramVersionNotLoaded(RuntimeError):
    """A version this process has not read yet (another process created it under a second ago): retryable."""


class ProgramBook(dict[str, Program]):
    """The programs in force by key - a plain dict to every reader, so the hot paths read it as before - with
    each one's version number and every version known, so that an application keeps being read by the version
    that judged it (``program_at``). Built by services/catalog/registry.py, replaced whole on a change."""

    def __init__(
        self,
        current: Mapping[str, Program],
        *,
        numbers: Mapping[str, int] | None = None,
        versions: Mapping[tuple[str, int], Program] | None = None,
        revision: tuple[int, int] = (0, 0),
    ) -> None:
        super().__init__(current)
        self.numbers: dict[str, int] = dict(numbers or {})
        self.versions: dict[tuple[str, int], Program] = dict(versions or {})
        self.revision = revision  # the registry's counter when it was read

    def at(self, key: str, version: int) -> Program:
        found = self.versions.get((key, version))
        if found is None:
            raise ProgramVersionNotLoaded(f"program {key!r} version {version} is not loaded yet")
        return found


def program_version(programs: Mapping[str, Program], key: str) -> int | None:
    """The version number of ``key`` in force, or None for programs read straight from files."""
    return programs.numbers.get(key) if isinstance(programs, ProgramBook) else None


def program_at(programs: Mapping[str, Program], key: str, version: int | None) -> Program:
    """The program ``key`` as its version ``version`` says (what judged an application); the one in force
    for None (rows written before versions were recorded) or programs read straight from files."""
    if version is None or not isinstance(programs, ProgramBook):
        return programs[key]
    return programs.at(key, version)
