"""``console_queue_p95_ms`` and ``console_application_p95_ms``: the staff console's two busiest pages, as a
municipal reviewer whose queue holds the 10,000 open tasks the intake leaves (``BENCH_SCALE=1``).

Server time, as the service reports it in each answer's ``Server-Timing: app;dur=…`` header (from the request
reaching the service to its answer starting): one browser's worth of load, one request at a time, signed in
with the console's own session cookie. The queue page is its first page, 50 rows by due date with the counts
of the whole queue; the application page is a different application each time (so the view is rendered, not
served from any cache), with its figures, screening, evidence, history and decision form.
"""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

import httpx

from bench.journey import CITY
from bench.stack import Stack
from services.auth import CurrentUser, Role
from services.console import session as sessions

if TYPE_CHECKING:
    from bench.run import Figures

SERVER_TIMING = re.compile(r"app;dur=([\d.]+)")
WARMUP = 10


def server_ms(response: httpx.Response) -> float:
    if response.status_code != 200:
        raise SystemExit(f"GET {response.request.url.path}: {response.status_code} {response.text[:300]}")
    found = SERVER_TIMING.search(response.headers.get("server-timing", ""))
    if found is None:
        raise SystemExit(f"GET {response.request.url.path}: no Server-Timing header")
    return float(found.group(1))


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def console_pages(
    stack: Stack, figures: Figures, created: list[tuple[str, str]], *, requests: int
) -> None:
    reviewer = CurrentUser(role=Role.reviewer, sub="console-bench", level="municipal", region=CITY)
    cookie, _ = sessions.encode(stack.settings, reviewer)
    async with httpx.AsyncClient(
        base_url=stack.api_url,
        cookies={sessions.COOKIE: cookie},
        timeout=30,
        headers={"Accept-Language": "en"},
    ) as http:
        first = await http.get("/console/reviews")
        server_ms(first)
        rows = first.text.count("<tr") - 1
        for _ in range(WARMUP):
            server_ms(await http.get("/console/reviews"))
        queue = [server_ms(await http.get("/console/reviews")) for _ in range(requests)]
        figures.add(
            "console_queue_p95_ms",
            p95(queue),
            "ms",
            goal="<= 150",
            met=p95(queue) <= 150,
            note=f"GET /console/reviews as a municipal reviewer ({CITY}): {rows} rows of "
            f"{len(created)} open tasks, {requests} requests one at a time, Server-Timing",
        )
        ids = [application_id for _, application_id in created]
        random.Random(7).shuffle(ids)
        for application_id in ids[:WARMUP]:
            server_ms(await http.get(f"/console/applications/{application_id}"))
        measured = [ids[(WARMUP + n) % len(ids)] for n in range(requests)]  # all different at full scale
        pages = [
            server_ms(await http.get(f"/console/applications/{application_id}"))
            for application_id in measured
        ]
        figures.add(
            "console_application_p95_ms",
            p95(pages),
            "ms",
            goal="<= 150",
            met=p95(pages) <= 150,
            note=f"GET /console/applications/{{id}}: {len(pages)} different applications, one at a time",
        )
