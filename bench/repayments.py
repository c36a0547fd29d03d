"""``repayment_p99_ms``: a drawdown repayment, from the request leaving the client to its ledger posting being
committed (seen by another connection), ``CLIENTS`` enterprises repaying at once, each its own drawdown in
parts of 10.00.

Set-up, not timed: each enterprise takes the whole way to its credit line (bench/journey.py), draws
``10.00 x`` its share of the repayments, and finance approves it; the bank pays it through the worker.

    BENCH_SCALE=0.05 .venv/bin/python -m bench.repayments   # alone, on a stack of its own
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.journey import DISTRICT, Journey
from bench.stack import Stack
from devtools.seeding import random_uscc
from services.credit.models import DrawdownRepayment

if TYPE_CHECKING:
    from bench.run import Figures

CLIENTS = 4
PART = "10.00"


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


async def _client(stack: Stack, engine: AsyncEngine, http: httpx.AsyncClient, count: int) -> list[float]:
    journey = Journey(http, stack.token, random_uscc(DISTRICT))
    line = await journey.to_credit_line()
    drawdown_id = await journey.request_drawdown(line["id"], f"{10 * count}.00")
    await journey.approve_drawdown(drawdown_id)
    await journey.wait_disbursed(drawdown_id)
    latencies = []
    for _ in range(count):
        sent = time.perf_counter()
        created = await journey.call(
            "POST",
            f"/drawdowns/{drawdown_id}/repayments",
            journey.owner,
            201,
            key=f"bench-repay-{uuid.uuid4()}",
            json={"amount": PART},
        )
        posted = select(DrawdownRepayment.ledger_entry_id).where(
            DrawdownRepayment.id == uuid.UUID(created["id"])
        )
        async with engine.connect() as conn:
            while (await conn.scalar(posted)) is None:  # committed before the answer: never loops in practice
                await conn.rollback()
                await asyncio.sleep(0.002)
        latencies.append(1000 * (time.perf_counter() - sent))
    body = await journey.call("GET", f"/drawdowns/{drawdown_id}", journey.owner, 200)
    if body["status"] != "repaid":
        journey.fail(f"drawdown {drawdown_id} is {body['status']} after its last repayment")
    return latencies


async def repayments(stack: Stack, figures: Figures, engine: AsyncEngine, *, count: int) -> None:
    """``count`` repayments in all, ``CLIENTS`` at a time (one per enterprise, each on its own line)."""
    share = max(1, count // CLIENTS)
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http:
        found = await asyncio.gather(*(_client(stack, engine, http, share) for _ in range(CLIENTS)))
    latencies = [ms for client in found for ms in client]
    p50, p99 = _pct(latencies, 50), _pct(latencies, 99)
    figures.add(
        "repayment_p99_ms",
        p99,
        "ms",
        goal="<= 250",
        met=p99 <= 250,
        note=f"{len(latencies)} repayments, {CLIENTS} enterprises at once; p50 {p50:.1f} ms",
    )


def main() -> int:
    """The figure alone, on a stack of its own (``make bench`` runs it with the others)."""
    import tempfile

    from bench.run import Figures, scaled
    from bench.stack import running

    figures = Figures()
    with (
        tempfile.TemporaryDirectory(prefix="giantflow-bench-repay-") as folder,
        running(Path(folder) / "var") as stack,
    ):

        async def run() -> None:
            engine = create_async_engine(stack.database_url, pool_size=CLIENTS)
            try:
                await repayments(stack, figures, engine, count=scaled(400, 8))
            finally:
                await engine.dispose()

        asyncio.run(run())
    for figure in figures.items:
        print(f"  {figure.name}: goal {figure.goal}, {figure.note}", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("BENCH_SCALE", "0.05")
    raise SystemExit(main())
