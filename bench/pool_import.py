"""``pool_import_rows_per_s``: a 10,000-row cultivation pool file (CSV, every row valid, new members) imported
through the API - upload, read, every row checked (USCC check character, region, tier, duplicates) and
stored - from the request leaving the client to the job reading ``finished``. Goal: >= 500 rows/s.

    .venv/bin/python -m bench.pool_import   # alone: an embedded PostgreSQL and the API in this process
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import TYPE_CHECKING

import httpx

from devtools.seeding import random_uscc

if TYPE_CHECKING:
    from bench.run import Figures

ROWS = 10_000
PROGRAM = "demo"
GOAL = 500.0


def pool_file(rows: int) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["统一社会信用代码", "名称", "地区", "行业", "目标梯度", "备注"])
    for n in range(rows):
        writer.writerow(
            [random_uscc("500103"), f"培育企业 {n}", "500103", "通用设备制造", "specialized_new", ""]
        )
    return out.getvalue().encode("gbk")  # the encoding most such files come in


async def import_rate(
    api: httpx.AsyncClient, admin_token: str, rows: int = ROWS, program: str = PROGRAM
) -> tuple[float, float]:
    """(rows per second, seconds) of one import of a fresh ``rows``-row file through ``api`` (base URL the
    API's root)."""
    content = pool_file(rows)
    headers = {"Authorization": f"Bearer {admin_token}"}
    started = time.perf_counter()
    resp = await api.post(
        f"/api/v1/programs/{program}/pool-imports",
        headers=headers,
        files={"file": ("pool.csv", content, "text/csv")},
    )
    if resp.status_code != 202:
        raise RuntimeError(f"pool import refused: {resp.status_code} {resp.text[:300]}")
    url = f"/api/v1/pool-imports/{resp.json()['id']}"
    while True:
        job = (await api.get(url, headers=headers)).json()
        if job["status"] in ("finished", "failed"):
            break
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    if job["status"] != "finished" or job["accepted"] != rows:
        raise RuntimeError(f"pool import did not store every row: {job}")
    return rows / seconds, seconds


def add_figure(figures: Figures, rate: float, seconds: float, rows: int) -> None:
    figures.add(
        "pool_import_rows_per_s",
        rate,
        "rows/s",
        goal=f">= {GOAL:.0f}",
        met=rate >= GOAL,
        note=f"{rows:,} rows (GBK CSV, Chinese headers) uploaded, checked and stored in {seconds:.1f} s",
    )


async def pool_import(
    stack_api_url: str, token: str, figures: Figures, rows: int = ROWS, program: str = "bench"
) -> None:
    """The figure against a running stack (bench/run.py: the bench program, specialized_new in 500000)."""
    async with httpx.AsyncClient(base_url=stack_api_url, timeout=120) as api:
        rate, seconds = await import_rate(api, token, rows, program)
    add_figure(figures, rate, seconds, rows)


async def _alone() -> None:
    from bench.run import Figures
    from bench.stack import api_in_process

    figures = Figures()
    async with api_in_process("giantflow-bench-pool-") as (api, token):
        rate, seconds = await import_rate(api, token)
    add_figure(figures, rate, seconds, ROWS)
    for figure in figures.items:
        print(f"  {figure.name}: goal {figure.goal}, {figure.note}", flush=True)


if __name__ == "__main__":
    asyncio.run(_alone())
