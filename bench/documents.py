"""Evidence downloads from the running API: ``document_download_mib_s``, one 10 MiB file fetched over and over
by one client (``GET /documents/{id}/content``, the owner's token), and ``document_download_rss_growth_mib``,
how far the API process's resident memory rises above where it stood before them, sampled every 10 ms while
they run. The API streams the file from disk in chunks (services/files.py), so the second stays near zero
whatever the file's size."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import httpx
import psutil

from bench.journey import DISTRICT
from devtools.seeding import random_uscc
from services.auth import Role

if TYPE_CHECKING:
    from bench.run import Figures
    from bench.stack import Stack

SIZE = 10 * 2**20
SCALE = float(os.environ.get("BENCH_SCALE", "1"))


async def _upload(http: httpx.AsyncClient, uscc: str) -> str:
    registered = await http.post(
        "/api/v1/enterprises",
        json={
            "uscc": uscc,
            "name": f"Bench documents {uscc}",
            "region_code": DISTRICT,
            "industry": "machinery",
            "founded_on": "2012-03-01",
        },
    )
    if registered.status_code != 201:
        raise SystemExit(f"POST /enterprises: {registered.status_code} {registered.text[:300]}")
    content = b"%PDF-1.7\n" + os.urandom(SIZE - 9)
    uploaded = await http.post(
        "/api/v1/documents",
        data={"kind": "financial_statements_3y"},
        files={"file": ("statements.pdf", content, "application/pdf")},
    )
    if uploaded.status_code != 201:
        raise SystemExit(f"POST /documents: {uploaded.status_code} {uploaded.text[:300]}")
    document_id: str = uploaded.json()["id"]
    return document_id


async def _download(http: httpx.AsyncClient, url: str) -> int:
    received = 0
    async with http.stream("GET", url) as response:
        if response.status_code != 200:
            raise SystemExit(f"GET {url}: {response.status_code}")
        async for chunk in response.aiter_raw():
            received += len(chunk)
    if received != SIZE:
        raise SystemExit(f"GET {url}: {received} bytes, expected {SIZE}")
    return received


async def _highest_rss(process: psutil.Process, stop: asyncio.Event) -> int:
    highest = 0
    while not stop.is_set():
        highest = max(highest, process.memory_info().rss)
        await asyncio.sleep(0.01)
    return highest


async def document_downloads(stack: Stack, figures: Figures) -> None:
    rounds = max(5, round(100 * SCALE))
    uscc = random_uscc(DISTRICT)
    token = stack.token(Role.enterprise, f"owner-{uscc}", uscc=uscc)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=60) as http:
        url = f"/api/v1/documents/{await _upload(http, uscc)}/content"
        for _ in range(3):  # warm-up: connections, the page cache, the allocator's first arenas
            await _download(http, url)
        api = stack.part("api")
        before = api.memory_info().rss
        stop = asyncio.Event()
        sampler = asyncio.create_task(_highest_rss(api, stop))
        received = 0
        started = time.perf_counter()
        for _ in range(rounds):
            received += await _download(http, url)
        elapsed = time.perf_counter() - started
        stop.set()
        highest = await sampler
    rate = received / 2**20 / elapsed
    figures.add(
        "document_download_mib_s",
        rate,
        "MiB/s",
        goal=">= 200",
        met=rate >= 200,
        note=f"{rounds} downloads of a 10 MiB evidence file, one at a time, in {elapsed:.1f} s",
    )
    growth = max(0, highest - before) / 2**20
    figures.add(
        "document_download_rss_growth_mib",
        growth,
        "MiB",
        goal="<= 16",
        met=growth <= 16,
        note=f"the API's resident memory during those downloads above the {before / 2**20:.0f} MiB before",
    )
