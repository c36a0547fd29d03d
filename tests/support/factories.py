"""Builders of valid domain data for tests."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.applications.models import Application, Enterprise
from services.identifiers import make_uscc

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def random_uscc(region: str = "500103", rng: random.Random | None = None) -> str:
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


def weak_metrics() -> dict[str, Any]:
    """Figures that fail screening: a compliance declaration is false and R&D is tiny."""
    metrics = strong_metrics()
    metrics["compliance"] = {**metrics["compliance"], "no_tax_evasion": False}
    for year in metrics["years"]:
        year["rd_expense"] = "10000.00"
    return metrics


async def seed_application(
    session: AsyncSession,
    *,
    tier: str = "specialized_new",
    program: str = "demo",
    batch: str = "demo-2026",
    region: str = "500103",
    uscc: str | None = None,
    metrics: dict[str, Any] | None = None,
    workflow_started: bool = True,
    created_at: datetime | None = None,
) -> Application:
    """An enterprise (when new) and an application in `screening`, written straight to the database."""
    uscc = uscc or random_uscc(region)
    created_at = created_at or datetime.now(UTC)
    if await session.get(Enterprise, uscc) is None:
        session.add(
            Enterprise(
                uscc=uscc,
                name=f"Enterprise {uscc}",
                region_code=region,
                industry="machinery",
                founded_on=date(2010, 1, 1),
                registered_by="test",
            )
        )
        await session.flush()
    application = Application(
        id=uuid.uuid4(),
        uscc=uscc,
        program=program,
        tier=tier,
        batch=batch,
        ruleset="national-2022",
        region_code=region,
        status="screening",
        metrics=metrics or strong_metrics(),
        submitted_by="test",
        workflow_started=workflow_started,
        created_at=created_at,
        updated_at=created_at,
    )
    session.add(application)
    await session.flush()
    return application
