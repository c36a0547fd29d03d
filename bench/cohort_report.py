"""``cohort_report_ms``: the full cohort report of the bench program as JSON (``GET
/api/v1/programs/bench/report?batch=bench``, as an admin: every section - the funnel, screening pass rate
per rule, review-time percentiles and breaches, recognitions by region and industry, benefits, money, the
plan), the p50 of several runs after one warm-up. Goal: <= 2,000 ms over 10,000 applications.

In ``make bench`` (bench/run.py) it reads the program the intake left: 10,000 applications (at
BENCH_SCALE=1) screened and waiting at the municipal stage.

    BENCH_SCALE=0.1 .venv/bin/python -m bench.cohort_report   # alone: embedded PostgreSQL, the API in process

Alone it writes, in bulk and untimed, a filing season with every outcome: 10,000 x BENCH_SCALE applications
of the bench program across Chongqing's districts and other provinces and eight industries - one in ten
ineligible, the rest through the municipal and provincial stages (decisions after 1 to 40 days, some late,
some still open, some rejected), on notice or recognised (four in ten), each recognition with its credit
line, one in five of those with a paid drawdown, part repaid - then measures the same request.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from devtools.seeding import random_uscc, strong_metrics

if TYPE_CHECKING:
    from bench.run import Figures

PROGRAM, BATCH = "bench", "bench"
URL = f"/api/v1/programs/{PROGRAM}/report?batch={BATCH}"
RUNS = 7
GOAL_MS = 2000.0
FULL = 10_000
REGIONS = [f"5001{n:02d}" for n in range(1, 21)] + "110105 310104 320102 330106 440305 510104".split()
INDUSTRIES = "machinery electronics materials instruments software chemicals textiles medical".split()
RULES = [f"rule_{n:02d}" for n in range(12)]
SEEDER = "bench-cohort-report"


async def measure(api: httpx.AsyncClient, token: str, runs: int = RUNS) -> tuple[float, dict[str, Any]]:
    """(p50 milliseconds, the report) of ``runs`` requests after a warm-up one."""
    headers = {"Authorization": f"Bearer {token}"}
    first = await api.get(URL, headers=headers)
    if first.status_code != 200:
        raise SystemExit(f"GET {URL}: {first.status_code} {first.text[:300]}")
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = await api.get(URL, headers=headers)
        times.append(1000 * (time.perf_counter() - started))
        if response.status_code != 200:
            raise SystemExit(f"GET {URL}: {response.status_code}")
    report: dict[str, Any] = first.json()
    return statistics.median(times), report


def add_figure(figures: Figures, p50: float, report: dict[str, Any]) -> None:
    applied = sum(row["applied"] for row in report["funnel"])
    recognized = sum(row["recognized"] for row in report["funnel"])
    figures.add(
        "cohort_report_ms",
        p50,
        "ms",
        goal=f"<= {GOAL_MS:.0f}",
        met=p50 <= GOAL_MS,
        note=f"GET {URL} as an admin, p50 of {RUNS} after a warm-up: {applied:,} applications, "
        f"{recognized:,} recognised, every section",
    )


async def cohort_report(stack_api_url: str, token: str, figures: Figures) -> None:
    """The figure against a running stack (bench/run.py, after the intake)."""
    async with httpx.AsyncClient(base_url=stack_api_url, timeout=120) as api:
        p50, report = await measure(api, token)
    add_figure(figures, p50, report)


# --- alone: a season written in bulk ---------------------------------------------------------------------


def _screening(rng: random.Random, passed: bool) -> dict[str, Any]:
    rules = [
        {"rule": rule, "description": rule, "value": "", "threshold": "", "points": None, "passed": True}
        for rule in RULES
    ]
    if not passed:
        for index in rng.sample(range(len(RULES)), 2):
            rules[index]["passed"] = False
    return {"ruleset": "national-2022", "tier": "specialized_new", "passed": passed, "rules": rules}


def season(count: int, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Rows per table of ``count`` applications with every outcome."""
    rows: dict[str, list[dict[str, Any]]] = {
        name: []
        for name in (
            "enterprises",
            "applications",
            "review_tasks",
            "transitions",
            "recognitions",
            "benefits",
            "credit_lines",
            "drawdowns",
            "disbursements",
        )
    }
    metrics = strong_metrics()
    start = datetime(2026, 1, 10, tzinfo=UTC)
    day = timedelta(days=1)
    for n in range(count):
        region = rng.choice(REGIONS)
        uscc = random_uscc(region, rng)
        filed = start + day * rng.uniform(0, 30)
        rows["enterprises"].append(
            {
                "uscc": uscc,
                "name": f"Cohort {n}",
                "region_code": region,
                "industry": rng.choice(INDUSTRIES),
                "founded_on": date(2010, 1, 1),
                "registered_by": SEEDER,
            }
        )
        fate = rng.random()
        eligible = fate >= 0.1
        app_id = uuid.uuid4()
        status, stage = "ineligible", None
        opened = filed
        if eligible:
            for level in ("municipal", "provincial"):
                if fate < {"municipal": 0.25, "provincial": 0.5}[level]:  # still open at this level
                    status, stage = "in_review", level
                    rows["review_tasks"].append(_task(app_id, level, region, opened, None))
                    break
                if fate < {"municipal": 0.3, "provincial": 0.55}[level]:  # rejected here
                    status = "rejected"
                    rows["review_tasks"].append(
                        _task(app_id, level, region, opened, rng.uniform(1, 40), "reject")
                    )
                    break
                days = rng.uniform(1, 40)
                rows["review_tasks"].append(_task(app_id, level, region, opened, days))
                opened += day * days
            else:
                status = "public_notice" if fate < 0.6 else "recognized"
                rows["transitions"].append(
                    {
                        "application_id": app_id,
                        "event_key": f"{SEEDER}-{app_id}",
                        "actor": "system",
                        "role": "system",
                        "action": "notice",
                        "from_status": "in_review",
                        "to_status": "public_notice",
                        "at": opened,
                    }
                )
        rows["applications"].append(
            {
                "id": app_id,
                "uscc": uscc,
                "program": PROGRAM,
                "tier": "specialized_new",
                "batch": BATCH,
                "ruleset": "national-2022",
                "region_code": region,
                "status": status,
                "stage": stage,
                "metrics": metrics,
                "screening": _screening(rng, eligible),
                "submitted_by": SEEDER,
                "workflow_started": True,
                "created_at": filed,
                "updated_at": filed,
            }
        )
        if status == "recognized":
            _recognise(rows, rng, app_id, uscc, opened + 7 * day)
    return rows


def _task(
    app_id: uuid.UUID,
    stage: str,
    region: str,
    opened: datetime,
    days: float | None,
    decision: str = "approve",
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "application_id": app_id,
        "stage": stage,
        "region_code": region,
        "status": "open" if days is None else "decided",
        "due_at": opened + timedelta(days=30),
        "overdue": False,
        "escalated_to": None,
        "decision": None if days is None else decision,
        "decided_by": None if days is None else f"{stage}-reviewer",
        "created_at": opened,
        "closed_at": None if days is None else opened + timedelta(days=days),
        "claimed_by": None,
        "claim_expires_at": None,
    }


def _recognise(
    rows: dict[str, list[dict[str, Any]]], rng: random.Random, app_id: uuid.UUID, uscc: str, at: datetime
) -> None:
    recognition_id, line_id = uuid.uuid4(), uuid.uuid4()
    limit = Decimal("4000000.00")
    rows["recognitions"].append(
        {
            "id": recognition_id,
            "application_id": app_id,
            "uscc": uscc,
            "program": PROGRAM,
            "tier": "specialized_new",
            "certificate_no": f"BENCH-{recognition_id.hex[:16]}",
            "valid_from": at,
            "valid_until": at + timedelta(days=3 * 365),
            "status": "active",
        }
    )
    rows["benefits"].append(
        {
            "id": uuid.uuid4(),
            "recognition_id": recognition_id,
            "uscc": uscc,
            "program": PROGRAM,
            "tier": "specialized_new",
            "kind": "credit_line",
            "status": "active",
            "amount": limit,
        }
    )
    drawn = Decimal(rng.randrange(1, 20) * 100_000) if rng.random() < 0.2 else Decimal(0)
    repaid = (drawn / 2).quantize(Decimal("0.01")) if drawn and rng.random() < 0.5 else Decimal(0)
    rows["credit_lines"].append(
        {
            "id": line_id,
            "recognition_id": recognition_id,
            "uscc": uscc,
            "program": PROGRAM,
            "tier": "specialized_new",
            "credit_limit": limit,
            "reserved": Decimal(0),
            "drawn": drawn,
            "repaid": repaid,
            "status": "active",
        }
    )
    if drawn:
        drawdown_id = uuid.uuid4()
        rows["drawdowns"].append(
            {
                "id": drawdown_id,
                "credit_line_id": line_id,
                "uscc": uscc,
                "program": PROGRAM,
                "tier": "specialized_new",
                "amount": drawn,
                "repaid": repaid,
                "status": "disbursed",
                "requested_by": uscc,
                "required_approvals": 1,
                "approval_deadline": at + timedelta(days=10),
                "workflow_started": True,
            }
        )
        rows["disbursements"].append(
            {
                "id": uuid.uuid4(),
                "kind": "drawdown",
                "drawdown_id": drawdown_id,
                "uscc": uscc,
                "program": PROGRAM,
                "tier": "specialized_new",
                "amount": drawn,
                "status": "paid",
                "bank_key": f"{SEEDER}-{drawdown_id}",
                "bank_reference": "BENCH",
            }
        )


async def seed(engine: AsyncEngine, count: int) -> None:
    """Write the season (not timed), then vacuum and analyse as autovacuum would have by then."""
    from services.applications.models import Application, Enterprise, Recognition, ReviewTask, Transition
    from services.credit.models import Benefit, CreditLine, Disbursement, Drawdown

    models = {
        "enterprises": Enterprise,
        "applications": Application,
        "review_tasks": ReviewTask,
        "transitions": Transition,
        "recognitions": Recognition,
        "benefits": Benefit,
        "credit_lines": CreditLine,
        "drawdowns": Drawdown,
        "disbursements": Disbursement,
    }
    rows = season(count, random.Random(20261201))
    for table, model in models.items():
        for start in range(0, len(rows[table]), 1000):
            async with engine.begin() as conn:
                await conn.execute(insert(model), rows[table][start : start + 1000])
    async with engine.connect() as connection:
        conn = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in models:
            await conn.execute(text(f"VACUUM ANALYZE {table}"))


async def _alone() -> None:
    from bench.run import Figures
    from bench.stack import PROGRAMS, api_in_process
    from services.db import create_engine

    scale = float(os.environ.get("BENCH_SCALE", "1"))
    count = max(100, round(FULL * scale))

    async def seeded(database_url: str) -> None:
        engine = create_engine(database_url)
        try:
            await seed(engine, count)
        finally:
            await engine.dispose()

    figures = Figures()
    async with api_in_process("giantflow-bench-report-", programs_dir=PROGRAMS, prepare=seeded) as (
        api,
        token,
    ):
        p50, report = await measure(api, token)
    add_figure(figures, p50, report)
    for figure in figures.items:
        print(f"  {figure.name}: goal {figure.goal}, {figure.note}", flush=True)


if __name__ == "__main__":
    asyncio.run(_alone())
