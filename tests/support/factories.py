"""Builders of valid domain data for tests; the data itself (codes, metrics) is `devtools.seeding`'s."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from devtools.seeding import random_uscc, strong_metrics
from services.applications.models import Application, Enterprise

__all__ = ["random_uscc", "seed_application", "strong_metrics", "weak_metrics"]


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
