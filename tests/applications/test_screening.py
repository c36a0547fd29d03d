import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.applications.metrics import DeclaredMetrics
from services.applications.screening import RULESETS, TIERS, ScreeningResult, UnknownRuleset, screen

M = 1_000_000

# A strong enterprise: every tier passes under both rulesets except single_champion (revenue 100m).
# Revenue is 100m every year, so "x% of revenue" is x * 1m yuan.
BASE: dict[str, Any] = {
    "years": [
        {
            "year": 2023,
            "revenue": "100000000.00",
            "main_business_revenue": "80000000.00",
            "rd_expense": "6000000.00",
            "net_profit": "10000000.00",
            "assets": "200000000.00",
            "liabilities": "80000000.00",
        },
        {
            "year": 2024,
            "revenue": "100000000.00",
            "main_business_revenue": "88000000.00",
            "rd_expense": "6000000.00",
            "net_profit": "10000000.00",
            "assets": "200000000.00",
            "liabilities": "80000000.00",
        },
        {
            "year": 2025,
            "revenue": "100000000.00",
            "main_business_revenue": "96000000.00",
            "rd_expense": "6000000.00",
            "net_profit": "10000000.00",
            "assets": "200000000.00",
            "liabilities": "80000000.00",
        },
    ],
    "niche_years": 12,
    "market_share_pct": "15",
    "market_rank": 1,
    "global_market_rank": 2,
    "ip_class1_count": 6,
    "ip_class2_count": 10,
    "ip_high_value_class1": True,
    "ip_self_developed_class1": True,
    "rd_staff_share_pct": "30",
    "rd_institution": "national",
    "own_brand": True,
    "management_certification": True,
    "core_business_on_information_systems": True,
    "strategic_emerging_industry": True,
    "fills_chain_gap_or_six_foundations": True,
    "certifications": ["CE"],
    "awards": [],
    "maker_china_rank": None,
    "high_tech_enterprise": False,
    "new_equity_2y": "0",
    "new_equity_3y": "0",
    "compliance": {
        "no_abnormal_operations": True,
        "no_serious_dishonesty": True,
        "no_prohibited_products": True,
        "no_major_incident": True,
        "no_tax_evasion": True,
    },
}

COMPLIANCE = tuple(BASE["compliance"])


def data(
    *,
    first: dict[str, Any] | None = None,
    prior: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """BASE with the given year figures and top-level fields replaced."""
    result = copy.deepcopy(BASE)
    for index, changes in enumerate((first, prior, last)):
        result["years"][index].update(changes or {})
    result.update(fields)
    return result


def metrics(**changes: Any) -> DeclaredMetrics:
    return DeclaredMetrics.model_validate(data(**changes))


def yuan(amount: float | str) -> str:
    """An exact amount in yuan from a number of millions (e.g. ``yuan("4.99")`` is 4,990,000.00)."""
    return f"{Decimal(str(amount)) * M:.2f}"


def run(
    tier: str,
    ruleset: str = "national-2022",
    held_tiers: tuple[str, ...] = (),
    batch_year: int | None = None,
    **changes: Any,
) -> ScreeningResult:
    return screen(
        tier=tier, ruleset=ruleset, metrics=metrics(**changes), held_tiers=held_tiers, batch_year=batch_year
    )


def points(tier: str, rule: str, ruleset: str = "national-2022", **changes: Any) -> int | None:
    return run(tier, ruleset, **changes).rule(rule).points


def rule_passed(tier: str, rule: str, ruleset: str = "national-2022", **changes: Any) -> bool:
    return run(tier, ruleset, **changes).rule(rule).passed


# -- the engine -------------------------------------------------------------------------------------


def test_rulesets() -> None:
    assert frozenset({"national-2022", "national-2026"}) == RULESETS


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("ruleset", sorted(RULESETS))
def test_base_enterprise(tier: str, ruleset: str) -> None:
    result = run(tier, ruleset)
    assert result.tier == tier
    assert result.ruleset == ruleset
    assert result.passed is (tier != "single_champion")
    assert [rule.rule for rule in result.rules[:5]] == [f"eligibility.{name}" for name in COMPLIANCE]
    ids = [rule.rule for rule in result.rules]
    assert len(ids) == len(set(ids))


def test_scores() -> None:
    assert run("innovative").score == 90
    assert run("specialized_new").score == 98
    assert run("little_giant").score is None


def test_unknown_ruleset() -> None:
    with pytest.raises(UnknownRuleset, match="unknown ruleset 'national-2030'"):
        screen(tier="innovative", ruleset="national-2030", metrics=metrics())


def test_unknown_tier() -> None:
    with pytest.raises(UnknownRuleset, match="unknown tier 'giant'"):
        screen(tier="giant", ruleset="national-2022", metrics=metrics())


def test_deterministic_and_json_serializable() -> None:
    first = run("specialized_new")
    assert run("specialized_new") == first
    dumped = json.loads(first.model_dump_json())
    assert dumped["score"] == 98
    assert all(
        isinstance(rule["value"], str) and isinstance(rule["threshold"], str) for rule in dumped["rules"]
    )
    assert ScreeningResult.model_validate(dumped) == first


def test_every_rule_reports_value_and_threshold() -> None:
    for tier in TIERS:
        for ruleset in RULESETS:
            for rule in run(tier, ruleset).rules:
                assert rule.value
                assert rule.threshold
                assert rule.description


# -- eligibility ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier", TIERS)
@pytest.mark.parametrize("declaration", COMPLIANCE)
def test_failing_any_declaration_fails_every_tier(tier: str, declaration: str) -> None:
    # 200m revenue and a held little-giant title: every tier passes until a declaration fails.
    figures = {"last": {"revenue": yuan(200), "main_business_revenue": yuan(192)}}
    clean = run(tier, held_tiers=("little_giant",), **figures)
    assert clean.passed
    compliance = {**BASE["compliance"], declaration: False}
    result = run(tier, held_tiers=("little_giant",), compliance=compliance, **figures)
    assert result.passed is False
    assert result.rule(f"eligibility.{declaration}").value == "no"
    assert result.failed_rules == [result.rule(f"eligibility.{declaration}"), *clean.failed_rules]
    # Everything else is still reported, unchanged.
    assert result.rules[5:] == clean.rules[5:]


def test_eligibility_failure_keeps_the_score_and_direct_path() -> None:
    compliance = {**BASE["compliance"], "no_tax_evasion": False}
    result = run("innovative", compliance=compliance, high_tech_enterprise=True)
    assert result.passed is False
    assert result.score == 90
    assert result.direct_path == "innovative.direct.high_tech_enterprise"


# -- innovative: bands ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rd_millions", "expected"),
    [
        ("5", 20),
        ("4.99", 15),
        ("3", 15),
        ("2.99", 10),
        ("2", 10),
        ("1.99", 5),
        ("1", 5),
        ("0.99", 0),
        ("0", 0),
    ],
)
def test_innovative_rd_intensity_bands(rd_millions: str, expected: int) -> None:
    assert points("innovative", "innovative.rd_intensity", last={"rd_expense": yuan(rd_millions)}) == expected


def test_innovative_rd_intensity_without_revenue_is_zero() -> None:
    last = {"revenue": "0", "main_business_revenue": "0", "rd_expense": yuan(1), "net_profit": "0"}
    result = run("innovative", last=last)
    assert result.rule("innovative.rd_intensity").points == 0
    assert result.rule("innovative.rd_intensity").value == "0.00%"


@pytest.mark.parametrize(
    ("last_main_millions", "expected"),
    [
        ("57.5", 20),  # 15%
        ("57.495", 15),  # 14.99%
        ("55", 15),  # 10%
        ("54.995", 10),  # 9.99%
        ("52.5", 10),  # 5%
        ("52.495", 5),  # 4.99%
        ("50", 5),  # 0%
        ("49.995", 0),  # -0.01%
        ("0", 0),  # -100%
    ],
)
def test_innovative_growth_bands(last_main_millions: str, expected: int) -> None:
    result = run(
        "innovative",
        prior={"main_business_revenue": yuan(50)},
        last={"main_business_revenue": yuan(last_main_millions)},
    )
    assert result.rule("innovative.main_business_growth").points == expected


@pytest.mark.parametrize("last_main", ["0", "0.01", yuan(80)])
def test_innovative_growth_from_zero_is_undefined(last_main: str) -> None:
    """A zero prior year is no base for a growth rate: 0 points (not the top band), and the value says why."""
    result = run(
        "innovative", prior={"main_business_revenue": "0"}, last={"main_business_revenue": last_main}
    )
    rule = result.rule("innovative.main_business_growth")
    assert rule.points == 0
    assert rule.passed is False
    assert rule.value == (
        "undefined: no main-business revenue in 2024 (0.00 yuan); a growth rate needs a base above zero"
    )
    assert result.rule("innovative.growth").points == 10  # the debt ratio's 10 points alone


def test_innovative_growth_from_the_smallest_base_is_defined() -> None:
    result = run(
        "innovative", prior={"main_business_revenue": "0.01"}, last={"main_business_revenue": "0.01"}
    )
    assert result.rule("innovative.main_business_growth").points == 5  # 0% growth


@pytest.mark.parametrize(
    ("liabilities_millions", "expected"),
    [("0", 10), ("55", 10), ("55.01", 5), ("75", 5), ("75.01", 0), ("100", 0), ("250", 0)],
)
def test_innovative_debt_ratio_bands(liabilities_millions: str, expected: int) -> None:
    last = {"assets": yuan(100), "liabilities": yuan(liabilities_millions)}
    assert points("innovative", "innovative.debt_ratio", last=last) == expected


def test_debt_ratio_shown_rounded_towards_the_worse_side() -> None:
    last = {"assets": yuan(100), "liabilities": "75000001.00"}
    rule = run("innovative", last=last).rule("innovative.debt_ratio")
    assert rule.value == "75.01%"
    assert rule.points == 0


def test_debt_without_assets() -> None:
    rule = run("innovative", last={"assets": "0", "liabilities": "1.00"}).rule("innovative.debt_ratio")
    assert rule.points == 0
    assert rule.value == "unbounded (no assets)"
    assert points("innovative", "innovative.debt_ratio", last={"assets": "0", "liabilities": "0"}) == 10


@pytest.mark.parametrize(
    ("main_millions", "expected"),
    [
        ("100", 20),
        ("70", 20),
        ("69.99", 15),
        ("60", 15),
        ("59.99", 10),
        ("55", 10),
        ("54.99", 5),
        ("50", 5),
        ("49.99", 0),
    ],
)
def test_innovative_main_business_share_bands(main_millions: str, expected: int) -> None:
    rule = "innovative.main_business_share"
    assert points("innovative", rule, last={"main_business_revenue": yuan(main_millions)}) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ({"ip_high_value_class1": True, "ip_self_developed_class1": False, "ip_class1_count": 1}, 20),
        ({"ip_high_value_class1": False, "ip_self_developed_class1": True, "ip_class1_count": 1}, 15),
        ({"ip_high_value_class1": False, "ip_self_developed_class1": False, "ip_class1_count": 1}, 10),
        ({"ip_high_value_class1": False, "ip_self_developed_class1": False, "ip_class1_count": 0}, 5),
        (
            {
                "ip_high_value_class1": False,
                "ip_self_developed_class1": False,
                "ip_class1_count": 0,
                "ip_class2_count": 0,
            },
            0,
        ),
    ],
)
def test_innovative_ip_levels(ip: dict[str, Any], expected: int) -> None:
    assert points("innovative", "innovative.ip", **ip) == expected


@pytest.mark.parametrize(("emerging", "expected"), [(True, 10), (False, 5)])
def test_innovative_strategic_emerging_industry(emerging: bool, expected: int) -> None:
    rule = "innovative.strategic_emerging_industry"
    assert points("innovative", rule, strategic_emerging_industry=emerging) == expected


# -- innovative: group minimums and total -----------------------------------------------------------

NO_IP = {
    "ip_high_value_class1": False,
    "ip_self_developed_class1": False,
    "ip_class1_count": 0,
    "ip_class2_count": 0,
}
# ... and without the direct path the base enterprise has through its national R&D institution.
NO_IP_NO_DIRECT = {**NO_IP, "rd_institution": "own"}


def test_innovative_innovation_group_minimum() -> None:
    # IP 0 + R&D 20 = 20: passes; everything else at maximum.
    at_minimum = run("innovative", **NO_IP_NO_DIRECT)
    assert at_minimum.rule("innovative.innovation").points == 20
    assert at_minimum.passed
    # IP 0 + R&D 15 = 15 < 20 fails, though the total (65) is well above 60.
    below = run("innovative", last={"rd_expense": yuan(4.99)}, **NO_IP_NO_DIRECT)
    assert below.score == 65
    assert below.rule("innovative.innovation").passed is False
    assert below.rule("innovative.total").passed is True
    assert below.passed is False


def test_innovative_growth_group_minimum() -> None:
    prior = {"main_business_revenue": yuan(50)}
    # growth 0% (5) + debt <=55% (10) = 15: passes.
    at_minimum = run(
        "innovative", rd_institution="own", prior=prior, last={"main_business_revenue": yuan(50)}
    )
    assert at_minimum.rule("innovative.growth").points == 15
    assert at_minimum.passed
    # growth 0% (5) + debt 55-75% (5) = 10: fails.
    below = run(
        "innovative",
        rd_institution="own",
        prior=prior,
        last={"main_business_revenue": yuan(50), "liabilities": yuan(120)},
    )
    assert below.rule("innovative.growth").points == 10
    assert below.passed is False


def test_innovative_specialization_group_minimum() -> None:
    # other industry (5) + share 55-60% (10) = 15: passes.
    prior = {"main_business_revenue": yuan(50)}
    at_minimum = run(
        "innovative",
        rd_institution="own",
        strategic_emerging_industry=False,
        prior=prior,
        last={"main_business_revenue": yuan(55)},
    )
    assert at_minimum.rule("innovative.specialization").points == 15
    assert at_minimum.passed
    below = run(
        "innovative",
        rd_institution="own",
        strategic_emerging_industry=False,
        prior=prior,
        last={"main_business_revenue": yuan(54.99)},
    )
    assert below.rule("innovative.specialization").points == 10
    assert below.passed is False


def test_innovative_total_minimum() -> None:
    # innovation 20 (IP 0, R&D 20) + growth 15 (0% growth 5 + debt 10) + specialization 25 (10 + 15) = 60.
    at_sixty = run(
        "innovative",
        prior={"main_business_revenue": yuan(60)},
        last={"main_business_revenue": yuan(60)},
        **NO_IP_NO_DIRECT,
    )
    assert at_sixty.score == 60
    assert at_sixty.rule("innovative.total").passed
    assert at_sixty.passed
    below = run(
        "innovative",
        prior={"main_business_revenue": yuan(55)},
        last={"main_business_revenue": yuan(55)},
        **NO_IP_NO_DIRECT,
    )
    assert below.score == 55
    assert all(
        below.rule(group).passed
        for group in ("innovative.innovation", "innovative.growth", "innovative.specialization")
    )
    assert below.rule("innovative.total").passed is False
    assert below.passed is False


# -- innovative: direct paths -----------------------------------------------------------------------

WEAK = {
    **NO_IP,
    "rd_institution": "none",
    "last": {"rd_expense": "0"},
}


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"awards": [{"level": "provincial", "year": 2024}]}, "innovative.direct.award"),
        ({"awards": [{"level": "national", "rank": 9, "year": 2023}]}, "innovative.direct.award"),
        ({"high_tech_enterprise": True}, "innovative.direct.high_tech_enterprise"),
        ({"rd_institution": "provincial"}, "innovative.direct.rd_institution"),
        ({"rd_institution": "national"}, "innovative.direct.rd_institution"),
        ({"new_equity_3y": yuan(5)}, "innovative.direct.new_equity"),
    ],
)
def test_innovative_direct_paths(changes: dict[str, Any], path: str) -> None:
    assert run("innovative", **WEAK).passed is False
    result = run("innovative", **{**WEAK, **changes})
    assert result.rule("innovative.total").passed is False
    assert result.passed
    assert result.direct_path == path


@pytest.mark.parametrize(
    "changes",
    [
        {"awards": [{"level": "provincial", "year": 2022}]},  # before the window
        {"awards": [{"level": "national", "year": 2027}]},  # after the window
        {"rd_institution": "own"},
        {"rd_institution": "joint"},
        {"new_equity_3y": "4999999.99"},
    ],
)
def test_innovative_near_misses_of_direct_paths(changes: dict[str, Any]) -> None:
    result = run("innovative", **{**WEAK, **changes})
    assert result.direct_path is None
    assert result.passed is False


@pytest.mark.parametrize(
    ("batch_year", "year", "counted"),
    [
        # A 2026 batch counts 2023-2025: the 3 calendar years before it opens.
        (2026, 2022, False),
        (2026, 2023, True),
        (2026, 2025, True),
        (2026, 2026, False),  # the year of the batch itself is not one of the last 3
        # The window follows the batch, not the declared figures (2023-2025 here).
        (2027, 2023, False),
        (2027, 2024, True),
        (2027, 2026, True),
        (2025, 2022, True),
        (2025, 2025, False),
        # Without a batch (a preview), the 3 declared years.
        (None, 2022, False),
        (None, 2023, True),
        (None, 2025, True),
        (None, 2026, False),
    ],
)
def test_award_window_is_the_3_years_before_the_batch(
    batch_year: int | None, year: int, counted: bool
) -> None:
    awards = [{"level": "national", "rank": 1, "year": year}]
    assert (metrics(awards=awards).awards_within(batch_year=batch_year) != []) is counted
    innovative = run("innovative", batch_year=batch_year, **{**WEAK, "awards": awards})
    assert innovative.rule("innovative.direct.award").passed is counted
    srdi = run("specialized_new", batch_year=batch_year, awards=awards)
    assert srdi.rule("specialized_new.direct.national_award").passed is counted
    giant = run("little_giant", batch_year=batch_year, awards=awards)
    assert giant.rule("little_giant.direct.innovation").passed is counted


def test_award_rules_name_their_window() -> None:
    result = run("innovative", batch_year=2026, **WEAK)
    rule = result.rule("innovative.direct.award")
    assert rule.description == "national or provincial S&T award in the last 3 years (2023-2025)"
    assert rule.value == "none in the last 3 years (2023-2025)"
    shown = run("little_giant", batch_year=2027, awards=[{"level": "national", "rank": 2, "year": 2026}])
    assert "(2024-2026)" in shown.rule("little_giant.direct.innovation").description
    assert shown.rule("little_giant.direct.innovation").value.startswith("awards: national 2026 (rank 2)")


# -- specialized_new: gates -------------------------------------------------------------------------


@pytest.mark.parametrize(("years", "passed"), [(2, True), (1, False), (0, False)])
def test_specialized_new_niche_gate(years: int, passed: bool) -> None:
    result = run("specialized_new", niche_years=years)
    assert result.rule("specialized_new.niche_years").passed is passed
    assert result.passed is passed


@pytest.mark.parametrize(
    ("revenue", "rd", "amount_ok", "intensity_ok"),
    [
        (yuan(30), "1000000.00", True, True),  # 1m and 3.33%
        (yuan(30), "999999.99", False, True),
        (yuan(100), yuan(3), True, True),  # exactly 3%
        (yuan(100), yuan(2.99), True, False),
    ],
)
def test_specialized_new_rd_gate(revenue: str, rd: str, amount_ok: bool, intensity_ok: bool) -> None:
    last = {"revenue": revenue, "main_business_revenue": revenue, "rd_expense": rd, "net_profit": "0"}
    result = run("specialized_new", last=last)
    assert result.rule("specialized_new.rd_expense").passed is amount_ok
    assert result.rule("specialized_new.rd_intensity").passed is intensity_ok
    assert result.passed is (amount_ok and intensity_ok)


@pytest.mark.parametrize(
    ("revenue", "equity", "passed"),
    [
        ("10000000.00", "0", True),
        ("9999999.99", "0", False),
        ("9999999.99", "20000000.00", True),
        ("9999999.99", "19999999.99", False),
    ],
)
def test_specialized_new_scale_gate(revenue: str, equity: str, passed: bool) -> None:
    last = {
        "revenue": revenue,
        "main_business_revenue": revenue,
        "rd_expense": "1000000.00",
        "net_profit": "0",
    }
    result = run("specialized_new", last=last, new_equity_2y=equity, new_equity_3y=equity)
    assert result.rule("specialized_new.scale").passed is passed
    assert result.passed is passed


def test_specialized_new_direct_path_does_not_replace_gates() -> None:
    result = run("specialized_new", niche_years=1, maker_china_rank=1)
    assert result.direct_path == "specialized_new.direct.maker_china"
    assert result.passed is False


# -- specialized_new: score bands -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("main_millions", "expected"),
    [("80", 5), ("79.99", 3), ("70", 3), ("69.99", 1), ("60", 1), ("59.99", 0)],
)
def test_specialized_new_share_bands(main_millions: str, expected: int) -> None:
    rule = "specialized_new.score.main_business_share"
    assert points("specialized_new", rule, last={"main_business_revenue": yuan(main_millions)}) == expected


@pytest.mark.parametrize(("years", "expected"), [(2, 1), (3, 1), (4, 2), (9, 4), (10, 5), (11, 5), (40, 5)])
def test_specialized_new_niche_points(years: int, expected: int) -> None:
    assert points("specialized_new", "specialized_new.score.niche_years", niche_years=years) == expected


@pytest.mark.parametrize(
    ("margin_millions", "expected"),
    [
        ("10", 10),
        ("9.99", 8),
        ("8", 8),
        ("7.99", 6),
        ("6", 6),
        ("5.99", 4),
        ("4", 4),
        ("3.99", 2),
        ("2", 2),
        ("1.99", 0),
        ("-5", 0),
    ],
)
def test_specialized_new_net_margin_bands(margin_millions: str, expected: int) -> None:
    rule = "specialized_new.score.net_margin"
    assert points("specialized_new", rule, last={"net_profit": yuan(margin_millions)}) == expected


@pytest.mark.parametrize(
    ("liabilities_millions", "expected"),
    [("50", 5), ("50.01", 3), ("60", 3), ("60.01", 1), ("70", 1), ("70.01", 0)],
)
def test_specialized_new_debt_bands(liabilities_millions: str, expected: int) -> None:
    last = {"assets": yuan(100), "liabilities": yuan(liabilities_millions)}
    assert points("specialized_new", "specialized_new.score.debt_ratio", last=last) == expected


@pytest.mark.parametrize(
    ("staff", "expected"),
    [("20", 5), ("19.99", 3), ("10", 3), ("9.99", 1), ("5", 1), ("4.99", 0)],
)
def test_specialized_new_rd_staff_bands(staff: str, expected: int) -> None:
    rule = "specialized_new.score.rd_staff_share"
    assert points("specialized_new", rule, rd_staff_share_pct=staff) == expected


@pytest.mark.parametrize(
    ("revenue_millions", "rd_millions", "expected"),
    [
        ("1000", "5", 10),  # amount 5m
        ("1000", "4.99", 8),
        ("1000", "4", 8),
        ("1000", "3.99", 6),
        ("1000", "3", 6),
        ("1000", "2.99", 4),
        ("1000", "2", 4),
        ("1000", "1.99", 2),
        ("1000", "1", 2),
        ("1000", "0.99", 0),
        ("10", "1", 10),  # intensity 10%
        ("10", "0.999", 8),
        ("10", "0.8", 8),
        ("10", "0.799", 6),
        ("10", "0.6", 6),
        ("10", "0.599", 4),
        ("10", "0.4", 4),
        ("10", "0.399", 2),
        ("10", "0.3", 2),
        ("10", "0.299", 0),
    ],
)
def test_specialized_new_rd_points(revenue_millions: str, rd_millions: str, expected: int) -> None:
    revenue = yuan(revenue_millions)
    last = {"revenue": revenue, "main_business_revenue": revenue, "rd_expense": yuan(rd_millions)}
    assert points("specialized_new", "specialized_new.score.rd", last=last) == expected


@pytest.mark.parametrize(
    ("institution", "expected"), [("national", 10), ("provincial", 8), ("joint", 4), ("own", 4), ("none", 0)]
)
def test_specialized_new_rd_institution(institution: str, expected: int) -> None:
    rule = "specialized_new.score.rd_institution"
    assert points("specialized_new", rule, rd_institution=institution) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ({}, 10),
        ({"ip_high_value_class1": False}, 8),
        ({"ip_high_value_class1": False, "ip_self_developed_class1": False}, 6),
        (NO_IP | {"ip_class2_count": 1}, 2),
        (NO_IP, 0),
    ],
)
def test_specialized_new_ip(ip: dict[str, Any], expected: int) -> None:
    assert points("specialized_new", "specialized_new.score.ip", **ip) == expected


@pytest.mark.parametrize(
    ("chain", "emerging", "expected"), [(True, False, 5), (False, True, 3), (False, False, 0)]
)
def test_specialized_new_product_field(chain: bool, emerging: bool, expected: int) -> None:
    rule = "specialized_new.score.product_field"
    changes = {"fills_chain_gap_or_six_foundations": chain, "strategic_emerging_industry": emerging}
    assert points("specialized_new", rule, **changes) == expected


@pytest.mark.parametrize(
    ("management", "certifications", "expected"),
    [(True, ["CE"], 5), (True, [], 3), (False, ["UL"], 2), (False, [], 0)],
)
def test_specialized_new_quality_management(
    management: bool, certifications: list[str], expected: int
) -> None:
    rule = "specialized_new.score.quality_management"
    changes = {"management_certification": management, "certifications": certifications}
    assert points("specialized_new", rule, **changes) == expected


@pytest.mark.parametrize(
    ("brand", "share", "rank", "expected"),
    [
        (True, "10", None, 15),
        (True, "9.99", None, 10),
        (True, "5", None, 10),
        (True, "4.99", None, 5),
        (True, None, 3, 15),
        (True, None, 4, 10),
        (True, None, 10, 10),
        (True, None, 11, 5),
        (True, None, None, 5),
        (False, "4.99", 11, 0),
    ],
)
def test_specialized_new_distinctiveness(
    brand: bool, share: str | None, rank: int | None, expected: int
) -> None:
    rule = "specialized_new.score.distinctiveness"
    changes = {"own_brand": brand, "market_share_pct": share, "market_rank": rank}
    assert points("specialized_new", rule, **changes) == expected


def test_specialized_new_information_systems() -> None:
    rule = "specialized_new.score.information_systems"
    assert points("specialized_new", rule) == 5
    assert points("specialized_new", rule, core_business_on_information_systems=False) == 0


def test_specialized_new_score_has_13_indicators_worth_100() -> None:
    result = run("specialized_new")
    indicators = [rule for rule in result.rules if rule.rule.startswith("specialized_new.score.")]
    assert len(indicators) == 13
    assert result.score == 98  # average growth 9.5% scores 8 of 10
    assert run("specialized_new", last={"main_business_revenue": yuan(100)}).score == 100


# The weakest enterprise that clears the gates: score built up from here.
SRDI_60 = {
    **NO_IP,
    "niche_years": 2,  # 1
    "fills_chain_gap_or_six_foundations": False,  # field 3 (emerging)
    "rd_institution": "national",  # 10
    "rd_staff_share_pct": "20",  # 5
    "own_brand": True,
    "market_share_pct": "10",  # distinctiveness 15
    "market_rank": None,
    "management_certification": False,
    "certifications": [],  # quality 0
    "core_business_on_information_systems": False,  # 0
    "first": {"main_business_revenue": yuan(60)},
    "prior": {"main_business_revenue": yuan(60)},
    "last": {
        "main_business_revenue": yuan(60),  # share 1, growth 2
        "rd_expense": yuan(3),  # R&D 6
        "net_profit": yuan(2),  # margin 2
        "assets": yuan(100),
        "liabilities": yuan(50),  # debt 5
    },
}


def test_specialized_new_score_threshold() -> None:
    # share 1 + growth 2 + niche 1 + field 3 + information systems 0 + quality 0 + margin 2 + debt 5
    # + distinctiveness 15 + IP 0 + R&D 6 + staff 5 + institution 10 = 50
    assert run("specialized_new", **SRDI_60).score == 50
    # + information systems 5 + a product certification 2 = 57; niche years 6 (3) or 8 (4) give 59 or 60.
    better = {**SRDI_60, "core_business_on_information_systems": True, "certifications": ["CE"]}
    at_sixty = run("specialized_new", **{**better, "niche_years": 8})
    assert at_sixty.score == 60
    assert at_sixty.rule("specialized_new.score").passed
    assert at_sixty.passed
    at_59 = run("specialized_new", **{**better, "niche_years": 6})
    assert at_59.score == 59
    assert at_59.rule("specialized_new.score").passed is False
    assert at_59.passed is False


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"awards": [{"level": "national", "year": 2025}]}, "specialized_new.direct.national_award"),
        (
            {
                "prior": {"main_business_revenue": yuan(60), "rd_expense": yuan(10)},
                "last": {**SRDI_60["last"], "rd_expense": yuan(10)},
            },
            "specialized_new.direct.rd_expense_2y_average",
        ),
        ({"new_equity_2y": yuan(60), "new_equity_3y": yuan(60)}, "specialized_new.direct.new_equity"),
        ({"maker_china_rank": 500}, "specialized_new.direct.maker_china"),
    ],
)
def test_specialized_new_direct_paths(changes: dict[str, Any], path: str) -> None:
    result = run("specialized_new", **{**SRDI_60, **changes})
    assert result.score is not None
    assert result.score < 60
    assert result.direct_path == path
    assert result.passed


@pytest.mark.parametrize(
    "changes",
    [
        {"awards": [{"level": "provincial", "rank": 1, "year": 2025}]},
        {"awards": [{"level": "national", "year": 2022}]},
        {
            "prior": {"main_business_revenue": yuan(60), "rd_expense": yuan(10)},
            "last": {**SRDI_60["last"], "rd_expense": "9999999.98"},
        },
        {"new_equity_2y": "59999999.99", "new_equity_3y": yuan(70)},
        {"maker_china_rank": 501},
    ],
)
def test_specialized_new_direct_path_near_misses(changes: dict[str, Any]) -> None:
    result = run("specialized_new", **{**SRDI_60, **changes})
    assert result.direct_path is None
    assert result.passed is False


# -- little_giant 2022 ------------------------------------------------------------------------------


def growing_to(last_main: str) -> dict[str, Any]:
    """Main-business revenue 50m, 60m, then ``last_main``: well above 5% average growth."""
    return {
        "first": {"main_business_revenue": yuan(50)},
        "prior": {"main_business_revenue": yuan(60)},
        "last": {"main_business_revenue": last_main},
    }


@pytest.mark.parametrize(
    ("changes", "rule", "passed"),
    [
        ({"niche_years": 3}, "little_giant.niche_years", True),
        ({"niche_years": 2}, "little_giant.niche_years", False),
        (growing_to(yuan(70)), "little_giant.main_business_share", True),
        (growing_to(yuan(69.99)), "little_giant.main_business_share", False),
        ({"core_business_on_information_systems": False}, "little_giant.information_systems", False),
        ({"management_certification": False}, "little_giant.certification", True),
        ({"certifications": []}, "little_giant.certification", True),
        ({"management_certification": False, "certifications": []}, "little_giant.certification", False),
        ({"last": {"assets": yuan(100), "liabilities": yuan(70)}}, "little_giant.debt_ratio", True),
        ({"last": {"assets": yuan(100), "liabilities": yuan(70.01)}}, "little_giant.debt_ratio", False),
        ({"market_share_pct": "10"}, "little_giant.market_share", True),
        ({"market_share_pct": "9.99"}, "little_giant.market_share", False),
        ({"market_share_pct": None}, "little_giant.market_share", False),
        ({"own_brand": False}, "little_giant.own_brand", False),
        ({"rd_institution": "own"}, "little_giant.rd_institution", True),
        ({"rd_institution": "joint"}, "little_giant.rd_institution", True),
        ({"rd_institution": "provincial"}, "little_giant.rd_institution", True),
        ({"rd_institution": "none"}, "little_giant.rd_institution", False),
        ({"ip_class1_count": 2}, "little_giant.ip_class1", True),
        ({"ip_class1_count": 1}, "little_giant.ip_class1", False),
        ({"fills_chain_gap_or_six_foundations": False}, "little_giant.chain_position", False),
    ],
)
def test_little_giant_dimensions(changes: dict[str, Any], rule: str, passed: bool) -> None:
    result = run("little_giant", **changes)
    assert result.rule(rule).passed is passed
    assert result.passed is passed
    if not passed:
        assert {failed.rule for failed in result.failed_rules} == {rule, "little_giant.direct.innovation"}


@pytest.mark.parametrize(("last_main_millions", "passed"), [("110", True), ("109.99", False)])
def test_little_giant_average_growth(last_main_millions: str, passed: bool) -> None:
    # growth 0% then 10% averages 5%.
    result = run(
        "little_giant",
        first={"main_business_revenue": yuan(100)},
        prior={"main_business_revenue": yuan(100)},
        last={"main_business_revenue": yuan(last_main_millions), "revenue": yuan(110)},
    )
    assert result.rule("little_giant.main_business_growth").passed is passed
    assert result.passed is passed


def band(revenue: str, prior_rd: str, last_rd: str, **fields: Any) -> dict[str, Any]:
    """Revenue (all main business) and R&D for the last two years; 20% growth before them."""
    first_main = f"{Decimal(revenue) / Decimal('1.2'):.2f}"
    return fields | {
        "first": {"main_business_revenue": first_main},
        "prior": {
            "revenue": revenue,
            "main_business_revenue": revenue,
            "rd_expense": prior_rd,
            "net_profit": "0",
        },
        "last": {
            "revenue": revenue,
            "main_business_revenue": revenue,
            "rd_expense": last_rd,
            "net_profit": "0",
        },
    }


SMALL = "49999999.99"
EQUITY_80 = {"new_equity_2y": yuan(80), "new_equity_3y": yuan(80)}


@pytest.mark.parametrize(
    ("changes", "passed"),
    [
        # >= 100m: 3% in each of the last 2 years
        (band(yuan(100), yuan(3), yuan(3)), True),
        (band(yuan(100), yuan(2.99), yuan(3)), False),
        (band(yuan(100), yuan(3), yuan(2.99)), False),
        # 50-100m: 6% in each of the last 2 years
        (band("99999999.99", yuan(6), yuan(6)), True),
        (band("99999999.99", yuan(5.99), yuan(6)), False),
        (band(yuan(50), yuan(3), yuan(3)), True),
        (band(yuan(50), yuan(2.99), yuan(3)), False),
        (band(yuan(50), yuan(5), yuan(5)), True),
        # < 50m: 80m new equity, 30m R&D over 2 years, 50% R&D staff
        (band(SMALL, yuan(15), yuan(15), **EQUITY_80, rd_staff_share_pct="50"), True),
        (band(SMALL, yuan(15), yuan(15), **EQUITY_80, rd_staff_share_pct="49.99"), False),
        (band(SMALL, yuan(15), "14999999.99", **EQUITY_80, rd_staff_share_pct="50"), False),
        (
            band(SMALL, yuan(15), yuan(15), new_equity_2y="79999999.99", new_equity_3y=yuan(80)),
            False,
        ),
        (band(SMALL, yuan(15), yuan(15)), False),
    ],
)
def test_little_giant_rd_by_revenue_band(changes: dict[str, Any], passed: bool) -> None:
    result = run("little_giant", **changes)
    assert result.rule("little_giant.rd_intensity").passed is passed
    assert result.passed is passed


def test_little_giant_rd_band_thresholds_shown() -> None:
    result = run("little_giant", **band("99999999.99", yuan(5.99), yuan(6)))
    rule = result.rule("little_giant.rd_intensity")
    assert "band 50-100m" in rule.value
    assert rule.threshold == "band 50-100m: R&D / revenue >= 6% in each of the last 2 years"
    assert "5.99%" in rule.value


FAILING_INNOVATION = {
    "rd_institution": "none",
    "ip_class1_count": 1,
    "ip_high_value_class1": False,
    "ip_self_developed_class1": False,
}


@pytest.mark.parametrize(
    ("changes", "passed"),
    [
        ({"awards": [{"level": "national", "rank": 3, "year": 2024}]}, True),
        ({"awards": [{"level": "national", "rank": 4, "year": 2024}]}, False),
        ({"awards": [{"level": "national", "year": 2024}]}, False),  # rank unknown
        ({"awards": [{"level": "provincial", "rank": 1, "year": 2024}]}, False),
        ({"awards": [{"level": "national", "rank": 1, "year": 2022}]}, False),  # outside the window
        ({"maker_china_rank": 50}, True),
        ({"maker_china_rank": 51}, False),
    ],
)
def test_little_giant_direct_innovation(changes: dict[str, Any], passed: bool) -> None:
    result = run("little_giant", **FAILING_INNOVATION, **changes)
    assert result.rule("little_giant.rd_institution").passed is False
    assert result.rule("little_giant.ip_class1").passed is False
    assert result.rule("little_giant.direct.innovation").passed is passed
    assert result.direct_path == ("little_giant.direct.innovation" if passed else None)
    assert result.passed is passed


def test_little_giant_direct_innovation_does_not_cover_other_dimensions() -> None:
    result = run("little_giant", maker_china_rank=1, own_brand=False)
    assert result.direct_path == "little_giant.direct.innovation"
    assert result.passed is False


# -- little_giant 2026 ------------------------------------------------------------------------------


def revenue_2026(revenue: str) -> dict[str, Any]:
    """Last-year revenue ``revenue`` (all main business, 3% R&D); everything else still passes 2026."""
    return {
        "first": {"main_business_revenue": yuan(40)},
        "prior": {"rd_expense": yuan(10.5)},
        "last": {"revenue": revenue, "main_business_revenue": revenue, "rd_expense": yuan(1.5)},
    }


@pytest.mark.parametrize(
    ("changes", "rule", "passed"),
    [
        (revenue_2026(yuan(50)), "little_giant.revenue", True),
        (revenue_2026("49999999.99"), "little_giant.revenue", False),
        ({"last": {"main_business_revenue": yuan(90)}}, "little_giant.main_business_share", True),
        ({"last": {"main_business_revenue": yuan(89.99)}}, "little_giant.main_business_share", False),
        ({"last": {"assets": yuan(100), "liabilities": yuan(75)}}, "little_giant.debt_ratio", True),
        ({"last": {"assets": yuan(100), "liabilities": yuan(75.01)}}, "little_giant.debt_ratio", False),
        ({"market_share_pct": "10", "market_rank": None}, "little_giant.market_position", True),
        ({"market_share_pct": "9.99", "market_rank": 3}, "little_giant.market_position", True),
        ({"market_share_pct": "9.99", "market_rank": 4}, "little_giant.market_position", False),
        ({"market_share_pct": None, "market_rank": None}, "little_giant.market_position", False),
        (
            {"prior": {"rd_expense": yuan(6)}, "last": {"rd_expense": yuan(6)}},
            "little_giant.rd_expense_2y",
            True,
        ),
        (
            {"prior": {"rd_expense": yuan(6)}, "last": {"rd_expense": "5999999.99"}},
            "little_giant.rd_expense_2y",
            False,
        ),
        (
            {"prior": {"rd_expense": yuan(3)}, "last": {"rd_expense": yuan(9)}},
            "little_giant.rd_intensity",
            True,
        ),
        (
            {"prior": {"rd_expense": yuan(2.99)}, "last": {"rd_expense": yuan(10)}},
            "little_giant.rd_intensity",
            False,
        ),
        ({"ip_class1_count": 4}, "little_giant.ip_class1", True),
        ({"ip_class1_count": 3}, "little_giant.ip_class1", False),
        ({"niche_years": 2}, "little_giant.niche_years", False),
        ({"fills_chain_gap_or_six_foundations": False}, "little_giant.chain_position", False),
    ],
)
def test_little_giant_2026(changes: dict[str, Any], rule: str, passed: bool) -> None:
    result = run("little_giant", "national-2026", **changes)
    assert result.rule(rule).passed is passed
    assert result.passed is passed


@pytest.mark.parametrize(("last_main", "passed"), [("55125000.00", True), ("55124999.99", False)])
def test_little_giant_2026_compound_growth(last_main: str, passed: bool) -> None:
    # 50m -> 55.125m over two years is exactly 5% a year.
    result = run(
        "little_giant",
        "national-2026",
        first={"main_business_revenue": yuan(50), "revenue": yuan(52)},
        last={"main_business_revenue": last_main, "revenue": yuan(60)},
        prior={"main_business_revenue": yuan(80)},
        market_share_pct="10",
    )
    rule = result.rule("little_giant.main_business_growth")
    assert rule.passed is passed
    assert rule.value == ("5.00%" if passed else "4.99%")
    # The 2022 rule (average of two growth rates) reads the same figures differently.
    assert (
        "average"
        in run(
            "little_giant",
            first={"main_business_revenue": yuan(50), "revenue": yuan(52)},
            last={"main_business_revenue": last_main, "revenue": yuan(60)},
        )
        .rule("little_giant.main_business_growth")
        .description
    )


@pytest.mark.parametrize("last_main", [yuan(96), "0"])
def test_little_giant_2026_growth_from_zero(last_main: str) -> None:
    """Compound growth over a first year without main-business revenue is undefined: the rule fails."""
    result = run(
        "little_giant",
        "national-2026",
        first={"main_business_revenue": "0"},
        last={"main_business_revenue": last_main},
    )
    rule = result.rule("little_giant.main_business_growth")
    assert rule.passed is False
    assert rule.value == (
        "undefined: no main-business revenue in 2023 (0.00 yuan); a growth rate needs a base above zero"
    )
    assert result.passed is False


def test_little_giant_2026_growth_ignores_a_zero_middle_year() -> None:
    # Compound growth reads the first and last years only: 80m -> 0 -> 96m is 9.54% a year.
    result = run("little_giant", "national-2026", prior={"main_business_revenue": "0"})
    assert result.rule("little_giant.main_business_growth").passed


def test_same_figures_judged_by_each_ruleset() -> None:
    # An 80% main-business share passes 2022 (>= 70%) but not 2026 (>= 90%).
    changes = growing_to(yuan(80))
    assert run("little_giant", "national-2022", **changes).passed
    result_2026 = run("little_giant", "national-2026", **changes)
    assert result_2026.passed is False
    assert [rule.rule for rule in result_2026.failed_rules] == [
        "little_giant.main_business_share",
        "little_giant.direct.innovation",
    ]
    rules_2022 = {rule.rule for rule in run("little_giant", "national-2022").rules}
    rules_2026 = {rule.rule for rule in result_2026.rules}
    assert rules_2026 - rules_2022 == {
        "little_giant.revenue",
        "little_giant.market_position",
        "little_giant.rd_expense_2y",
    }
    assert rules_2022 - rules_2026 == {"little_giant.market_share"}


def test_2026_leaves_other_tiers_unchanged() -> None:
    for tier in ("innovative", "specialized_new", "single_champion"):
        old = run(tier, "national-2022", last={"revenue": yuan(400)})
        new = run(tier, "national-2026", last={"revenue": yuan(400)})
        assert old.rules == new.rules


# -- invisible_champion, single_champion ------------------------------------------------------------


@pytest.mark.parametrize("ruleset", sorted(RULESETS))
@pytest.mark.parametrize(("rank", "passed"), [(1, True), (2, False), (None, False)])
def test_invisible_champion_ranks_first_nationally(ruleset: str, rank: int | None, passed: bool) -> None:
    result = run("invisible_champion", ruleset, market_rank=rank)
    assert result.rule("invisible_champion.national_rank").passed is passed
    assert result.passed is passed


def test_invisible_champion_needs_little_giant_criteria() -> None:
    little_giant_rules = {rule.rule for rule in run("little_giant").rules}
    result = run("invisible_champion", own_brand=False)
    assert little_giant_rules < {rule.rule for rule in result.rules}
    assert result.passed is False


SINGLE = {"last": {"revenue": yuan(400), "main_business_revenue": yuan(380)}}


@pytest.mark.parametrize(
    ("changes", "held", "rule", "passed"),
    [
        ({"global_market_rank": 3}, (), "single_champion.global_rank", True),
        ({"global_market_rank": 4}, (), "single_champion.global_rank", False),
        ({"global_market_rank": None}, (), "single_champion.global_rank", False),
        ({"niche_years": 10}, (), "single_champion.years_in_field", True),
        ({"niche_years": 9}, (), "single_champion.years_in_field", False),
        (
            {"last": {"revenue": "399999999.99", "main_business_revenue": yuan(380)}},
            (),
            "single_champion.revenue",
            False,
        ),
        (
            {"last": {"revenue": yuan(200), "main_business_revenue": yuan(180)}},
            ("little_giant",),
            "single_champion.revenue",
            True,
        ),
        (
            {"last": {"revenue": "199999999.99", "main_business_revenue": yuan(180)}},
            ("little_giant",),
            "single_champion.revenue",
            False,
        ),
        (
            {"last": {"revenue": yuan(200), "main_business_revenue": yuan(180)}},
            ("specialized_new",),
            "single_champion.revenue",
            False,
        ),
        (
            {"last": {"revenue": yuan(400), "main_business_revenue": yuan(280)}},
            (),
            "single_champion.main_product_share",
            True,
        ),
        (
            {"last": {"revenue": yuan(400), "main_business_revenue": "279999999.99"}},
            (),
            "single_champion.main_product_share",
            False,
        ),
    ],
)
def test_single_champion(changes: dict[str, Any], held: tuple[str, ...], rule: str, passed: bool) -> None:
    result = run("single_champion", held_tiers=held, **{**SINGLE, **changes})
    assert result.rule(rule).passed is passed
    assert result.passed is passed


# -- declared figures -------------------------------------------------------------------------------


def test_years_are_sorted_and_helpers_read_them() -> None:
    shuffled = data()
    shuffled["years"] = list(reversed(shuffled["years"]))
    m = DeclaredMetrics.model_validate(shuffled)
    assert [figures.year for figures in m.years] == [2023, 2024, 2025]
    assert (m.first.year, m.prior.year, m.last.year) == (2023, 2024, 2025)
    assert m.rd_intensity() == Decimal("0.06")
    assert m.rd_intensity(2024) == Decimal("0.06")
    assert m.debt_ratio == Decimal("0.4")
    assert m.main_business_share == Decimal("0.96")
    assert m.main_growth(2024) == Decimal("0.1")
    assert m.main_growth_average_2y == (Decimal("0.1") + Decimal(96) / Decimal(88) - 1) / 2
    assert m.rd_expense_2y == Decimal("12000000.00")
    with pytest.raises(KeyError):
        m.year(2020)


def test_zero_revenue_ratios_are_zero() -> None:
    m = metrics(
        last={"revenue": "0", "main_business_revenue": "0", "rd_expense": "5.00", "net_profit": "-3.00"}
    )
    assert m.rd_intensity() == 0
    assert m.main_business_share == 0
    assert m.net_margin == 0
    assert m.main_growth() == -1


def test_growth_from_zero_is_undefined() -> None:
    m = metrics(prior={"main_business_revenue": "0"})
    assert m.main_growth() is None
    assert m.main_growth(2024) == -1
    assert m.main_growth_average_2y is None
    assert m.zero_main_business_base == m.prior
    first = metrics(first={"main_business_revenue": "0"}, prior={"main_business_revenue": "0"})
    assert first.zero_main_business_base == first.first
    assert metrics().zero_main_business_base is None


def test_json_input_with_strings_and_integers() -> None:
    payload = json.dumps(data(niche_years=3, new_equity_2y=5, new_equity_3y="7.5"))
    m = DeclaredMetrics.model_validate_json(payload)
    assert m.new_equity_2y == Decimal(5)
    assert m.new_equity_3y == Decimal("7.5")
    # A whole float is an integer to JSON (and to the schema's `integer`): taken, exactly.
    whole_floats = json.dumps(data(new_equity_2y=0.0, last={"revenue": 2.0**53}))
    whole = DeclaredMetrics.model_validate_json(whole_floats)
    assert whole.new_equity_2y == 0
    assert whole.years[-1].revenue == Decimal(2**53)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"new_equity_2y": 1.5}, "not floats"),
        ({"last": {"revenue": 100000000.5}}, "not floats"),
        ({"last": {"revenue": "100000000.001"}}, "decimal places"),
        ({"last": {"revenue": "-1.00"}}, "greater than or equal to 0"),
        ({"last": {"main_business_revenue": "100000000.01"}}, "exceeds revenue"),
        ({"niche_years": -1}, "greater than or equal to 0"),
        ({"market_share_pct": "100.01"}, "less than or equal to 100"),
        ({"market_rank": 0}, "greater than or equal to 1"),
        ({"rd_institution": "university"}, "'none', 'own', 'joint', 'provincial' or 'national'"),
        ({"colour": "blue"}, "Extra inputs are not permitted"),
        ({"ip_class1_count": 0}, "needs ip_class1_count >= 1"),
        ({"new_equity_2y": "2", "new_equity_3y": "1"}, "cannot be below new_equity_2y"),
        ({"awards": [{"level": "municipal", "year": 2024}]}, "'national' or 'provincial'"),
        ({"compliance": {"no_tax_evasion": True}}, "Field required"),
        ({"high_tech_enterprise": None}, "valid boolean"),
        ({"new_equity_2y": True}, "not an amount"),
    ],
)
def test_invalid_figures(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        metrics(**changes)


@pytest.mark.parametrize(
    ("years", "message"),
    [
        ([2023, 2024], "exactly 3 financial years"),
        ([2022, 2023, 2024, 2025], "exactly 3 financial years"),
        ([2023, 2024, 2026], "consecutive"),
        ([2023, 2023, 2024], "consecutive"),
    ],
)
def test_three_consecutive_years(years: list[int], message: str) -> None:
    template = BASE["years"][0]
    with pytest.raises(ValidationError, match=message):
        DeclaredMetrics.model_validate(data(years=[{**template, "year": year} for year in years]))


def test_negative_net_profit_is_allowed() -> None:
    assert metrics(last={"net_profit": "-1000000.00"}).net_margin == Decimal("-0.01")


# -- growth over a zero base (issue 17) -------------------------------------------------------------

UNDEFINED_2023 = (
    "undefined: no main-business revenue in 2023 (0.00 yuan); a growth rate needs a base above zero"
)
# The case: main-business revenue 0 -> 80m -> 40m (halved last year).
HALVED_FROM_ZERO = {
    "first": {"main_business_revenue": "0"},
    "prior": {"main_business_revenue": yuan(80)},
    "last": {"main_business_revenue": yuan(40), "revenue": yuan(50)},
}


def test_srdi_growth_points_from_a_zero_base_are_zero() -> None:
    result = run("specialized_new", **HALVED_FROM_ZERO)
    rule = result.rule("specialized_new.score.main_business_growth")
    assert (rule.points, rule.passed, rule.value) == (0, False, UNDEFINED_2023)
    # The rest of the score still counts: only the growth indicator is lost.
    assert result.score == sum(
        r.points or 0 for r in result.rules if r.rule.startswith("specialized_new.score.")
    )


def test_srdi_growth_with_a_zero_middle_year_is_undefined_too() -> None:
    # 80m -> 0 -> 96m: the second growth rate is over a zero base, so the 2-year average is undefined.
    rule = run("specialized_new", prior={"main_business_revenue": "0"}).rule(
        "specialized_new.score.main_business_growth"
    )
    assert rule.points == 0
    assert rule.value.startswith("undefined: no main-business revenue in 2024")


def test_little_giant_2022_growth_from_a_zero_base_fails_and_says_why() -> None:
    result = run("little_giant", **HALVED_FROM_ZERO)
    rule = result.rule("little_giant.main_business_growth")
    assert (rule.passed, rule.value, rule.threshold) == (False, UNDEFINED_2023, ">= 5%")
    assert result.passed is False
    # Even strong growth after the zero year is no defined rate: 0 -> 80m -> 96m fails as well.
    grown = run("little_giant", first={"main_business_revenue": "0"})
    assert grown.rule("little_giant.main_business_growth").passed is False


def test_innovative_growth_over_a_halving_is_defined_and_scores_zero() -> None:
    # The innovative rule reads the last year only: 80m -> 40m is -50%, a defined rate in the < 0 band.
    rule = run("innovative", **HALVED_FROM_ZERO).rule("innovative.main_business_growth")
    assert (rule.points, rule.value) == (0, "-50.00%")


@pytest.mark.parametrize(
    ("average_pct", "expected"),
    [
        ("10", 10),
        ("9.99", 8),
        ("8", 8),
        ("7.99", 6),
        ("6", 6),
        ("5.99", 4),
        ("4", 4),
        ("3.99", 2),
        ("0", 2),
        ("-0.01", 0),
    ],
)
@pytest.mark.parametrize(("base", "revenue_too"), [(50, False), (100, True)])
def test_specialized_new_growth_bands(average_pct: str, expected: int, base: int, revenue_too: bool) -> None:
    # Growth 0% then g: the 2-year average is g / 2, so the last year is base * (1 + 2 * average); with
    # `revenue_too` the total revenue moves alike (the rule reads the main business only).
    last = Decimal(base) * (1 + 2 * Decimal(average_pct) / 100)

    def year(amount: Decimal | int) -> dict[str, str]:
        figures = {"main_business_revenue": yuan(str(amount))}
        return {**figures, "revenue": yuan(str(amount))} if revenue_too else figures

    result = run("specialized_new", first=year(base), prior=year(base), last=year(last))
    assert result.rule("specialized_new.score.main_business_growth").points == expected
