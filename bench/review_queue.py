"""``review_queue_p99_ms`` and ``review_queue_ratio``: a provincial reviewer's first page of its queue,
filtered and sorted (``GET /review-tasks?tier=specialized_new&assignee=none``, by due date, 50 items, with the
counts of the whole queue), wrk with 16 connections like ``read_api``; the ratio is its throughput over the
bare endpoint's (``bare_api_rps``).

Set-up, not timed: beside the applications the intake left waiting at the municipal stage of one district,
a filing season's worth of files further on, written in bulk: applications at the provincial stage in the
districts of Chongqing (the measured reviewer's province, 500000) and in other provinces, and at the national
stage across the country, each with the tasks its earlier stages closed. One in ten is past its due date and
escalated to the program's backup group; one in twenty-five is claimed by a reviewer, half of those claims
lapsed. No workflow runs for them (the benchmark only reads them). Then the tables are vacuumed and analysed,
as autovacuum would have done by then. Afterwards they are deleted again: the benchmarks that follow see the
stack as they would have without this one.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.journey import BATCH, PROGRAM
from bench.stack import Stack
from devtools.seeding import random_uscc
from services.applications.models import Application, Enterprise, ReviewTask
from services.auth import Role
from services.vocabulary import LEVELS, Level

if TYPE_CHECKING:
    from bench.run import Figures

# Open tasks at full scale, by where they wait (the intake's municipal tasks come on top).
FULL = {"provincial_here": 6_000, "provincial_elsewhere": 6_000, "national": 2_000}
PROVINCE = "500000"
HERE = [f"5001{n:02d}" for n in range(1, 21)] + [f"5001{n}" for n in range(51, 57)]  # Chongqing's districts
ELSEWHERE = "110105 110108 310104 310115 320102 330106 420106 440106 440305 510104".split()
PLACES = "Yuzhong Jiangbei Shapingba Jiulongpo Nanan Beibei Yubei Banan Liangjiang".split()
TRADES = "Precision Intelligent Advanced Green Digital Micro Smart Bio".split()
GOODS = "Machinery Electronics Materials Instruments Parts Software Valves Sensors".split()
BACKUP = "bench-backup-reviewers"
REVIEWER = "provincial-reviewer-0"  # the measured caller; it holds some of the claims
SEEDER = "bench-review-queue"  # what the seeded enterprises and applications are registered by, to go again
URL = "/api/v1/review-tasks?tier=specialized_new&assignee=none&limit=50"


def _task(application_id: uuid.UUID, stage: str, region: str, **values: Any) -> dict[str, Any]:
    """A review task's row, every column named (the copied ones are the trigger's)."""
    row: dict[str, Any] = {
        "overdue": False,
        "escalated_to": None,
        "decision": None,
        "decided_by": None,
        "closed_at": None,
        "claimed_by": None,
        "claim_expires_at": None,
    }
    row.update(id=uuid.uuid4(), application_id=application_id, stage=stage, region_code=region, **values)
    return row


def _rows(scale: float, rng: random.Random) -> tuple[list[dict[str, Any]], ...]:
    """Enterprises, applications and review tasks (open and already decided) to write."""
    now = datetime.now(UTC)
    enterprises: list[dict[str, Any]] = []
    applications: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    counts = {where: max(30, round(full * scale)) for where, full in FULL.items()}
    n = 0
    for where, count in counts.items():
        stage: Level = "national" if where == "national" else "provincial"
        for _ in range(count):
            n += 1
            region = rng.choice(ELSEWHERE if where == "provincial_elsewhere" else HERE)
            if where == "national":
                region = rng.choice(HERE + ELSEWHERE)
            uscc = random_uscc(region, rng)
            name = f"{rng.choice(PLACES)} {rng.choice(TRADES)} {rng.choice(GOODS)} Co., Ltd. {n}"
            enterprises.append(
                {
                    "uscc": uscc,
                    "name": name,
                    "region_code": region,
                    "industry": "machinery",
                    "founded_on": date(2010, 1, 1),
                    "registered_by": SEEDER,
                }
            )
            tier = "little_giant" if stage == "national" else rng.choice(["innovative", "specialized_new"])
            filed = now - timedelta(days=rng.uniform(20, 60))
            application_id = uuid.uuid4()
            applications.append(
                {
                    "id": application_id,
                    "uscc": uscc,
                    "program": PROGRAM if n % 10 < 7 else "national",
                    "tier": tier,
                    "batch": BATCH,
                    "ruleset": "national-2022",
                    "region_code": region,
                    "status": "in_review",
                    "stage": stage,
                    "metrics": {},
                    "submitted_by": SEEDER,
                    "workflow_started": True,
                    "created_at": filed,
                    "updated_at": filed,
                }
            )
            for earlier in LEVELS[: LEVELS.index(stage)]:  # the stages already decided
                tasks.append(
                    _task(
                        application_id,
                        earlier,
                        region,
                        status="decided",
                        due_at=filed + timedelta(days=30),
                        decision="approve",
                        decided_by=f"{earlier}-reviewer",
                        created_at=filed,
                        closed_at=filed + timedelta(days=5),
                    )
                )
            due = now + timedelta(days=rng.uniform(-4, 36))  # one in ten past due, escalated
            claimed = rng.random() < 0.04
            tasks.append(
                _task(
                    application_id,
                    stage,
                    region,
                    status="open",
                    due_at=due,
                    overdue=due <= now,
                    escalated_to=BACKUP if due <= now else None,
                    created_at=filed + timedelta(days=5),
                    claimed_by=f"provincial-reviewer-{rng.randrange(12)}" if claimed else None,
                    claim_expires_at=now + timedelta(hours=rng.choice([-2, 2])) if claimed else None,
                )
            )
    return enterprises, applications, tasks


async def _insert(engine: AsyncEngine, model: Any, rows: list[dict[str, Any]], chunk: int = 500) -> None:
    """A few hundred rows per transaction, as files arrive over a season rather than in one (the counts'
    rows, updated by every task, are pruned between them as they would be)."""
    for start in range(0, len(rows), chunk):
        async with engine.begin() as conn:
            await conn.execute(insert(model), rows[start : start + chunk])


async def _seed(engine: AsyncEngine, *, scale: float) -> int:
    """Write the files; returns the number of open tasks in the measured reviewer's queue."""
    enterprises, applications, tasks = _rows(scale, random.Random(20261201))
    await _insert(engine, Enterprise, enterprises)
    await _insert(engine, Application, applications)
    await _insert(engine, ReviewTask, tasks)  # the triggers copy each application's fields, count the tasks
    async with engine.begin() as conn:
        queued = await conn.scalar(
            text(
                "SELECT count(*) FROM review_tasks "
                "WHERE status = 'open' AND stage = 'provincial' AND region_code LIKE '50%'"
            )
        )
    async with engine.connect() as connection:
        conn = await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("enterprises", "applications", "review_tasks", "review_queue_counts"):
            await conn.execute(text(f"VACUUM ANALYZE {table}"))
    return int(queued or 0)


async def review_queue(
    stack: Stack, figures: Figures, engine: AsyncEngine, *, scale: float, seconds: float
) -> None:
    from bench.run import wrk  # the load generator every read benchmark uses (run.py calls this module)

    queued = await _seed(engine, scale=scale)
    token = stack.token(Role.reviewer, REVIEWER, level="provincial", region=PROVINCE)
    url = f"{stack.api_url}{URL}"
    async with httpx.AsyncClient(timeout=30) as http:
        first = await http.get(url, headers={"Authorization": f"Bearer {token}"})
    if first.status_code != 200:
        raise SystemExit(f"GET /review-tasks: {first.status_code} {first.text[:300]}")
    page = first.json()
    if page["counts"]["total"] != queued or not page["items"]:
        raise SystemExit(f"GET /review-tasks: {queued} tasks queued, the page says {page['counts']}")
    warmup = min(3.0, seconds / 3)
    await asyncio.to_thread(wrk, url, warmup, token)
    rps, p99 = await asyncio.to_thread(wrk, url, seconds, token)
    figures.add(
        "review_queue_p99_ms",
        p99,
        "ms",
        goal="<= 25",
        met=p99 <= 25,
        note=f"GET {URL} as a provincial reviewer ({PROVINCE}): {len(page['items'])} items of the "
        f"{queued} tasks in its queue, with their counts, {rps:.0f} requests/s",
    )
    ratio = rps / figures["bare_api_rps"]
    figures.add("review_queue_ratio", ratio, "", goal=">= 0.3", met=ratio >= 0.3)
    await _unseed(engine)


async def _unseed(engine: AsyncEngine) -> None:
    """Remove what ``_seed`` wrote, so that the benchmarks after this one find the stack as they would have
    (payouts_inbox grants every registered enterprise a line)."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "DELETE FROM review_tasks WHERE application_id IN "
                "(SELECT id FROM applications WHERE submitted_by = :seeder)"
            ),
            {"seeder": SEEDER},
        )
        await conn.execute(text("DELETE FROM applications WHERE submitted_by = :seeder"), {"seeder": SEEDER})
        await conn.execute(text("DELETE FROM enterprises WHERE registered_by = :seeder"), {"seeder": SEEDER})
