"""The figures an enterprise declares when it applies, and the ratios the screening rules read.

Money is yuan with at most two decimals, given as a string, an integer or a ``Decimal`` - never a
float, but for a whole one (``2.0``, an integer to JSON). Ratios are exact ``Decimal`` fractions (``0.03``
is 3%). Where a ratio's denominator is zero:

- R&D intensity, main-business share and net margin are ``0`` when revenue is ``0``;
- the debt ratio is ``0`` when assets and liabilities are both ``0`` and ``Infinity`` when there are
  liabilities but no assets (debts without assets are worse than any finite debt ratio);
- growth over a base of ``0`` (or less) is undefined, never infinite: ``growth`` returns ``None`` and the
  screening rules that read it fail (or score ``0``) and say why.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

__all__ = [
    "INFINITY",
    "Award",
    "ComplianceDeclarations",
    "DeclaredMetrics",
    "RdInstitution",
    "YearFigures",
    "changed_figures",
    "growth",
    "ratio",
]

INFINITY = Decimal("Infinity")
_ZERO = Decimal(0)


_EXACT_FLOAT = 2**53  # every whole number up to this magnitude is exactly a float


def _no_float(value: Any) -> Any:
    """A float is refused, except a whole one a float spells exactly (``2.0`` is the integer ``2`` in JSON
    and in the schema's `integer`)."""
    if isinstance(value, bool):
        raise ValueError("a yes/no value is not an amount")
    if isinstance(value, float):
        if value.is_integer() and abs(value) <= _EXACT_FLOAT:
            return int(value)
        raise ValueError('give exact amounts as strings or integers (e.g. "1250000.50"), not floats')
    return value


_WHOLE = 10**16 - 1  # max_digits=18 with decimal_places=2 leaves 16 digits before the point


def _exact(*, pattern: str, minimum: int, maximum: int, description: str) -> WithJsonSchema:
    """The JSON Schema of an exact amount: a decimal string or an integer, never a float."""
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": pattern},
                {"type": "integer", "minimum": minimum, "maximum": maximum},
            ],
            "description": description,
        }
    )


Amount = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(ge=0, max_digits=18, decimal_places=2),
    _exact(
        pattern=r"^[0-9]{1,16}(\.[0-9]{1,2})?$",
        minimum=0,
        maximum=_WHOLE,
        description='yuan, at most two decimals, as a string ("1250000.50") or an integer; never a float',
    ),
]
SignedAmount = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(max_digits=18, decimal_places=2),
    _exact(
        pattern=r"^-?[0-9]{1,16}(\.[0-9]{1,2})?$",
        minimum=-_WHOLE,
        maximum=_WHOLE,
        description="yuan, may be negative, at most two decimals; never a float",
    ),
]
Percent = Annotated[
    Decimal,
    BeforeValidator(_no_float),
    Field(ge=0, le=100, max_digits=5, decimal_places=2),
    _exact(
        pattern=r"^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$",
        minimum=0,
        maximum=100,
        description='a percentage from 0 to 100, at most two decimals ("15.00"); never a float',
    ),
]
Year = Annotated[int, Field(ge=1900, le=2200)]
Rank = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]

RdInstitution = Literal["none", "own", "joint", "provincial", "national"]


def ratio(numerator: Decimal, denominator: Decimal) -> Decimal:
    """``numerator / denominator``, or ``0`` when the denominator is ``0``."""
    if denominator == 0:
        return _ZERO
    return numerator / denominator


def growth(current: Decimal, previous: Decimal) -> Decimal | None:
    """``current / previous - 1``, or ``None`` (undefined) when ``previous`` is ``0`` or less: a rate over a
    base of nothing is no rate at all, however much the figure grew."""
    if previous <= 0:
        return None
    return current / previous - 1


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class YearFigures(_Frozen):
    """One financial year's figures, in yuan."""

    year: Year
    revenue: Amount
    main_business_revenue: Amount
    rd_expense: Amount
    net_profit: SignedAmount
    assets: Amount
    liabilities: Amount

    @model_validator(mode="after")
    def _main_within_revenue(self) -> YearFigures:
        if self.main_business_revenue > self.revenue:
            raise ValueError(
                f"main_business_revenue ({self.main_business_revenue}) exceeds revenue ({self.revenue})"
            )
        return self

    @property
    def rd_intensity(self) -> Decimal:
        """R&D expense / revenue."""
        return ratio(self.rd_expense, self.revenue)

    @property
    def main_business_share(self) -> Decimal:
        """Main-business revenue / revenue."""
        return ratio(self.main_business_revenue, self.revenue)

    @property
    def net_margin(self) -> Decimal:
        """Net profit / revenue."""
        return ratio(self.net_profit, self.revenue)

    @property
    def debt_ratio(self) -> Decimal:
        """Liabilities / assets (``Infinity`` for debts without assets)."""
        if self.assets == 0:
            return INFINITY if self.liabilities > 0 else _ZERO
        return self.liabilities / self.assets


class Award(_Frozen):
    """A science-and-technology award; ``rank`` is the enterprise's place among the winning units."""

    level: Literal["national", "provincial"]
    rank: Rank | None = None
    year: Year


class ComplianceDeclarations(_Frozen):
    """The eligibility declarations, each covering the last three years; ``True`` means "clean"."""

    no_abnormal_operations: bool
    no_serious_dishonesty: bool
    no_prohibited_products: bool
    no_major_incident: bool
    no_tax_evasion: bool


class DeclaredMetrics(_Frozen):
    """Everything the screening rules read. ``years`` holds exactly the last three financial years."""

    years: list[YearFigures] = Field(
        json_schema_extra={"minItems": 3, "maxItems": 3},
        description="the last three financial years, consecutive",
    )
    niche_years: Count
    market_share_pct: Percent | None = None
    market_rank: Rank | None = Field(default=None, description="national rank of the main product")
    global_market_rank: Rank | None = Field(default=None, description="global rank of the main product")
    ip_class1_count: Count
    ip_class2_count: Count
    ip_high_value_class1: bool
    ip_self_developed_class1: bool
    rd_staff_share_pct: Percent
    rd_institution: RdInstitution
    own_brand: bool
    management_certification: bool
    core_business_on_information_systems: bool
    strategic_emerging_industry: bool
    fills_chain_gap_or_six_foundations: bool
    certifications: list[str] = Field(
        default_factory=list, description="product certifications recognised in developed markets"
    )
    awards: list[Award] = Field(default_factory=list)
    maker_china_rank: Rank | None = None
    high_tech_enterprise: bool
    new_equity_2y: Amount
    new_equity_3y: Amount
    compliance: ComplianceDeclarations

    @field_validator("years")
    @classmethod
    def _three_consecutive_years(cls, years: list[YearFigures]) -> list[YearFigures]:
        if len(years) != 3:
            raise ValueError(f"exactly 3 financial years are required, got {len(years)}")
        ordered = sorted(years, key=lambda figures: figures.year)
        numbers = [figures.year for figures in ordered]
        if numbers != list(range(numbers[0], numbers[0] + 3)):
            raise ValueError(f"the 3 years must be consecutive, got {numbers}")
        return ordered

    @model_validator(mode="after")
    def _consistent(self) -> DeclaredMetrics:
        if (self.ip_high_value_class1 or self.ip_self_developed_class1) and self.ip_class1_count < 1:
            raise ValueError("a high-value or self-developed Class-I IP item needs ip_class1_count >= 1")
        if self.new_equity_3y < self.new_equity_2y:
            raise ValueError("new_equity_3y includes the last 2 years, so it cannot be below new_equity_2y")
        return self

    @property
    def first(self) -> YearFigures:
        """The earliest of the three years."""
        return self.years[0]

    @property
    def prior(self) -> YearFigures:
        """The year before the last."""
        return self.years[1]

    @property
    def last(self) -> YearFigures:
        """The last (most recent) financial year."""
        return self.years[2]

    def year(self, year: int) -> YearFigures:
        """The figures of one declared year."""
        for figures in self.years:
            if figures.year == year:
                return figures
        raise KeyError(f"year {year} is not declared")

    def rd_intensity(self, year: int | None = None) -> Decimal:
        """R&D / revenue of ``year`` (default: the last year)."""
        return (self.last if year is None else self.year(year)).rd_intensity

    @property
    def debt_ratio(self) -> Decimal:
        """Liabilities / assets of the last year."""
        return self.last.debt_ratio

    @property
    def main_business_share(self) -> Decimal:
        """Main-business revenue / revenue of the last year."""
        return self.last.main_business_share

    @property
    def net_margin(self) -> Decimal:
        """Net profit / revenue of the last year."""
        return self.last.net_margin

    def main_growth(self, year: int | None = None) -> Decimal | None:
        """Main-business growth of ``year`` over the year before (default: the last year); ``None`` when the
        year before had no main-business revenue (see ``growth``)."""
        current = self.last if year is None else self.year(year)
        previous = self.year(current.year - 1)
        return growth(current.main_business_revenue, previous.main_business_revenue)

    @property
    def main_growth_average_2y(self) -> Decimal | None:
        """The average of the last two years' main-business growth rates (``None`` if either is undefined)."""
        prior, last = self.main_growth(self.prior.year), self.main_growth(self.last.year)
        if prior is None or last is None:
            return None
        return (prior + last) / 2

    @property
    def zero_main_business_base(self) -> YearFigures | None:
        """The earliest of the first two years without main-business revenue: the base a growth rate over
        the declared years cannot be computed from (``None`` when every base is positive)."""
        return next((figures for figures in self.years[:2] if figures.main_business_revenue <= 0), None)

    @property
    def rd_expense_2y(self) -> Decimal:
        """R&D expense summed over the last two years."""
        return self.prior.rd_expense + self.last.rd_expense

    def award_years(self, batch_year: int | None = None) -> range:
        """The years "in the last 3 years" covers for awards: the 3 calendar years before the year the batch
        opens (a 2026 batch: 2023-2025); without a batch, the 3 declared years."""
        if batch_year is None:
            return range(self.first.year, self.last.year + 1)
        return range(batch_year - 3, batch_year)

    def awards_within(
        self, *, batch_year: int | None = None, level: Literal["national", "provincial"] | None = None
    ) -> list[Award]:
        """Awards in the last 3 years (``award_years``); ``level=None`` keeps both levels."""
        window = self.award_years(batch_year)
        return [
            award for award in self.awards if award.year in window and (level is None or award.level == level)
        ]


_CENT = Decimal("0.01")


def _fields(metrics: DeclaredMetrics) -> dict[str, Any]:
    """The declaration as flat fields: ``years.2025.revenue``, ``compliance.no_tax_evasion``, ``niche_years``
    (lists - awards, certifications - as whole values), each as JSON shows it (amounts with two decimals)."""

    def shown(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value.quantize(_CENT))
        if isinstance(value, list):
            return [shown(item) for item in value]
        if isinstance(value, dict):
            return {key: shown(item) for key, item in value.items()}
        return value

    data = metrics.model_dump()
    flat: dict[str, Any] = {}
    for figures in data.pop("years"):
        year = figures.pop("year")
        flat.update({f"years.{year}.{name}": shown(value) for name, value in figures.items()})
    flat.update({f"compliance.{name}": value for name, value in data.pop("compliance").items()})
    flat.update({name: shown(value) for name, value in data.items()})
    return flat


def changed_figures(before: DeclaredMetrics, after: DeclaredMetrics) -> list[tuple[str, Any, Any]]:
    """Each field whose value differs between two declarations, as (field, old, new) in the declaration's
    order; a field only one of them has (a year no longer or newly declared) is None in the other. Amounts
    compare by value: ``"100"`` and ``"100.00"`` are the same figure."""
    old, new = _fields(before), _fields(after)
    names = list(old) + [name for name in new if name not in old]
    return [(name, old.get(name), new.get(name)) for name in names if old.get(name) != new.get(name)]
