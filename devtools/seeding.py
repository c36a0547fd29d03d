"""Valid domain data for tests and `bench/`: fresh Unified Social Credit Codes and declared metrics that
pass screening. What they send it through (HTTP, the ORM) is the caller's."""

from __future__ import annotations

import random
from typing import Any

from services.identifiers import CHARSET, make_uscc


def random_uscc(region: str = "500103", rng: random.Random | None = None) -> str:
    """A valid code registered in ``region`` (9 random characters from ``rng``, then the check character)."""
    rng = rng or random.Random()
    body = "91" + region + "".join(rng.choice(CHARSET) for _ in range(9))
    return make_uscc(body)


def strong_metrics(**overrides: Any) -> dict[str, Any]:
    """Figures that pass every tier's criteria in the 2022 ruleset (a clear specialized_new pass)."""
    years = [
        {
            "year": 2023,
            "revenue": "80000000.00",
            "main_business_revenue": "74000000.00",
            "rd_expense": "5000000.00",
            "net_profit": "9000000.00",
            "assets": "100000000.00",
            "liabilities": "40000000.00",
        },
        {
            "year": 2024,
            "revenue": "92000000.00",
            "main_business_revenue": "86000000.00",
            "rd_expense": "6000000.00",
            "net_profit": "10500000.00",
            "assets": "110000000.00",
            "liabilities": "42000000.00",
        },
        {
            "year": 2025,
            "revenue": "110000000.00",
            "main_business_revenue": "103000000.00",
            "rd_expense": "7000000.00",
            "net_profit": "12000000.00",
            "assets": "120000000.00",
            "liabilities": "45000000.00",
        },
    ]
    metrics: dict[str, Any] = {
        "years": years,
        "niche_years": 8,
        "market_share_pct": "15.00",
        "market_rank": 1,
        "ip_class1_count": 6,
        "ip_class2_count": 10,
        "ip_high_value_class1": True,
        "ip_self_developed_class1": True,
        "rd_staff_share_pct": "30.00",
        "rd_institution": "provincial",
        "own_brand": True,
        "management_certification": True,
        "core_business_on_information_systems": True,
        "strategic_emerging_industry": True,
        "fills_chain_gap_or_six_foundations": True,
        "certifications": ["ISO 9001"],
        "awards": [],
        "maker_china_rank": None,
        "high_tech_enterprise": True,
        "new_equity_2y": "0.00",
        "new_equity_3y": "0.00",
        "compliance": {
            "no_abnormal_operations": True,
            "no_serious_dishonesty": True,
            "no_prohibited_products": True,
            "no_major_incident": True,
            "no_tax_evasion": True,
        },
    }
    metrics.update(overrides)
    return metrics
