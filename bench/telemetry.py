"""``telemetry_read_overhead_pct`` and ``telemetry_intake_overhead_pct``: what metrics and traces cost.

Two stacks up side by side in the same run: one with telemetry off (no OTLP endpoint, no metrics port: the
API still counts its requests, which it always does), one with it on - every span exported by OTLP/HTTP to a
local sink that accepts and discards (``sink``, a process of its own), ``/metrics`` served on ports of their
own by the API, the worker and the relay and scraped every 15 s as Prometheus would, the worker's domain
gauges refreshed. On each: the batch intake (bench/run.py's, applications posted 32 at a time until all are
queued; one stack after the other) and the hot read (``GET /applications/{id}`` with wrk, as bench/run.py's
``read_api_rps``; in five turns each). The overhead is the share of throughput lost, clamped at 0 (noise
can make the stack with telemetry faster; the figures behind it are in the note).

    BENCH_SCALE=0.1 .venv/bin/python -m bench.telemetry
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import SCALE, Figure, Figures, batch_intake, scaled, wrk  # noqa: E402
from bench.stack import Stack, process, started  # noqa: E402
from devtools.devstack import free_port  # noqa: E402
from services.auth import Role  # noqa: E402
from services.tasks import alongside  # noqa: E402

GOAL = 10.0  # percent of throughput
SCRAPE_EVERY = 15.0  # seconds, Prometheus' default
# The reads in turns, off and on: on this 2-CPU machine two identical stacks measured 7-10 % apart in
# the same minute, and drift over a minute as much; five short turns each spread it over both alike.
TURNS = 5
SAMPLER = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
SAMPLER_ARG = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "0.1")


@dataclass
class TelemetryStack(Stack):
    """bench/stack.py's stack with settings of its own on top (the telemetry's)."""

    extra: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **self.extra}


class _Unprinted(Figures):
    """bench/run.py's figures, kept here rather than printed: only the overheads are this script's."""

    def add(self, name: str, value: float, unit: str, **_: object) -> None:
        self.items.append(Figure(name, value, unit))


@dataclass
class Throughput:
    intake_per_s: float = 0.0
    reads: int = 0
    read_seconds: float = 0.0
    url: str = ""
    token: str = ""

    @property
    def read_rps(self) -> float:
        return self.reads / self.read_seconds


async def _intake(stack: Stack, applications: int) -> Throughput:
    """bench/run.py's intake; then the hot read's URL, for the application in the middle of the batch."""
    engine = create_async_engine(stack.database_url, pool_size=2)
    figures = _Unprinted()
    try:
        created = await batch_intake(stack, engine, figures, applications)
    finally:
        await engine.dispose()
    uscc, application_id = created[len(created) // 2]
    token = stack.token(Role.enterprise, f"owner-{uscc}", uscc=uscc)
    url = f"{stack.api_url}/api/v1/applications/{application_id}"
    await asyncio.to_thread(wrk, url, 2.0, token)  # warm-up
    return Throughput(figures["batch_intake_per_s"], url=url, token=token)


async def _read(measured: Throughput, seconds: float) -> None:
    rps, _ = await asyncio.to_thread(wrk, measured.url, seconds, measured.token)
    measured.reads += round(rps * seconds)
    measured.read_seconds += seconds


@contextlib.asynccontextmanager
async def _scraping(urls: list[str]) -> AsyncIterator[None]:
    """Every ``/metrics`` read every 15 s while the block runs, as Prometheus would."""

    async def scrape() -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                for url in urls:
                    response = await http.get(url)
                    if response.status_code != 200:
                        raise SystemExit(f"GET {url}: {response.status_code}")
                await asyncio.sleep(SCRAPE_EVERY)

    async with alongside(scrape()):
        yield


async def telemetry_overhead(folder: Path, figures: Figures) -> None:
    """Both stacks up at once (each idle while the other is measured): the intakes one after the other, the
    reads in turns, so that a machine's drift falls on both alike."""
    applications, seconds = scaled(3_000, 20), max(2.0, 15 * SCALE)
    folder.mkdir(parents=True, exist_ok=True)  # the sink's log goes there before either stack makes it
    sink_port, metrics_port = free_port(), free_port()
    on_env = {
        "GIANTFLOW_OTLP_ENDPOINT": f"http://127.0.0.1:{sink_port}",
        # Sampled as the compose stack samples (docker-compose.yml: a tenth of the traces that start here,
        # every trace a caller's traceparent says is sampled), unless the environment says otherwise.
        "OTEL_TRACES_SAMPLER": SAMPLER,
        "OTEL_TRACES_SAMPLER_ARG": SAMPLER_ARG,
        # The API's port; the worker's and the relay's are the next two (devtools/devstack.py).
        "GIANTFLOW_METRICS_PORT": str(metrics_port),
    }
    scraped = [f"http://127.0.0.1:{metrics_port + n}/metrics" for n in range(3)]
    with (
        process(
            [sys.executable, "-m", "bench.telemetry", "sink", str(sink_port)],
            env={"PYTHONPATH": str(ROOT)},
            ready_url=f"http://127.0.0.1:{sink_port}/",
            log=folder / "otlp-sink.log",
        ),
        started(TelemetryStack(folder / "off", extra={})) as plain,
        started(TelemetryStack(folder / "on", extra=on_env)) as observed,
    ):
        async with _scraping(scraped):
            off = await _intake(plain, applications)
            on = await _intake(observed, applications)
            for _ in range(TURNS):
                await _read(off, seconds / TURNS)
                await _read(on, seconds / TURNS)
        exported = httpx.get(f"http://127.0.0.1:{sink_port}/").text
    sampler = SAMPLER + (f" {SAMPLER_ARG}" if "ratio" in SAMPLER else "")
    read = max(0.0, 100 * (off.read_rps - on.read_rps) / off.read_rps)
    intake = max(0.0, 100 * (off.intake_per_s - on.intake_per_s) / off.intake_per_s)
    figures.add(
        "telemetry_read_overhead_pct",
        read,
        "%",
        goal=f"<= {GOAL:g}",
        met=read <= GOAL,
        note=f"GET /applications/{{id}}: {off.read_rps:.0f} requests/s without telemetry, {on.read_rps:.0f} "
        f"with spans exported (OTLP/HTTP; sampler {sampler}) and /metrics served and scraped",
    )
    figures.add(
        "telemetry_intake_overhead_pct",
        intake,
        "%",
        goal=f"<= {GOAL:g}",
        met=intake <= GOAL,
        note=f"{applications} applications: {off.intake_per_s:.1f}/s without telemetry, "
        f"{on.intake_per_s:.1f}/s with it; the sink received {exported}",
    )


# --- the OTLP sink -----------------------------------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    """Accepts every OTLP/HTTP export (POST /v1/traces) and drops it; GET / tells how many it took."""

    exports = 0
    received = 0

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        _Sink.exports += 1
        _Sink.received += length
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = f"{_Sink.exports} exports ({_Sink.received / 2**20:.1f} MiB)".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def sink(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Sink).serve_forever()


def main() -> int:
    if sys.argv[1:2] == ["sink"]:
        sink(int(sys.argv[2]))
        return 0
    figures = Figures()
    folder = Path(tempfile.mkdtemp(prefix="giantflow-bench-telemetry-"))
    try:
        asyncio.run(telemetry_overhead(folder, figures))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for figure in figures.items:
        print(f"  {figure.name}: {figure.note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
