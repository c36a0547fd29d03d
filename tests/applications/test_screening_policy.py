"""Screening as the policy runs it (issue 17), on the database: the ruleset and award window of the
application's batch (at filing and at re-review), the tiers the enterprise holds (an existing little giant's
route to a single championship), and the bar on applying after a revocation for fraud."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import records, service
from services.applications.models import Application, Recognition
from services.applications.schemas import ApplicationCreate
from services.auth import CurrentUser, Role
from services.config import Settings
from services.contracts import Actor, RecognitionChange, ReReviewInput
from services.programs import Program, load_programs
from tests.conftest import bearer, make_token
from tests.support.factories import seed_application, strong_metrics

PROGRAMS = Path(__file__).resolve().parents[2] / "programs"
SHIPPED = load_programs(PROGRAMS)
ADMIN = Actor(sub="admin-1", role="admin")


def program_with(**changes: Any) -> Program:
    """The demo program with ``changes`` (e.g. other batches), and no documents required."""
    data = SHIPPED["demo"].model_dump(mode="json")
    for tier in data["tiers"].values():
        tier["required_documents"] = []
    return Program.model_validate({**data, **changes})


# Two batches open in December 2026: one opened under the 2022 standard, one under the 2026 standard.
TWO_BATCHES = program_with(
    batches=[
        {"key": "spring", "opens_on": "2026-03-01", "closes_on": "2027-12-31"},
        {"key": "summer", "opens_on": "2026-06-01", "closes_on": "2027-12-31"},
    ]
)
FILED = datetime(2026, 12, 1, 9, tzinfo=UTC)


async def recognition(
    session: AsyncSession, uscc: str, *, tier: str = "little_giant", **fields: Any
) -> Recognition:
    """A recognition of ``uscc``: active, valid 2026-01-01 to 2029-01-01, unless ``fields`` say otherwise."""
    application = await seed_application(session, uscc=uscc, tier=tier, batch=f"rec-{uuid.uuid4().hex[:8]}")
    application.status = "recognized"
    defaults: dict[str, Any] = {
        "valid_from": datetime(2026, 1, 1, tzinfo=UTC),
        "valid_until": datetime(2029, 1, 1, tzinfo=UTC),
        "status": "active",
    }
    row = Recognition(
        application_id=application.id,
        uscc=uscc,
        program="demo",
        tier=tier,
        certificate_no=f"DEMO-{tier.upper()}-{uuid.uuid4().hex[:10].upper()}",
        **(defaults | fields),
    )
    session.add(row)
    await session.flush()
    return row


async def file(session: AsyncSession, uscc: str, *, batch: str, program: Program = TWO_BATCHES) -> Any:
    user = CurrentUser(sub=f"user-{uscc}", role=Role.enterprise, uscc=uscc)
    data = ApplicationCreate.model_validate(
        {
            "uscc": uscc,
            "program": "demo",
            "tier": "specialized_new",
            "batch": batch,
            "metrics": strong_metrics(),
        }
    )
    return await service.create_application(
        session, user=user, data=data, programs={"demo": program}, now=FILED
    )


# -- the ruleset of the batch ----------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "ruleset"), [("spring", "national-2022"), ("summer", "national-2026")])
async def test_an_application_is_judged_by_the_ruleset_in_force_when_its_batch_opened(
    session: AsyncSession, batch: str, ruleset: str
) -> None:
    # Both filed on 2026-12-01, when national-2026 is in force: the batch decides, not the filing date.
    seeded = await seed_application(session)  # registers an enterprise
    read = await file(session, seeded.uscc, batch=batch)
    assert read.ruleset == ruleset
    assert read.batch == batch


@pytest.mark.parametrize(
    ("at", "batch", "ruleset"),
    [
        # The 2026 batch is open: the re-review belongs to it and is judged by its ruleset.
        (datetime(2026, 5, 1, tzinfo=UTC), "2026", "national-2026"),
        # No batch open: the re-review stays in the original (2025) batch and is judged by its ruleset,
        # although national-2026 is in force on the day it opens.
        (datetime(2026, 12, 1, tzinfo=UTC), "2025", "national-2022"),
    ],
)
async def test_a_re_review_is_judged_by_the_ruleset_of_its_batch(
    session: AsyncSession, at: datetime, batch: str, ruleset: str
) -> None:
    original = await seed_application(session, program="national", batch="2025", tier="specialized_new")
    original.status = "recognized"
    outcome = await records.open_re_review(
        session,
        data=ReReviewInput(recognition_id=uuid.uuid4(), application_id=original.id, at=at),
        programs={"national": SHIPPED["national"]},
    )
    re_review = await session.get(Application, outcome.application_id)
    assert re_review is not None
    assert (re_review.batch, re_review.ruleset) == (batch, ruleset)


async def test_screening_counts_awards_in_the_3_years_before_the_batch(session: AsyncSession) -> None:
    # A national award in 2026, the year the batch opens, is not "in the last 3 years" (2023-2025); one in
    # 2023 is, though the screening runs in December 2026.
    weak = strong_metrics(rd_institution="none", high_tech_enterprise=False)
    for year in weak["years"]:
        year["rd_expense"] = "0.00"
    for award_year, counted in ((2026, False), (2023, True)):
        metrics = {**weak, "awards": [{"level": "national", "rank": 1, "year": award_year}]}
        application = await seed_application(session, program="national", batch="2026", metrics=metrics)
        application.tier, application.ruleset = "innovative", "national-2026"
        await records.record_screening(session, application_id=application.id, programs=SHIPPED, at=FILED)
        rule = next(r for r in application.screening["rules"] if r["rule"] == "innovative.direct.award")
        assert rule["passed"] is counted, award_year
        assert rule["description"].endswith("(2023-2025)")


# -- the tiers the enterprise holds ----------------------------------------------------------------------


def champion_metrics(revenue: str) -> dict[str, Any]:
    """Single-champion figures with ``revenue`` last year (main product 96% of it)."""
    metrics = strong_metrics(niche_years=12, global_market_rank=2)
    main = f"{float(revenue) * 0.96:.2f}"
    metrics["years"][2].update(revenue=revenue, main_business_revenue=main)
    return metrics


@pytest.mark.parametrize(
    ("revenue", "holds", "passed"),
    [
        ("200000000.00", "active", True),  # an existing little giant: the 200m bar
        ("199999999.99", "active", False),
        ("200000000.00", None, False),  # no little-giant title: the 400m bar
        ("200000000.00", "revoked", False),  # a revoked title is not held
        ("200000000.00", "lapsed", False),  # nor one past its validity
        ("400000000.00", None, True),
    ],
)
async def test_an_existing_little_giant_may_take_the_single_champion_route(
    session: AsyncSession, revenue: str, holds: str | None, passed: bool
) -> None:
    application = await seed_application(session, tier="single_champion", metrics=champion_metrics(revenue))
    if holds == "active":
        await recognition(session, application.uscc)
    elif holds == "revoked":
        await recognition(session, application.uscc, status="revoked", revoked_at=FILED - timedelta(days=1))
    elif holds == "lapsed":
        await recognition(session, application.uscc, valid_until=FILED - timedelta(seconds=1))
    outcome = await records.record_screening(
        session, application_id=application.id, programs=SHIPPED, at=FILED
    )
    rule = next(r for r in application.screening["rules"] if r["rule"] == "single_champion.revenue")
    assert rule["passed"] is passed
    assert outcome.passed is passed
    assert rule["value"].endswith(f"holds little giant: {'yes' if holds == 'active' else 'no'}")


# -- fraud bars ------------------------------------------------------------------------------------------


async def test_a_revocation_records_what_it_was_for(session: AsyncSession) -> None:
    seeded = await seed_application(session)
    fraud = await recognition(session, seeded.uscc, tier="specialized_new")
    other = await recognition(session, seeded.uscc, tier="little_giant")
    # The other first: a revocation for fraud revokes every title still active (tests/workflows/
    # test_fraud_revocation.py), so the other would be revoked for fraud with it.
    for row, revoked_for in ((other, None), (fraud, "fraud")):
        await records.change_recognition(
            session,
            data=RecognitionChange(
                recognition_id=row.id,
                application_id=row.application_id,
                event_key=f"revoke-{row.id}",
                status="revoked",
                actor=ADMIN,
                reason="forged invoices",
                at=FILED,
                revoked_for=revoked_for,
            ),
        )
    assert (fraud.status, fraud.revoked_for) == ("revoked", "fraud")
    assert (other.status, other.revoked_for) == ("revoked", "other")  # a revocation before fraud bars


async def test_a_fraud_revocation_bars_applying_for_the_programs_fraud_bar(session: AsyncSession) -> None:
    seeded = await seed_application(session)
    uscc = seeded.uscc
    revoked_at = datetime(2026, 6, 1, 8, tzinfo=UTC)
    await recognition(session, uscc, status="revoked", revoked_for="fraud", revoked_at=revoked_at)
    national = SHIPPED["national"]  # fraud_bar = "P3Y"
    until = datetime(2029, 6, 1, 8, tzinfo=UTC)
    with pytest.raises(service.FraudBarred) as barred:
        await service.check_not_barred(
            session, uscc=uscc, program=national, now=until - timedelta(microseconds=1)
        )
    assert barred.value.status == 409
    assert "until 2029-06-01T08:00:00+00:00" in barred.value.detail
    assert "revoked for fraud on 2026-06-01" in barred.value.detail
    await service.check_not_barred(session, uscc=uscc, program=national, now=until)  # the bar has ended


async def test_a_revocation_for_another_reason_bars_nothing(session: AsyncSession) -> None:
    seeded = await seed_application(session)
    await recognition(session, seeded.uscc, status="revoked", revoked_for="other", revoked_at=FILED)
    await service.check_not_barred(session, uscc=seeded.uscc, program=SHIPPED["national"], now=FILED)
    read = await file(session, seeded.uscc, batch="summer")
    assert read.status == "screening"


async def test_the_bar_follows_the_latest_fraud_revocation(session: AsyncSession) -> None:
    seeded = await seed_application(session)
    for revoked_at in (datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)):
        await recognition(session, seeded.uscc, status="revoked", revoked_for="fraud", revoked_at=revoked_at)
    with pytest.raises(service.FraudBarred, match="until 2029-01-01"):
        await service.check_not_barred(
            session, uscc=seeded.uscc, program=SHIPPED["national"], now=datetime(2028, 1, 1, tzinfo=UTC)
        )


async def test_a_barred_enterprise_is_refused_with_a_problem_saying_until_when(
    session: AsyncSession, api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    seeded = await seed_application(session)
    uscc = seeded.uscc
    revoked_at = datetime.now(UTC) - timedelta(minutes=1)  # the demo bars for 10 minutes
    await recognition(
        session, uscc, tier="specialized_new", status="revoked", revoked_for="fraud", revoked_at=revoked_at
    )
    await session.commit()  # a savepoint of the test's transaction: the API's sessions see it
    headers = bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc))
    for tier in ("specialized_new", "little_giant"):
        resp = await api_rollback.post(
            "/api/v1/applications",
            headers=headers,
            json={"uscc": uscc, "program": "demo", "tier": tier, "metrics": strong_metrics(), "evidence": []},
        )
        assert resp.status_code == 409, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        problem = resp.json()
        assert problem["type"].endswith("/fraud-bar")
        assert problem["title"] == "Barred from applying after a revocation for fraud"
        until = SHIPPED["demo"].durations.fraud_bar.add_to(revoked_at)
        assert f"until {until.isoformat(timespec='seconds')}" in problem["detail"]


def test_shipped_programs_bar_fraud_for_three_years() -> None:
    for key in ("national", "chongqing-2020"):
        bar = SHIPPED[key].durations.fraud_bar
        assert bar.add_to(date(2026, 2, 28)) == date(2029, 2, 28)
