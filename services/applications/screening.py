"""Automated screening of declared figures against a versioned criteria ruleset.

``screen()`` is pure and deterministic: the same tier, ruleset and figures always give the same result,
rule by rule. Every application first passes the eligibility gate (each compliance declaration), then
the tier's criteria from the domain reference (``../shared/DOMAIN.md``). Each rule reports the
declared value, the threshold, the points it scored (scored indicators only) and whether it passed.

Conventions
-----------
- Shares, intensities and margins are read from the last declared year unless a rule names more years;
  growth is ``this year / last year - 1`` of main-business revenue. Growth over a base of zero is
  undefined, never infinite: a growth rule then fails (or scores 0) and its value says which year had no
  main-business revenue.
- Band edges: where higher is better a band "a-b" includes ``a`` and excludes ``b``; where lower is better
  (debt ratio) "a-b" excludes ``a`` and includes ``b``. "<= x" and ">= x" include ``x``.
- A scored indicator "passes" when it earns points; what decides are the group, total and gate rules.
- "In the last 3 years" (awards) is the 3 calendar years before the year the application's batch opens
  (``batch_year``; a 2026 batch counts 2023-2025), whatever years the figures cover; without a batch
  (a preview), the 3 declared years. See ``DeclaredMetrics.award_years``.
- ``direct_path`` names the first direct-recognition rule met, whether or not the score also passed.

Both rulesets judge ``innovative``, ``specialized_new`` and ``single_champion`` the same way: the domain
reference gives a 2026 change only for ``little_giant`` (and so ``invisible_champion``).

Choices where the domain reference is silent
--------------------------------------------
innovative
    The direct paths bypass the score. Any national or provincial S&T award counts (rank not required).

specialized_new
    Gates 1-3 (niche >= 2 years; last-year R&D >= 1m yuan and >= 3%; revenue >= 10m or 2-year new equity
    >= 20m) always apply; a direct path replaces only gate 4 (the score), as in the published standard.
    "A national award" is any national S&T award within the last 3 years. "2-year average growth" is the
    average of the last two years' main-business growth rates. The 13 indicators (100 points):

    - specialization 25: main-business share 5 (given); 2-year average growth 10 (given);
      niche years 5 (given); main product field 5 - fills a chain gap or "six foundations" 5, in a
      strategic emerging industry 3, else 0.
    - refinement 25: core business on information systems 5 (else 0); quality management 5 - a
      management-system certification 3 plus at least one developed-market product certification 2;
      net margin 10 (given); debt ratio 5 (given).
    - distinctiveness 15 (set by each province; ours): own brand 5 plus national market position 10 -
      ranked top 3 or share >= 10% scores 10, ranked top 10 or share >= 5% scores 5, else 0.
    - innovation 35: IP tied to the main product 10 - high-value Class-I 10, self-developed Class-I 8,
      Class-I 6, Class-II 2, none 0; last-year R&D 10 - the better of amount (>= 5m 10, 4-5m 8, 3-4m 6,
      2-3m 4, 1-2m 2) and intensity (>= 10% 10, 8-10% 8, 6-8% 6, 4-6% 4, 3-4% 2); R&D staff share 5 -
      >= 20% 5, 10-20% 3, 5-10% 1; R&D institution 10 - national 10, provincial 8, own or joint 4, none 0.

little_giant
    "Product certification in developed markets" is any entry in ``certifications``. An R&D institution
    at provincial or national level counts as an own institution. The direct innovation path (national
    S&T award ranked top 3 in the last 3 years, or Maker China top 50) stands in for the innovation
    rules only. In the 2026 ruleset the listed figures replace their 2022 counterparts; revenue >= 50m
    becomes its own rule outside the innovation dimension, "R&D >= 12m over 2 years and >= 3% each year"
    replaces the revenue-band rule, and every other 2022 rule (niche years, information systems,
    certification, own brand, R&D institution, chain position, the direct innovation path) stays.
    Two-year compound growth is ``sqrt(last / first) - 1`` over main-business revenue, compared exactly
    as ``last >= first * 1.05^2``; it is undefined (the rule fails) when the first year had none.

invisible_champion
    Every ``little_giant`` rule of the ruleset, plus the main product ranking first nationally
    (``market_rank == 1``). Programs may name it differently; this is the typical definition.

single_champion
    Top 3 globally uses ``global_market_rank``; ">= 10 years in the field" uses ``niche_years``;
    "the product >= 70% of revenue" uses the last year's main-business share; the little-giant route to
    the lower revenue bar needs ``"little_giant"`` in ``held_tiers`` (a recognition, not a declaration).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from services.applications.metrics import DeclaredMetrics, YearFigures
from services.programs import RULESETS, TierKey
from services.vocabulary import TIERS

__all__ = ["RULESETS", "TIERS", "RuleResult", "ScreeningResult", "TierKey", "UnknownRuleset", "screen"]


_D = Decimal
_MILLION = _D(1_000_000)
_HUNDRED = _D(100)


class UnknownRuleset(ValueError):
    """The ruleset version or the tier is not one the engine knows."""


class RuleResult(BaseModel):
    """One rule's verdict: the declared value, the threshold, the points (scored indicators) and pass/fail."""

    model_config = ConfigDict(frozen=True)

    rule: str
    description: str
    value: str
    threshold: str
    points: int | None = None
    passed: bool


class ScreeningResult(BaseModel):
    """Every rule in a fixed order, eligibility first; ``score`` only for scored tiers."""

    model_config = ConfigDict(frozen=True)

    ruleset: str
    tier: str
    passed: bool
    score: int | None = None
    direct_path: str | None = None
    rules: list[RuleResult]

    def rule(self, rule: str) -> RuleResult:
        """The result of one rule by id."""
        for result in self.rules:
            if result.rule == rule:
                return result
        raise KeyError(rule)

    @property
    def failed_rules(self) -> list[RuleResult]:
        """Rules that did not pass (including direct paths not taken)."""
        return [result for result in self.rules if not result.passed]


# -- formatting -------------------------------------------------------------------------------------


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def _pct(fraction: Decimal, *, lower_is_better: bool = False) -> str:
    """A fraction as a percentage with two decimals, rounded towards the worse side.

    Rounding towards the worse side means a shown value never sits on the wrong side of a threshold.
    """
    if fraction.is_infinite():  # only a debt ratio: liabilities without assets
        return "unbounded (no assets)"
    rounding = ROUND_CEILING if lower_is_better else ROUND_FLOOR
    return f"{(fraction * 100).quantize(_D('0.01'), rounding=rounding)}%"


def _number(value: Decimal, *, percent: bool = False) -> str:
    """``value`` as the criteria write it: no trailing zeros; with ``percent``, a fraction as a percentage."""
    return f"{(value * 100).normalize():f}%" if percent else f"{value.normalize():f}"


# -- bands ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Bands:
    """Points by band: ``edges`` run from the best band to the worst, ``rest`` scores beyond the last."""

    edges: tuple[tuple[Decimal, int], ...]
    rest: int = 0
    lower_is_better: bool = False
    scale: Decimal = _HUNDRED
    unit: str = "%"

    def points(self, value: Decimal) -> int:
        for bound, points in self.edges:
            if value <= bound if self.lower_is_better else value >= bound:
                return points
        return self.rest

    def describe(self) -> str:
        """E.g. ``>=5%: 20, 3-5%: 15, <3%: 0`` or ``<=55%: 10, 55-75%: 5, >75%: 0``."""
        bounds = [_number(bound * self.scale) for bound, _ in self.edges]
        best, worst = ("<=", ">") if self.lower_is_better else (">=", "<")
        parts = [f"{best}{bounds[0]}{self.unit}: {self.edges[0][1]}"]
        for i in range(1, len(self.edges)):
            low, high = (bounds[i - 1], bounds[i]) if self.lower_is_better else (bounds[i], bounds[i - 1])
            parts.append(f"{low}-{high}{self.unit}: {self.edges[i][1]}")
        parts.append(f"{worst}{bounds[-1]}{self.unit}: {self.rest}")
        return ", ".join(parts)


def _bands(*edges: tuple[str, int], lower: bool = False) -> _Bands:
    """Bands over fractions shown as percentages: ``_bands(("0.05", 20), ("0.03", 15))``."""
    return _Bands(tuple((_D(bound), points) for bound, points in edges), lower_is_better=lower)


# -- rule construction ------------------------------------------------------------------------------


def _rule(
    rule: str, description: str, value: str, threshold: str, passed: bool, points: int | None = None
) -> RuleResult:
    return RuleResult(
        rule=rule, description=description, value=value, threshold=threshold, points=points, passed=passed
    )


def _scored(rule: str, description: str, value: str, threshold: str, points: int) -> RuleResult:
    return _rule(rule, description, value, threshold, points > 0, points)


def _banded(rule: str, description: str, value: Decimal, bands: _Bands) -> RuleResult:
    text = _pct(value, lower_is_better=bands.lower_is_better)
    return _scored(rule, description, text, bands.describe(), bands.points(value))


def _undefined_growth(base: YearFigures) -> str:
    """The value of a growth rule whose base year had no main-business revenue: the reason it failed."""
    return (
        f"undefined: no main-business revenue in {base.year} ({_money_yuan(base.main_business_revenue)}); "
        "a growth rate needs a base above zero"
    )


def _banded_growth(
    rule: str, description: str, value: Decimal | None, bands: _Bands, base: YearFigures | None
) -> RuleResult:
    """``_banded`` over a growth rate; an undefined rate (``None``, over ``base``) scores 0 and says why."""
    if value is None:
        assert base is not None, "an undefined growth rate without its zero base"
        return _scored(rule, description, _undefined_growth(base), bands.describe(), 0)
    return _banded(rule, description, value, bands)


def _subtotal(rule: str, description: str, points: int, minimum: int, maximum: int) -> RuleResult:
    return _rule(rule, description, f"{points} of {maximum}", f">= {minimum}", points >= minimum, points)


def _at_least(
    rule: str, description: str, value: Decimal, minimum: Decimal, show: Callable[[Decimal], str]
) -> RuleResult:
    return _rule(rule, description, show(value), f">= {show(minimum)}", value >= minimum)


def _flag(rule: str, description: str, value: bool) -> RuleResult:
    return _rule(rule, description, _yes(value), "yes", value)


def _years(value: Decimal) -> str:
    return f"{value} years"


def _money_yuan(value: Decimal) -> str:
    return f"{_money(value)} yuan"


def _rank(rank: int | None) -> str:
    return "not ranked" if rank is None else f"#{rank}"


# -- eligibility ------------------------------------------------------------------------------------

_ELIGIBILITY: tuple[tuple[str, str], ...] = (
    ("no_abnormal_operations", "not on the abnormal-operations list in the last 3 years"),
    ("no_serious_dishonesty", "not on the serious-dishonesty list in the last 3 years"),
    ("no_prohibited_products", "no prohibited or phase-out products in the last 3 years"),
    ("no_major_incident", "no major safety, quality, environmental, cyber or data incident in 3 years"),
    ("no_tax_evasion", "no tax evasion in the last 3 years"),
)


def _eligibility(m: DeclaredMetrics) -> list[RuleResult]:
    return [
        _flag(f"eligibility.{field}", description, getattr(m.compliance, field))
        for field, description in _ELIGIBILITY
    ]


# -- shared indicators ------------------------------------------------------------------------------

_IpLevel = Literal["high-value Class-I", "self-developed Class-I", "Class-I", "Class-II", "none"]


def _ip_level(m: DeclaredMetrics) -> _IpLevel:
    if m.ip_high_value_class1:
        return "high-value Class-I"
    if m.ip_self_developed_class1:
        return "self-developed Class-I"
    if m.ip_class1_count >= 1:
        return "Class-I"
    if m.ip_class2_count >= 1:
        return "Class-II"
    return "none"


def _ip_rule(rule: str, m: DeclaredMetrics, points_by_level: dict[_IpLevel, int]) -> RuleResult:
    level = _ip_level(m)
    value = f"{level} (Class-I items: {m.ip_class1_count}, Class-II items: {m.ip_class2_count})"
    threshold = ", ".join(f"{name}: {points}" for name, points in points_by_level.items())
    return _scored(rule, "IP tied to the main product", value, threshold, points_by_level[level])


def _direct_award(
    m: DeclaredMetrics, batch_year: int | None, *, levels: Sequence[str], max_rank: int | None
) -> bool:
    return any(
        award.level in levels and (max_rank is None or (award.rank is not None and award.rank <= max_rank))
        for award in m.awards_within(batch_year=batch_year)
    )


def _last_3_years(m: DeclaredMetrics, batch_year: int | None) -> str:
    """E.g. ``the last 3 years (2023-2025)``: the award window, named in each award rule."""
    years = m.award_years(batch_year)
    return f"the last 3 years ({years[0]}-{years[-1]})"


def _awards_text(m: DeclaredMetrics, batch_year: int | None) -> str:
    awards = m.awards_within(batch_year=batch_year)
    if not awards:
        return f"none in {_last_3_years(m, batch_year)}"
    return ", ".join(
        f"{award.level} {award.year}" + ("" if award.rank is None else f" (rank {award.rank})")
        for award in awards
    )


def _first_direct(rules: Sequence[RuleResult]) -> str | None:
    return next((rule.rule for rule in rules if rule.passed), None)


# -- innovative -------------------------------------------------------------------------------------

_INNOVATIVE_IP: dict[_IpLevel, int] = {
    "high-value Class-I": 20,
    "self-developed Class-I": 15,
    "Class-I": 10,
    "Class-II": 5,
    "none": 0,
}
_INNOVATIVE_RD = _bands(("0.05", 20), ("0.03", 15), ("0.02", 10), ("0.01", 5))
_INNOVATIVE_GROWTH = _bands(("0.15", 20), ("0.10", 15), ("0.05", 10), ("0", 5))
_INNOVATIVE_DEBT = _bands(("0.55", 10), ("0.75", 5), lower=True)
_INNOVATIVE_SHARE = _bands(("0.70", 20), ("0.60", 15), ("0.55", 10), ("0.50", 5))


@dataclass(frozen=True, slots=True)
class _Outcome:
    rules: list[RuleResult]
    passed: bool
    score: int | None = None
    direct_path: str | None = None


def _innovative(m: DeclaredMetrics, batch_year: int | None) -> _Outcome:
    ip = _ip_rule("innovative.ip", m, _INNOVATIVE_IP)
    rd = _banded(
        "innovative.rd_intensity", "R&D expense / revenue, last year", m.rd_intensity(), _INNOVATIVE_RD
    )
    growth = _banded_growth(
        "innovative.main_business_growth",
        "main-business revenue growth, last year",
        m.main_growth(),
        _INNOVATIVE_GROWTH,
        m.prior,
    )
    debt = _banded("innovative.debt_ratio", "liabilities / assets, last year", m.debt_ratio, _INNOVATIVE_DEBT)
    emerging = _scored(
        "innovative.strategic_emerging_industry",
        "main product in a strategic emerging industry",
        _yes(m.strategic_emerging_industry),
        "yes: 10, other: 5",
        10 if m.strategic_emerging_industry else 5,
    )
    share = _banded(
        "innovative.main_business_share",
        "main-business revenue / revenue, last year",
        m.main_business_share,
        _INNOVATIVE_SHARE,
    )

    def points(*rules: RuleResult) -> int:
        return sum(rule.points or 0 for rule in rules)

    innovation = _subtotal("innovative.innovation", "innovation group", points(ip, rd), 20, 40)
    growth_group = _subtotal("innovative.growth", "growth group", points(growth, debt), 15, 30)
    specialization = _subtotal(
        "innovative.specialization", "specialization group", points(emerging, share), 15, 30
    )
    score = points(ip, rd, growth, debt, emerging, share)
    total = _subtotal("innovative.total", "total score", score, 60, 100)
    by_score = all(rule.passed for rule in (innovation, growth_group, specialization, total))

    direct = [
        _rule(
            "innovative.direct.award",
            f"national or provincial S&T award in {_last_3_years(m, batch_year)}",
            _awards_text(m, batch_year),
            "at least one",
            _direct_award(m, batch_year, levels=("national", "provincial"), max_rank=None),
        ),
        _flag(
            "innovative.direct.high_tech_enterprise",
            "valid high-tech enterprise title",
            m.high_tech_enterprise,
        ),
        _rule(
            "innovative.direct.rd_institution",
            "R&D institution at provincial or national level",
            m.rd_institution,
            "provincial or national",
            m.rd_institution in ("provincial", "national"),
        ),
        _at_least(
            "innovative.direct.new_equity",
            "new equity from qualified investors, last 3 years",
            m.new_equity_3y,
            5 * _MILLION,
            _money_yuan,
        ),
    ]
    direct_path = _first_direct(direct)
    rules = [ip, rd, growth, debt, emerging, share, innovation, growth_group, specialization, total, *direct]
    return _Outcome(rules, by_score or direct_path is not None, score, direct_path)


# -- specialized_new --------------------------------------------------------------------------------

_SRDI_SHARE = _bands(("0.80", 5), ("0.70", 3), ("0.60", 1))
_SRDI_GROWTH = _bands(("0.10", 10), ("0.08", 8), ("0.06", 6), ("0.04", 4), ("0", 2))
_SRDI_MARGIN = _bands(("0.10", 10), ("0.08", 8), ("0.06", 6), ("0.04", 4), ("0.02", 2))
_SRDI_DEBT = _bands(("0.50", 5), ("0.60", 3), ("0.70", 1), lower=True)
_SRDI_IP: dict[_IpLevel, int] = {
    "high-value Class-I": 10,
    "self-developed Class-I": 8,
    "Class-I": 6,
    "Class-II": 2,
    "none": 0,
}
_SRDI_RD_AMOUNT = _Bands(
    tuple(
        (_D(millions) * _MILLION, points) for millions, points in ((5, 10), (4, 8), (3, 6), (2, 4), (1, 2))
    ),
    scale=1 / _MILLION,
    unit="m",
)
_SRDI_RD_INTENSITY = _bands(("0.10", 10), ("0.08", 8), ("0.06", 6), ("0.04", 4), ("0.03", 2))
_SRDI_RD_STAFF = _bands(("0.20", 5), ("0.10", 3), ("0.05", 1))
_SRDI_INSTITUTION = {"national": 10, "provincial": 8, "own": 4, "joint": 4, "none": 0}


def _srdi_distinctiveness(m: DeclaredMetrics) -> RuleResult:
    share = m.market_share_pct
    rank = m.market_rank
    if (rank is not None and rank <= 3) or (share is not None and share >= 10):
        position = 10
    elif (rank is not None and rank <= 10) or (share is not None and share >= 5):
        position = 5
    else:
        position = 0
    brand = 5 if m.own_brand else 0
    value = (
        f"own brand: {_yes(m.own_brand)}; national rank: {_rank(rank)}; "
        f"national share: {'not declared' if share is None else f'{share}%'}"
    )
    threshold = "own brand: 5; top 3 or share >=10%: 10, top 10 or share >=5%: 5, else 0"
    return _scored(
        "specialized_new.score.distinctiveness",
        "distinctiveness (own brand, national market position)",
        value,
        threshold,
        brand + position,
    )


def _specialized_new(m: DeclaredMetrics, batch_year: int | None) -> _Outcome:
    last = m.last
    gates = [
        _at_least(
            "specialized_new.niche_years", "years in the niche market", _D(m.niche_years), _D(2), _years
        ),
        _at_least(
            "specialized_new.rd_expense", "R&D expense, last year", last.rd_expense, _MILLION, _money_yuan
        ),
        _rule(
            "specialized_new.rd_intensity",
            "R&D expense / revenue, last year",
            _pct(last.rd_intensity),
            ">= 3%",
            last.rd_intensity >= _D("0.03"),
        ),
        _rule(
            "specialized_new.scale",
            "revenue last year, or new equity over the last 2 years",
            f"revenue {_money_yuan(last.revenue)}; new equity {_money_yuan(m.new_equity_2y)}",
            f"revenue >= {_money_yuan(10 * _MILLION)} or new equity >= {_money_yuan(20 * _MILLION)}",
            last.revenue >= 10 * _MILLION or m.new_equity_2y >= 20 * _MILLION,
        ),
    ]

    niche_points = min(5, m.niche_years // 2)
    if m.fills_chain_gap_or_six_foundations:
        field_points, field_value = 5, "fills a chain gap or a six-foundations field"
    elif m.strategic_emerging_industry:
        field_points, field_value = 3, "strategic emerging industry"
    else:
        field_points, field_value = 0, "other"
    quality_points = (3 if m.management_certification else 0) + (2 if m.certifications else 0)
    rd_points = max(_SRDI_RD_AMOUNT.points(last.rd_expense), _SRDI_RD_INTENSITY.points(last.rd_intensity))

    indicators = [
        # specialization 25
        _banded(
            "specialized_new.score.main_business_share",
            "main-business revenue / revenue, last year",
            m.main_business_share,
            _SRDI_SHARE,
        ),
        _banded_growth(
            "specialized_new.score.main_business_growth",
            "average main-business growth, last 2 years",
            m.main_growth_average_2y,
            _SRDI_GROWTH,
            m.zero_main_business_base,
        ),
        _scored(
            "specialized_new.score.niche_years",
            "years in the niche market",
            f"{m.niche_years} years",
            "1 per 2 full years, at most 5",
            niche_points,
        ),
        _scored(
            "specialized_new.score.product_field",
            "field of the main product",
            field_value,
            "chain gap or six foundations: 5, strategic emerging industry: 3, other: 0",
            field_points,
        ),
        # refinement 25
        _scored(
            "specialized_new.score.information_systems",
            "core business run on information systems",
            _yes(m.core_business_on_information_systems),
            "yes: 5, no: 0",
            5 if m.core_business_on_information_systems else 0,
        ),
        _scored(
            "specialized_new.score.quality_management",
            "quality management",
            f"management certification: {_yes(m.management_certification)}; "
            f"product certifications: {len(m.certifications)}",
            "management certification: 3, any developed-market product certification: 2",
            quality_points,
        ),
        _banded(
            "specialized_new.score.net_margin", "net profit / revenue, last year", m.net_margin, _SRDI_MARGIN
        ),
        _banded(
            "specialized_new.score.debt_ratio", "liabilities / assets, last year", m.debt_ratio, _SRDI_DEBT
        ),
        # distinctiveness 15
        _srdi_distinctiveness(m),
        # innovation 35
        _ip_rule("specialized_new.score.ip", m, _SRDI_IP),
        _scored(
            "specialized_new.score.rd",
            "R&D expense, last year (the better of amount and intensity)",
            f"{_money_yuan(last.rd_expense)}; {_pct(last.rd_intensity)} of revenue",
            f"amount {_SRDI_RD_AMOUNT.describe()}; intensity {_SRDI_RD_INTENSITY.describe()}",
            rd_points,
        ),
        _banded(
            "specialized_new.score.rd_staff_share",
            "R&D staff / all staff",
            m.rd_staff_share_pct / 100,
            _SRDI_RD_STAFF,
        ),
        _scored(
            "specialized_new.score.rd_institution",
            "level of the R&D institution",
            m.rd_institution,
            "national: 10, provincial: 8, own or joint: 4, none: 0",
            _SRDI_INSTITUTION[m.rd_institution],
        ),
    ]
    score = sum(rule.points or 0 for rule in indicators)
    total = _subtotal("specialized_new.score", "total score", score, 60, 100)

    direct = [
        _rule(
            "specialized_new.direct.national_award",
            f"national S&T award in {_last_3_years(m, batch_year)}",
            _awards_text(m, batch_year),
            "at least one national award",
            _direct_award(m, batch_year, levels=("national",), max_rank=None),
        ),
        _at_least(
            "specialized_new.direct.rd_expense_2y_average",
            "average R&D expense, last 2 years",
            m.rd_expense_2y / 2,
            10 * _MILLION,
            _money_yuan,
        ),
        _at_least(
            "specialized_new.direct.new_equity",
            "new equity from qualified investors, last 2 years",
            m.new_equity_2y,
            60 * _MILLION,
            _money_yuan,
        ),
        _rule(
            "specialized_new.direct.maker_china",
            "national place in the Maker China contest",
            _rank(m.maker_china_rank),
            "top 500",
            m.maker_china_rank is not None and m.maker_china_rank <= 500,
        ),
    ]
    direct_path = _first_direct(direct)
    passed = all(gate.passed for gate in gates) and (total.passed or direct_path is not None)
    return _Outcome([*gates, *indicators, total, *direct], passed, score, direct_path)


# -- little_giant -----------------------------------------------------------------------------------


def _little_giant(m: DeclaredMetrics, ruleset: str, batch_year: int | None) -> _Outcome:
    last, prior, first = m.last, m.prior, m.first
    v2026 = ruleset == "national-2026"
    rules: list[RuleResult] = []
    innovation: list[RuleResult] = []

    if v2026:
        rules.append(
            _at_least("little_giant.revenue", "revenue, last year", last.revenue, 50 * _MILLION, _money_yuan)
        )
    # specialization
    rules.append(
        _at_least("little_giant.niche_years", "years in the niche market", _D(m.niche_years), _D(3), _years)
    )
    share_min = _D("0.90") if v2026 else _D("0.70")
    rules.append(
        _rule(
            "little_giant.main_business_share",
            "main-business revenue / revenue, last year",
            _pct(m.main_business_share),
            f">= {_number(share_min, percent=True)}",
            m.main_business_share >= share_min,
        )
    )
    if v2026:
        description = f"compound main-business growth, {first.year}-{last.year}"
        if first.main_business_revenue > 0:
            compound = (last.main_business_revenue / first.main_business_revenue).sqrt() - 1
            grew = last.main_business_revenue >= first.main_business_revenue * _D("1.1025")
            rules.append(
                _rule("little_giant.main_business_growth", description, _pct(compound), ">= 5% a year", grew)
            )
        else:
            rules.append(
                _rule(
                    "little_giant.main_business_growth",
                    description,
                    _undefined_growth(first),
                    ">= 5% a year",
                    False,
                )
            )
    else:
        average = m.main_growth_average_2y
        base = m.zero_main_business_base
        rules.append(
            _rule(
                "little_giant.main_business_growth",
                "average main-business growth, last 2 years",
                _pct(average) if average is not None else _undefined_growth(base or first),
                ">= 5%",
                average is not None and average >= _D("0.05"),
            )
        )
    # refinement
    rules.append(
        _flag(
            "little_giant.information_systems",
            "at least one core business run on information systems",
            m.core_business_on_information_systems,
        )
    )
    rules.append(
        _rule(
            "little_giant.certification",
            "management-system certification, or product certification in developed markets",
            f"management certification: {_yes(m.management_certification)}; "
            f"product certifications: {len(m.certifications)}",
            "either",
            m.management_certification or bool(m.certifications),
        )
    )
    debt_max = _D("0.75") if v2026 else _D("0.70")
    rules.append(
        _rule(
            "little_giant.debt_ratio",
            "liabilities / assets, last year",
            _pct(m.debt_ratio, lower_is_better=True),
            f"<= {_number(debt_max, percent=True)}",
            m.debt_ratio <= debt_max,
        )
    )
    # distinctiveness
    share = m.market_share_pct
    share_text = "not declared" if share is None else f"{share}%"
    if v2026:
        top3 = m.market_rank is not None and m.market_rank <= 3
        rules.append(
            _rule(
                "little_giant.market_position",
                "national niche market share or rank",
                f"share {share_text}; rank {_rank(m.market_rank)}",
                ">= 10% or top 3",
                (share is not None and share >= 10) or top3,
            )
        )
    else:
        rules.append(
            _rule(
                "little_giant.market_share",
                "national niche market share",
                share_text,
                ">= 10%",
                share is not None and share >= 10,
            )
        )
    rules.append(_flag("little_giant.own_brand", "own brand", m.own_brand))
    # innovation
    if v2026:
        innovation.append(
            _at_least(
                "little_giant.rd_expense_2y",
                "R&D expense, last 2 years",
                m.rd_expense_2y,
                12 * _MILLION,
                _money_yuan,
            )
        )
        innovation.append(
            _rule(
                "little_giant.rd_intensity",
                "R&D expense / revenue in each of the last 2 years",
                f"{prior.year}: {_pct(prior.rd_intensity)}; {last.year}: {_pct(last.rd_intensity)}",
                ">= 3% each year",
                min(prior.rd_intensity, last.rd_intensity) >= _D("0.03"),
            )
        )
    else:
        innovation.append(_rd_by_revenue_band(m))
    innovation.append(
        _rule(
            "little_giant.rd_institution",
            "own or joint R&D institution",
            m.rd_institution,
            "own, joint, provincial or national",
            m.rd_institution != "none",
        )
    )
    ip_min = 4 if v2026 else 2
    innovation.append(
        _at_least(
            "little_giant.ip_class1",
            "Class-I IP items tied to the main product",
            _D(m.ip_class1_count),
            _D(ip_min),
            str,
        )
    )
    direct = _rule(
        "little_giant.direct.innovation",
        f"national S&T award (top 3) in {_last_3_years(m, batch_year)}, or Maker China national top 50 "
        "(innovation only)",
        f"awards: {_awards_text(m, batch_year)}; Maker China: {_rank(m.maker_china_rank)}",
        "either",
        _direct_award(m, batch_year, levels=("national",), max_rank=3)
        or (m.maker_china_rank is not None and m.maker_china_rank <= 50),
    )
    chain = _flag(
        "little_giant.chain_position",
        "fills a key industrial-chain gap or makes six-foundations products",
        m.fills_chain_gap_or_six_foundations,
    )
    innovation_met = direct.passed or all(rule.passed for rule in innovation)
    passed = all(rule.passed for rule in (*rules, chain)) and innovation_met
    return _Outcome(
        [*rules, *innovation, direct, chain], passed, None, direct.rule if direct.passed else None
    )


def _rd_by_revenue_band(m: DeclaredMetrics) -> RuleResult:
    last, prior = m.last, m.prior
    revenue = last.revenue
    intensities = f"{prior.year}: {_pct(prior.rd_intensity)}; {last.year}: {_pct(last.rd_intensity)}"
    if revenue >= 100 * _MILLION:
        band, need = ">= 100m", _D("0.03")
    elif revenue >= 50 * _MILLION:
        band, need = "50-100m", _D("0.06")
    else:
        band, need = "< 50m", None
    if need is not None:
        value = f"revenue {_money_yuan(revenue)} (band {band}); R&D / revenue {intensities}"
        threshold = f"band {band}: R&D / revenue >= {_number(need, percent=True)} in each of the last 2 years"
        passed = min(prior.rd_intensity, last.rd_intensity) >= need
    else:
        value = (
            f"revenue {_money_yuan(revenue)} (band {band}); new equity 2y {_money_yuan(m.new_equity_2y)}; "
            f"R&D 2y {_money_yuan(m.rd_expense_2y)}; R&D staff {m.rd_staff_share_pct}%"
        )
        threshold = (
            f"band {band}: new equity 2y >= {_money_yuan(80 * _MILLION)}, "
            f"R&D 2y >= {_money_yuan(30 * _MILLION)}, R&D staff >= 50%"
        )
        passed = (
            m.new_equity_2y >= 80 * _MILLION
            and m.rd_expense_2y >= 30 * _MILLION
            and m.rd_staff_share_pct >= 50
        )
    return _rule(
        "little_giant.rd_intensity",
        "R&D by last year's revenue band",
        value,
        threshold,
        passed,
    )


# -- invisible_champion, single_champion ------------------------------------------------------------


def _invisible_champion(m: DeclaredMetrics, ruleset: str, batch_year: int | None) -> _Outcome:
    giant = _little_giant(m, ruleset, batch_year)
    first = _rule(
        "invisible_champion.national_rank",
        "main product ranks first nationally",
        _rank(m.market_rank),
        "#1",
        m.market_rank == 1,
    )
    return _Outcome([*giant.rules, first], giant.passed and first.passed, None, giant.direct_path)


def _single_champion(m: DeclaredMetrics, held_tiers: Collection[str]) -> _Outcome:
    little_giant = "little_giant" in held_tiers
    revenue = m.last.revenue
    rules = [
        _rule(
            "single_champion.global_rank",
            "global market rank of the main product",
            _rank(m.global_market_rank),
            "top 3",
            m.global_market_rank is not None and m.global_market_rank <= 3,
        ),
        _at_least("single_champion.years_in_field", "years in the field", _D(m.niche_years), _D(10), _years),
        _rule(
            "single_champion.revenue",
            "revenue, last year",
            f"{_money_yuan(revenue)}; holds little giant: {_yes(little_giant)}",
            f">= {_money_yuan(400 * _MILLION)}, or >= {_money_yuan(200 * _MILLION)} for a little giant",
            revenue >= 400 * _MILLION or (little_giant and revenue >= 200 * _MILLION),
        ),
        _rule(
            "single_champion.main_product_share",
            "main product revenue / revenue, last year",
            _pct(m.main_business_share),
            ">= 70%",
            m.main_business_share >= _D("0.70"),
        ),
    ]
    return _Outcome(rules, all(rule.passed for rule in rules))


# -- entry point ------------------------------------------------------------------------------------


def screen(
    *,
    tier: str,
    ruleset: str,
    metrics: DeclaredMetrics,
    held_tiers: Collection[str] = (),
    batch_year: int | None = None,
) -> ScreeningResult:
    """Screen declared figures for ``tier`` under ``ruleset`` (the ruleset of the application's batch:
    ``Program.ruleset_for_batch``).

    ``held_tiers`` are the tiers the enterprise holds now, by valid recognitions (only the single-champion
    revenue rule reads it). ``batch_year`` is the year the application's batch opens: awards count in the
    3 calendar years before it (without it, in the 3 declared years). Raises :class:`UnknownRuleset` for a
    ruleset or tier the engine does not know.
    """
    if ruleset not in RULESETS:
        raise UnknownRuleset(f"unknown ruleset {ruleset!r}; known: {', '.join(sorted(RULESETS))}")
    eligibility = _eligibility(metrics)
    if tier == "innovative":
        outcome = _innovative(metrics, batch_year)
    elif tier == "specialized_new":
        outcome = _specialized_new(metrics, batch_year)
    elif tier == "little_giant":
        outcome = _little_giant(metrics, ruleset, batch_year)
    elif tier == "invisible_champion":
        outcome = _invisible_champion(metrics, ruleset, batch_year)
    elif tier == "single_champion":
        outcome = _single_champion(metrics, held_tiers)
    else:
        raise UnknownRuleset(f"unknown tier {tier!r}; known: {', '.join(TIERS)}")
    eligible = all(rule.passed for rule in eligibility)
    return ScreeningResult(
        ruleset=ruleset,
        tier=tier,
        passed=eligible and outcome.passed,
        score=outcome.score,
        direct_path=outcome.direct_path,
        rules=[*eligibility, *outcome.rules],
    )
