"""`make chaos`: a seeded chaos run of drawdowns and disbursements against real processes.

    .venv/bin/python bench/chaos.py --seed 7 --disbursements 1000

Set-up, all on loopback with free ports in a temporary data folder: an embedded PostgreSQL, `giantflow
migrate`, the Temporal dev server (SQLite file), the bank simulator with seeded faults (500s, hangs past the
worker's timeout, answers lost after commit, duplicate deliveries, one closed account), two `giantflow api`
and two `giantflow worker` processes, each in its own process group. The enterprises and their credit lines
come through the real path: registration, evidence, application, screening, municipal and provincial approval,
public notice, recognition, and the benefits workflow opening the line (a generated program file with a
3 s notice and a long validity and approval deadline, so nothing expires during the run).

Load: every drawdown is requested with an Idempotency-Key and approved by finance (two distinct officers above
the program's threshold; a few are rejected), by concurrent clients that retry timeouts, 5xx, 429, connection
errors and "still being processed" with the SAME key, spread over both APIs like a load balancer would. A
chaos thread with its own seeded RNG SIGKILLs a worker every few seconds and an API now and then; a supervisor
restarts whatever died. The servers crash as well, at seeded points of the load: the Temporal dev server and
PostgreSQL are each SIGKILLed (the whole process group) and started again a few seconds later on the same
SQLite file or data folder and port (`kill_and_restart`), one at a time, the part kills held meanwhile; every
kill's time to recover is measured (the server answering, the APIs' /readyz, the next drawdown paid). Once
paid out, a seeded share of the drawdowns is repaid through the API under the same kills, in 1 to 3 parts, in
full or in part, each part with its own Idempotency-Key (also its ``reference``) retried like the rest. Then
the bank is calmed, everything settles (bounded wait) and the run is accounted from the bank's statement and
PostgreSQL:

- requested: drawdowns the API accepted (201, first answer or replay);
- paid: payments on the bank's statement;
- duplicated: bank payments beyond one per drawdown key or per client request;
- lost: approved drawdowns not terminal (paid or definitely refused) after the settle wait, drawdowns the bank
  paid that the ledger did not record, approvals the API confirmed that the database does not hold, and
  drawdowns answered 201 that were never committed;
- ledger balanced: total debits == total credits and every entry balanced with at least two lines;
- repayments: the keys sent, the rows recorded, duplicated (rows beyond one per key), lost (answered 201 and
  not recorded, or recorded and never sent), and per credit line (``account_repayments``): ``repaid`` the
  sum of its drawdowns' repayments, ``0 <= outstanding <= limit``, the credit receivable equal to the
  outstanding, and GET /credit-lines/{id} showing ``available = limit - reserved - outstanding``.

The exit code is 1 when anything was duplicated or lost, a credit line is off, the ledger is unbalanced, money
moved that no approved drawdown explains, the figures of the bank and the ledger disagree, or a disbursement
workflow failed or kept running on a finished drawdown; with --strict also on API contract violations (500s, a
404 for a drawdown just answered 201, a retried approval answered 409 though it was recorded), which are
otherwise printed on the `contract` line. The seed fixes the plan (enterprises, amounts, approvers,
rejections), the kill schedule and the bank's fault sequence; process timing is not reproducible, so a replay
repeats the same attack, not the same interleaving. On failure the data folder (logs, PostgreSQL, Temporal
database, bank file, report.json) is kept and its path printed.

Then (``--scenario``: ``all`` by default, ``drawdowns`` or ``outbox`` alone; ``servers``: the drawdowns
under the server crashes only) the outbox scenario: 1,000 events
to a webhook receiver that fails a third of its calls, through `giantflow relay` SIGKILLs and a PostgreSQL
crash (see its section below); it fails the run when an event is missing, out of order per aggregate, or a
duplicate carries another webhook-id.

Every process of the run (and this runner's own imports of the service) uses a copy of the code taken at
start-up in the data folder - the working tree, or `--ref REF` through `git archive` - so edits made to the
working tree during the run cannot mix versions between restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

if TYPE_CHECKING:
    from devtools.devstack import EmbeddedPostgres, Part
    from services.auth import Role
    from services.config import Settings

# The service's code, and the devtools and bench/journey.py this runner drives it with, are imported from a
# snapshot taken at start-up (see `snapshot`), never at import time: every process of the run, restarted ones
# included, and this runner then run the same code even while the working tree changes under them.
ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_PATHS = (
    "services",
    "workflows",
    "devtools",
    "migrations",
    "alembic.ini",
    "bench/__init__.py",
    "bench/journey.py",
)

PROGRAM = "chaos"
THRESHOLD = Decimal("1000000.00")  # dual approval above this (the generated program's threshold)
LINE_LIMIT = Decimal("2000000000.00")
NOT_FOUND_AFTER_CREATE = "HTTP 404 for a drawdown the API had just answered 201 for"
OFFICER_409 = "approval: 409 though this officer's earlier attempt was recorded"
OFFICERS = [f"finance-{n}" for n in range(1, 7)]
TERMINAL = {"disbursed", "repaid", "failed", "rejected", "expired"}
PAID_OUT = ("disbursed", "repaid")  # a drawdown the bank paid: `repaid` once nothing is outstanding


def say(line: str = "") -> None:
    print(line, flush=True)


def snapshot(dest: Path, ref: str | None) -> str:
    """Copy the service's code into ``dest`` (the working tree, or a git ref through `git archive`, which
    changes nothing in the repository) and put it first on this process's import path."""
    dest.mkdir(parents=True)
    if ref is None:
        for name in SNAPSHOT_PATHS:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
        what = f"working tree of {ROOT} (copied at start)"
    else:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", ref, *SNAPSHOT_PATHS],
            capture_output=True,
            check=True,
        )
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
        ).stdout.strip()
        what = f"git {ref} ({commit})"
    sys.path.insert(0, str(dest))
    return what


# --- processes -------------------------------------------------------------------------------------------


@dataclass
class Proc:
    """A part of the stack (`devtools.devstack.Part`: its own process group, SIGKILLed when the runner's main
    thread ends) that the chaos thread kills and the supervisor restarts."""

    part: Part
    env: dict[str, str]
    log_path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    killed: bool = False  # the last death was ours
    died_at: float | None = None
    started_at: float = 0.0
    kills: int = 0
    restarts: int = 0
    unexpected_exits: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.part.name

    @property
    def alive(self) -> bool:
        return self.part.alive

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.part.start(self.env, log)
        self.died_at = None
        self.started_at = time.monotonic()

    def kill(self) -> bool:
        """SIGKILL the whole process group (no goodbye: sockets, transactions and tasks are simply cut)."""
        with self.lock:
            if not self.alive:
                return False
            assert self.part.process is not None
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.part.process.pid, signal.SIGKILL)
            self.kills += 1
            return True

    def stop(self, timeout: float = 3.0) -> None:
        with self.lock:
            self.part.stop(timeout)

    def last_words(self) -> str:
        lines = [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith(" ")
        ]
        return lines[-1][:300] if lines else "(empty)"

    def supervise(self, now: float, delay: float, *, excused: bool = False) -> str | None:
        """Restart the process ``delay`` s after it died; returns a note when the death was not ours. An
        ``excused`` death (a server it needs was down: a worker cannot connect to Temporal at start) is
        not counted among the exits by itself that end the run."""
        with self.lock:
            process = self.part.process
            if process is None or process.poll() is None:
                return None
            note = None
            if self.died_at is None:
                self.died_at = now
                if not self.killed:
                    code = process.returncode
                    note = f"{self.name} exited by itself with {code}"
                    if not excused:
                        self.unexpected_exits.append(code)
                    if len(self.unexpected_exits) >= 3:
                        raise RuntimeError(
                            f"{self.name} keeps exiting by itself ({self.unexpected_exits}); its log ends: "
                            f"{self.last_words()}"
                        )
            if now - self.died_at < delay:
                return note
            self.killed = False
            self.start()
            self.restarts += 1
            return note


class Stack:
    def __init__(self, data_dir: Path, *, seed: int, apis: int, workers: int, faults: dict[str, Any]) -> None:
        from devtools.devstack import free_port

        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.pg_port = free_port()
        self.temporal_address = f"127.0.0.1:{free_port()}"
        self.bank_url = f"http://127.0.0.1:{free_port()}"
        self.api_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(apis)]
        self.secret = secrets.token_urlsafe(32)
        self.programs_dir = data_dir / "programs"
        self.postgres: EmbeddedPostgres | None = None
        self.fixed: list[Proc] = []  # temporal, bank: the bank is never attacked
        self.temporal: Proc | None = None
        self.down: set[str] = set()  # servers crashed on purpose, until they answer again
        self.back_at: dict[str, float] = {}  # when each crashed server answered again
        self.hold = threading.Event()  # set while a server crash is measured: no worker or API kills
        self.apis: list[Proc] = []
        self.workers: list[Proc] = []
        self.workers_wanted = workers
        self.faults = faults
        self._pg_log: Any = None

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.pg_port}/giantflow"

    def settings(self) -> Settings:
        from services.config import Environment, Settings

        return Settings(
            environment=Environment.test,
            jwt_secret=self.secret,
            database_url=self.database_url,
            temporal_address=self.temporal_address,
            bank_url=self.bank_url,
            programs_dir=self.programs_dir,
            data_dir=self.data_dir / "var",
        )

    def token(self, role: Role, sub: str, **claims: str) -> str:
        from services.auth import issue_development_token

        return issue_development_token(self.settings(), role=role, sub=sub, ttl=timedelta(hours=6), **claims)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
        env.setdefault("XDG_RUNTIME_DIR", "/tmp")
        src = str(self.data_dir / "src")
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "GIANTFLOW_ENVIRONMENT": "test",
                "GIANTFLOW_JWT_SECRET": self.secret,
                "GIANTFLOW_DATABASE_URL": self.database_url,
                "GIANTFLOW_TEMPORAL_ADDRESS": self.temporal_address,
                "GIANTFLOW_BANK_URL": self.bank_url,
                "GIANTFLOW_PROGRAMS_DIR": str(self.programs_dir),
                "GIANTFLOW_DATA_DIR": str(self.data_dir / "var"),
                "GIANTFLOW_LOG_LEVEL": "WARNING",
                **extra,
            }
        )
        return env

    def _proc(
        self, name: str, argv: list[str], ready: Callable[[], bool], listens: str, env: dict[str, str]
    ) -> Proc:
        from devtools.devstack import Part

        part = Part(name, argv, ready=ready, listens=listens, death_signal=signal.SIGKILL)
        return Proc(part, env, self.logs / f"{name}.log")

    def _wait(self, proc: Proc, timeout: float) -> None:
        from devtools.devstack import wait_until

        wait_until(proc.part.ready, timeout=timeout, what=proc.name, alive=lambda: proc.alive)
        say(f"  {proc.name:<13} {proc.part.listens}")

    def start(self, write_program: Callable[[Path], None]) -> None:
        from devtools.devstack import (
            EmbeddedPostgres,
            giantflow,
            http_ok,
            migrate,
            tcp_open,
            temporal_dev_server,
        )

        self.programs_dir.mkdir(parents=True, exist_ok=True)
        write_program(self.programs_dir)
        self._pg_log = (self.logs / "postgres.log").open("a", buffering=1)
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres", port=self.pg_port, log=self._pg_log)
        self.postgres.start()
        say(f"  postgres      127.0.0.1:{self.pg_port} (data in {self.postgres.data_dir})")
        migrate(self.env())
        say("  migrations    alembic upgrade head: done")
        t_host, t_port = self.temporal_address.split(":")
        db_file = self.data_dir / "temporal.db"
        temporal = self._proc(
            "temporal",
            temporal_dev_server(db_file, t_host, int(t_port), namespace="default", ui_port=None),
            lambda: tcp_open(t_host, int(t_port)),
            f"{self.temporal_address} (SQLite {db_file})",
            self.env(),
        )
        bank = self._proc(
            "bank-sim",
            giantflow("bank-sim"),
            lambda: http_ok(f"{self.bank_url}/healthz"),
            f"{self.bank_url} (faults {json.dumps(self.faults, sort_keys=True)})",
            self.env(**{f"GIANTFLOW_BANK_{k.upper()}": str(v) for k, v in self.faults.items()}),
        )
        self.fixed = [temporal, bank]
        self.temporal = temporal
        for proc in self.fixed:
            proc.start()
            self._wait(proc, 60)
        for n in range(self.workers_wanted):
            worker = self._proc(
                f"worker-{n + 1}", giantflow("worker"), lambda: True, "task queue 'giantflow'", self.env()
            )
            worker.start()
            self.workers.append(worker)
        for n, url in enumerate(self.api_urls):
            port = url.rsplit(":", 1)[1]
            api = self._proc(
                f"api-{n + 1}",
                giantflow("api"),
                partial(http_ok, f"{url}/readyz"),
                f"{url}/readyz",
                self.env(GIANTFLOW_API_HOST="127.0.0.1", GIANTFLOW_API_PORT=port),
            )
            api.start()
            self.apis.append(api)
        for api in self.apis:
            self._wait(api, 90)
        say(f"  workers       {len(self.workers)} on task queue 'giantflow'")
        say(f"  logs          {self.logs}")

    def check_fixed(self) -> None:
        if self.postgres is not None and not self.postgres.alive and "postgres" not in self.down:
            raise RuntimeError("PostgreSQL died")
        for proc in self.fixed:
            if not proc.alive and proc.name not in self.down:
                raise RuntimeError(f"{proc.name} died; see {proc.log_path}")

    def outage(self, now: float, grace: float = 5.0) -> str | None:
        """The crashed server a part may have died of: one down now or back less than ``grace`` s ago."""
        if self.down:
            return " and ".join(sorted(self.down)) + " down"
        recent = [name for name, at in self.back_at.items() if now - at < grace]
        return f"{' and '.join(sorted(recent))} just restarted" if recent else None

    def stop(self) -> None:
        stop_all([*self.apis, *self.workers, *reversed(self.fixed)], self.postgres, self._pg_log)


def stop_all(procs: list[Any], postgres: Any, pg_log: Any) -> None:
    """Stop a run's processes, in the order given, then its PostgreSQL, whatever each does on the way."""
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.stop()
    if postgres is not None:
        with contextlib.suppress(Exception):
            postgres.stop()
    if pg_log is not None:
        pg_log.close()


async def kill_and_restart(
    process: subprocess.Popen[bytes] | None,
    start: Callable[[], None],
    answers: Callable[[], bool],
    *,
    down: float,
    timeout: float = 90.0,
) -> float:
    """Crash a server like a power cut would its process: SIGKILL its whole process group (PostgreSQL's
    postmaster and backends, the Temporal dev server; no shutdown, no checkpoint, every client's socket cut),
    ``down`` s later ``start`` it again on the same data and port, in the calling thread (the main one: a
    server dies with the thread that started it), and wait until it ``answers``. Returns the seconds from
    the kill until it answered. Both scenarios crash their servers through this."""
    from devtools.devstack import StartupError

    assert process is not None, "the server was never started"
    killed = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.wait)
    await asyncio.sleep(down)
    start()  # PostgreSQL's start waits until it accepts connections (crash recovery) itself
    while not await asyncio.to_thread(answers):
        if time.monotonic() - killed > down + timeout:
            raise StartupError(f"the server did not answer {timeout:g} s after its restart")
        await asyncio.sleep(0.1)
    return time.monotonic() - killed


def write_program(folder: Path) -> None:
    """The demo program's shape with fast reviews, a 3 s notice and nothing expiring during the run."""
    today = date.today()
    (folder / f"{PROGRAM}.toml").write_text(
        f"""# Generated by bench/chaos.py.
key = "{PROGRAM}"
name = "Chaos program"
authority = "Chaos authority"
region_code = "500000"
currency = "CNY"
escalation_group = "chaos-backup-reviewers"
dual_approval_threshold = "{THRESHOLD}"

[[rulesets]]
version = "national-2022"
effective_from = 2022-06-01

[[rulesets]]  # the batch opens under the standard in force a month ago
version = "national-2026"
effective_from = 2026-04-01

[[batches]]
key = "chaos"
opens_on = {today - timedelta(days=30)}
closes_on = {today + timedelta(days=365)}

[durations]
notice_period = "PT3S"
stage_sla = "PT600S"
supplement_deadline = "PT600S"
validity = "P400D"  # longer than any review window the program may default to
approval_deadline = "PT1800S"

[tiers.specialized_new]
name = "Chaos SRDI SME"
review_levels = ["municipal", "provincial"]
required_documents = ["business_licence", "financial_statements_3y"]
credit_line_limit = "{LINE_LIMIT}"
""",
        encoding="utf-8",
    )


# --- chaos and supervision -------------------------------------------------------------------------------


@dataclass
class ChaosLog:
    events: list[tuple[float, str]] = field(default_factory=list)  # (s since the chaos started, what)
    notes: list[str] = field(default_factory=list)
    excused: list[str] = field(default_factory=list)  # parts that died while a server they need was down
    started: float = field(default_factory=time.monotonic)


class Chaos(threading.Thread):
    """SIGKILLs a random worker about every ``worker_every`` s and a random API about every ``api_every`` s
    (0 disables either; ``worker_kills``, ``api_kills``: at most that many, 0 no bound), on its own seeded
    RNG, until told to stop."""

    def __init__(
        self,
        stack: Stack,
        *,
        seed: int,
        worker_every: float,
        api_every: float,
        log: ChaosLog,
        worker_kills: int = 0,
        api_kills: int = 0,
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.stack = stack
        self.rng = random.Random(seed)
        self.worker_every = worker_every
        self.api_every = api_every
        self.left = {"worker": worker_kills or -1, "api": api_kills or -1}
        self.stop_event = threading.Event()
        self.log = log

    def _next(self, every: float, kind: str = "") -> float:
        if every <= 0 or self.left.get(kind) == 0:
            return float("inf")
        return time.monotonic() + self.rng.uniform(0.5, 1.5) * every

    def run(self) -> None:
        next_worker, next_api = self._next(self.worker_every, "worker"), self._next(self.api_every, "api")
        while not self.stop_event.is_set():
            if self.stack.hold.is_set():  # a server crash is being measured: what is due waits for its end
                self.stop_event.wait(0.1)
                continue
            now = time.monotonic()
            if now >= next_worker:
                if self._kill(self.rng.choice(self.stack.workers)):
                    self.left["worker"] -= 1
                next_worker = self._next(self.worker_every, "worker")
            if now >= next_api:
                # Never both APIs at once: the survivor keeps serving while the victim restarts.
                alive = [api for api in self.stack.apis if api.alive]
                if (len(alive) == len(self.stack.apis) or len(self.stack.apis) == 1) and self._kill(
                    self.rng.choice(self.stack.apis)
                ):
                    self.left["api"] -= 1
                next_api = self._next(self.api_every, "api")
            self.stop_event.wait(min(1.0, max(0.05, min(next_worker, next_api) - time.monotonic())))

    def _kill(self, proc: Proc) -> bool:
        if not proc.kill():
            return False
        self.log.events.append((time.monotonic() - self.log.started, f"SIGKILL {proc.name}"))
        return True


async def supervise(stack: Stack, stop: asyncio.Event, log: ChaosLog, delay: float) -> None:
    """Restart what died (like systemd or Kubernetes would), in the main thread so that the children's
    death-with-parent signal is tied to a thread that lives until the end."""
    while not stop.is_set():
        stack.check_fixed()
        now = time.monotonic()
        excuse = stack.outage(now)
        for proc in [*stack.workers, *stack.apis]:
            note = proc.supervise(now, delay, excused=excuse is not None)
            if note and excuse:
                log.excused.append(f"{note} ({excuse})")
                say(f"  ! {note} ({excuse})")
            elif note:
                log.notes.append(note)
                say(f"  ! {note}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


T = TypeVar("T")


async def guarded(work: Awaitable[T], supervisor: asyncio.Task[None]) -> T:
    """Await ``work``, unless the supervisor fails first (a part keeps dying by itself): then its error."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task, supervisor}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    supervisor.result()
    raise RuntimeError("the supervisor stopped")


# --- server crashes and the time to recover -----------------------------------------------------------------


@dataclass
class Recovery:
    """One SIGKILL and how long (s from the kill) until the stack was back: the server answering again
    (Temporal, PostgreSQL), the API's /readyz ready (every API after a server crash, the killed one after an
    API kill), the next drawdown paid (after the server answered again; after the kill for a worker)."""

    kind: str  # worker, api, temporal, postgres
    name: str
    at: float  # s since the load started
    killed: float  # time.monotonic() of the kill
    paid_before: int | None = None
    answered: float | None = None
    ready: float | None = None
    payout: float | None = None


@dataclass
class RecoveryLog:
    done: list[Recovery] = field(default_factory=list)
    pending: list[Recovery] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # server crashes planned after the load ended


def server_plan(seed: int, count: int, temporal: int, postgres: int) -> list[tuple[float, int, str]]:
    """When to crash which server: at a share of the load (between 15 % and 85 %), and so after that share
    of the drawdowns finished (or of the load's time bound gone, on a machine too slow for the count)."""
    rng = random.Random(seed + 4)
    kinds = ["temporal"] * temporal + ["postgres"] * postgres
    rng.shuffle(kinds)
    shares = [0.15 + 0.7 * (n + rng.uniform(0.2, 0.8)) / len(kinds) for n in range(len(kinds))]
    return [(share, int(count * share), kind) for share, kind in zip(shares, kinds, strict=True)]


async def paid_count(engine: Any) -> int | None:
    """Drawdowns paid and recorded (repaid in full since, too), or None while the database does not answer."""
    from sqlalchemy import text

    try:
        async with asyncio.timeout(3), engine.connect() as conn:
            return int(
                await conn.scalar(
                    text("SELECT count(*) FROM drawdowns WHERE status IN ('disbursed', 'repaid')")
                )
            )
    except Exception:
        return None


async def apis_ready(http: httpx.AsyncClient, urls: list[str]) -> bool:
    answers = await asyncio.gather(*(http.get(f"{url}/readyz") for url in urls), return_exceptions=True)
    return all(isinstance(a, httpx.Response) and a.status_code == 200 for a in answers)


async def wait_for(check: Callable[[], Awaitable[bool]], since: float, bound: float) -> float | None:
    """Seconds from ``since`` until ``check`` holds (polled every 0.2 s), None after ``bound`` s."""
    while time.monotonic() - since < bound:
        if await check():
            return time.monotonic() - since
        await asyncio.sleep(0.2)
    return None


async def quiet(stack: Stack, settled_for: float = 4.0, bound: float = 30.0) -> None:
    """Wait (bounded) until every API and worker is up and none (re)started in the last ``settled_for`` s:
    a server crash then finds the stack connected, not a worker still starting."""
    started = time.monotonic()
    while time.monotonic() - started < bound:
        parts = [*stack.apis, *stack.workers]
        if all(p.alive and time.monotonic() - p.started_at >= settled_for for p in parts):
            return
        await asyncio.sleep(0.2)


async def crash_servers(
    stack: Stack,
    engine: Any,
    plan: list[tuple[float, int, str]],
    stats: LoadStats,
    load_over: asyncio.Event,
    log: RecoveryLog,
    *,
    down: float,
    bound: float,
    load_timeout: float,
) -> None:
    """Crash the servers of ``plan`` (`kill_and_restart`), each once its number of drawdowns is done or its
    share of ``load_timeout`` gone, one at a time with the worker and API kills held, and measure how the
    stack comes back."""
    async with httpx.AsyncClient(timeout=3) as http:
        for share, threshold, kind in plan:
            while stats.done < threshold and stats.at() < share * load_timeout and not load_over.is_set():
                await asyncio.sleep(0.2)
            if load_over.is_set():  # the load ended first: no crash without load
                log.skipped.append(f"{kind} after {threshold} drawdowns")
                continue
            stack.hold.set()
            try:
                await quiet(stack)
                crash = Recovery(kind, kind, time.monotonic() - stats.started, time.monotonic())
                server = "PostgreSQL" if kind == "postgres" else "the Temporal server"
                say(
                    f"  {crash.at:6.1f} s  SIGKILL {server} after {stats.done} drawdowns done, "
                    f"back in {down:g} s"
                )
                stack.down.add(kind)
                try:
                    if kind == "postgres":
                        pg = stack.postgres
                        assert pg is not None
                        crash.answered = await kill_and_restart(
                            pg.process, partial(pg.start, timeout=60), pg.ready, down=down
                        )
                    else:
                        temporal = stack.temporal
                        assert temporal is not None
                        crash.answered = await kill_and_restart(
                            temporal.part.process, temporal.start, temporal.part.ready, down=down
                        )
                finally:
                    stack.down.discard(kind)
                    stack.back_at[kind] = time.monotonic()
                baseline = None
                while baseline is None and time.monotonic() - crash.killed < bound:
                    baseline = await paid_count(engine)

                async def paid_more(baseline: int | None = baseline) -> bool:
                    count = await paid_count(engine)
                    return count is not None and baseline is not None and count > baseline

                crash.ready, crash.payout = await asyncio.gather(
                    wait_for(partial(apis_ready, http, stack.api_urls), crash.killed, bound),
                    wait_for(paid_more, crash.killed, bound),
                )
                log.done.append(crash)
                say(
                    f"  {stats.at():6.1f} s  {kind} answering {_s(crash.answered)} after the kill, APIs "
                    f"ready {_s(crash.ready)}, next payout {_s(crash.payout)}"
                )
            finally:
                stack.hold.clear()


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"


async def watch_part_kills(
    stack: Stack, engine: Any, chaos_log: ChaosLog, log: RecoveryLog, stop: asyncio.Event, bound: float
) -> None:
    """The time to recover from each worker and API kill of the chaos thread: a worker's until the next
    drawdown is paid, an API's until its /readyz is ready again (bounded by ``bound`` s)."""
    seen = 0
    procs = {p.name: p for p in [*stack.apis, *stack.workers]}
    urls = dict(zip([a.name for a in stack.apis], stack.api_urls, strict=True))
    async with httpx.AsyncClient(timeout=2) as http:
        while not stop.is_set() or log.pending:
            paid = await paid_count(engine)
            now = time.monotonic()
            for t, what in chaos_log.events[seen:]:
                name = what.split()[-1]
                kind = name.split("-")[0]
                log.pending.append(Recovery(kind, name, t, chaos_log.started + t, paid_before=paid))
            seen = len(chaos_log.events)
            for kill in list(log.pending):
                if kill.kind == "worker":
                    if kill.paid_before is None:
                        kill.paid_before = paid
                    elif paid is not None and paid > kill.paid_before:
                        kill.payout = now - kill.killed
                elif procs[kill.name].alive and await apis_ready(http, [urls[kill.name]]):
                    kill.ready = time.monotonic() - kill.killed
                if kill.payout is not None or kill.ready is not None or now - kill.killed > bound:
                    log.pending.remove(kill)
                    log.done.append(kill)
            if stop.is_set() and log.pending and all(now - k.killed > bound for k in log.pending):
                break
            await asyncio.sleep(0.2)


def recovery_figures(log: RecoveryLog) -> dict[str, dict[str, Any]]:
    """Per kind of kill: how many, and min / median / max seconds until each measure of recovery."""
    figures: dict[str, dict[str, Any]] = {}
    for kind in ("worker", "api", "temporal", "postgres"):
        kills = [r for r in log.done if r.kind == kind]
        if not kills:
            continue
        row: dict[str, Any] = {"kills": len(kills)}
        for measure in ("answered", "ready", "payout"):
            values = sorted(v for r in kills if (v := getattr(r, measure)) is not None)
            if (measure, kind) in (("answered", "worker"), ("answered", "api"), ("payout", "api")):
                continue
            if (measure, kind) == ("ready", "worker"):
                continue
            row[measure] = {
                "min": round(values[0], 1) if values else None,
                "median": round(values[(len(values) - 1) // 2], 1) if values else None,
                "max": round(values[-1], 1) if values else None,
                "never": len(kills) - len(values),
            }
        figures[kind] = row
    return figures


# --- the load --------------------------------------------------------------------------------------------


@dataclass
class Enterprise:
    uscc: str
    token: str = ""  # its owner's, set by the seeding
    line_id: str = ""
    closed_account: bool = False


@dataclass
class Repayment:
    """One planned repayment of a drawdown (its key is also its `reference`, so the database's rows can be
    counted per key), and what the client made of it."""

    key: str
    amount: Decimal
    by: str | None  # a finance officer records it, or None: the enterprise itself
    double_submit: bool
    sent: bool = False
    ids_seen: set[str] = field(default_factory=set)  # the ids of its 201 answers (first or replayed)
    replays: int = 0  # 201 answers replayed from the Idempotency-Key's record (Idempotent-Replayed)
    result: str = "not sent"  # recorded, gave up, unexpected ...


@dataclass
class Job:
    n: int
    enterprise: Enterprise
    amount: Decimal
    key: str
    officers: list[str]
    reject: bool
    double_submit: bool
    repayments: list[Repayment] = field(default_factory=list)  # once the drawdown is paid out


@dataclass
class Outcome:
    job: Job
    drawdown_id: str | None = None
    ids_seen: set[str] = field(default_factory=set)
    required: int = 0
    result: str = "not started"  # approved, rejected, refused, gave up ..., unexpected ...
    detail: str = ""
    approvals_confirmed: list[str] = field(default_factory=list)
    repaying: str = ""  # why its planned repayments were not sent (the drawdown refused, not paid in time)


@dataclass
class LoadStats:
    calls: Counter[str] = field(default_factory=Counter)
    done: int = 0  # drawdowns whose client finished (the server crashes' clock)
    started: float = field(default_factory=time.monotonic)
    samples_500: list[str] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def sample(self, kind: str, what: str) -> None:
        if len(self.samples[kind]) < 10:
            self.samples[kind].append(what)

    unexpected: list[str] = field(default_factory=list)

    def at(self) -> float:
        return time.monotonic() - self.started


def plan(seed: int, count: int, enterprises: list[Enterprise], args: argparse.Namespace) -> list[Job]:
    rng = random.Random(seed)
    healthy = [e for e in enterprises if not e.closed_account]
    closed = [e for e in enterprises if e.closed_account]
    jobs = []
    for n in range(count):
        enterprise = (
            rng.choice(closed) if closed and rng.random() < args.closed_share else rng.choice(healthy)
        )
        if rng.random() < args.dual_share:
            cents = rng.randint(int(THRESHOLD * 100) + 1, 5_000_000_00)
        else:
            cents = rng.randint(1_000_00, int(THRESHOLD * 100))
        jobs.append(
            Job(
                n=n,
                enterprise=enterprise,
                amount=Decimal(cents) / 100,
                key=f"chaos-{seed}-{n:06d}",
                officers=rng.sample(OFFICERS, 2),
                reject=rng.random() < args.reject_share,
                double_submit=rng.random() < args.double_submit_share,
            )
        )
    plan_repayments(seed, jobs, args)
    return jobs


def plan_repayments(seed: int, jobs: list[Job], args: argparse.Namespace) -> None:
    """A share of the drawdowns is repaid once paid out, in 1 to 3 parts: in full (the parts add up to the
    amount) or in part (they add up to 20-90 % of it); some by a finance officer rather than the enterprise,
    some sent twice at once. Its own RNG: a seed's drawdowns stay what they were before repayments."""
    rng = random.Random(seed + 9)
    for job in jobs:
        if rng.random() >= args.repay_share:
            continue
        cents = int(job.amount * 100)
        parts = min(rng.randint(1, 3), cents)
        total = (
            cents if rng.random() < args.repay_full_share else max(parts, int(cents * rng.uniform(0.2, 0.9)))
        )
        cuts = sorted(rng.sample(range(1, total), parts - 1)) if parts > 1 else []
        bounds = [0, *cuts, total]
        job.repayments = [
            Repayment(
                key=f"{job.key}-repay-{i}",
                amount=Decimal(bounds[i + 1] - bounds[i]) / 100,
                by=rng.choice(OFFICERS) if rng.random() < 0.2 else None,
                double_submit=rng.random() < args.double_submit_share,
            )
            for i in range(parts)
        ]


class Api:
    """A client that retries like a real one: timeouts, connection errors, 5xx, 429 and "still being
    processed" are retried with the same Idempotency-Key, each attempt on any API (a load balancer)."""

    def __init__(self, urls: list[str], http: httpx.AsyncClient, stats: LoadStats, deadline: float) -> None:
        self.urls = urls
        self.http = http
        self.stats = stats
        self.deadline = deadline
        self.rng = random.Random()

    async def call(
        self,
        method: str,
        path: str,
        token: str,
        *,
        body: Any = None,
        key: str | None = None,
        what: str,
        files: Any = None,
        data: Any = None,
        created: bool = False,
    ) -> tuple[httpx.Response | None, bool]:
        """The first definite answer (2xx or 4xx other than 429 and busy), and whether an earlier attempt of
        this call was ambiguous (it may have been done). None when the load deadline passed."""
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        ambiguous = False
        attempt = 0
        while True:
            attempt += 1
            url = self.rng.choice(self.urls) + "/api/v1" + path
            wait = min(3.0, 0.2 * 2 ** min(attempt, 5)) * self.rng.uniform(0.5, 1.0)
            try:
                response = await self.http.request(
                    method, url, headers=headers, json=body, files=files, data=data
                )
            except httpx.TimeoutException:
                self.stats.calls[f"{what}: client timeout"] += 1
                ambiguous = True
            except httpx.TransportError as exc:
                self.stats.calls[f"{what}: {type(exc).__name__}"] += 1
                ambiguous = ambiguous or not isinstance(exc, httpx.ConnectError)
            else:
                status = response.status_code
                if status >= 500:
                    self.stats.calls[f"{what}: HTTP {status}"] += 1
                    ambiguous = True
                    if status == 500 and len(self.stats.samples_500) < 20:
                        self.stats.samples_500.append(f"{method} {path} key={key}: {response.text[:300]}")
                elif status == 429:
                    self.stats.calls[f"{what}: HTTP 429"] += 1
                    wait = float(response.headers.get("Retry-After", "1"))
                elif status == 409 and "still being processed" in _detail(response):
                    self.stats.calls[f"{what}: HTTP 409 busy"] += 1
                    ambiguous = True
                elif status == 404 and created and attempt <= 10:
                    # The API answered 201 with this id a moment ago: it must exist (read-your-writes).
                    self.stats.calls[f"{what}: {NOT_FOUND_AFTER_CREATE}"] += 1
                    self.stats.sample(NOT_FOUND_AFTER_CREATE, f"{method} {path} (key {key})")
                else:
                    if attempt > 1:
                        self.stats.calls[f"{what}: answered after retries"] += 1
                    return response, ambiguous
            if time.monotonic() + wait > self.deadline:
                return None, ambiguous
            await asyncio.sleep(wait)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except (ValueError, AttributeError):
        return response.text[:200]


async def run_job(api: Api, job: Job, outcome: Outcome, finance_tokens: dict[str, str]) -> None:
    token = job.enterprise.token
    path = f"/credit-lines/{job.enterprise.line_id}/drawdowns"
    body = {"amount": f"{job.amount:.2f}"}
    copies = 2 if job.double_submit else 1
    answers = await asyncio.gather(
        *(api.call("POST", path, token, body=body, key=job.key, what="drawdown") for _ in range(copies))
    )
    accepted = None
    for response, _ in answers:
        if response is not None and response.status_code == 201:
            accepted = response.json()
            outcome.ids_seen.add(str(accepted["id"]))
    if len(outcome.ids_seen) > 1:
        api.stats.unexpected.append(f"{job.key}: one Idempotency-Key answered {sorted(outcome.ids_seen)}")
    response = answers[0][0]
    if accepted is None:
        if response is None:
            outcome.result = "gave up requesting"
        elif response.status_code == 409:
            outcome.result, outcome.detail = "refused", _detail(response)
        else:
            outcome.result = f"unexpected {response.status_code}"
            outcome.detail = response.text[:300]
            api.stats.unexpected.append(f"{job.key} drawdown: {response.status_code} {response.text[:300]}")
        return
    outcome.drawdown_id = str(accepted["id"])
    outcome.required = int(accepted["required_approvals"])
    for i, officer in enumerate(job.officers[: outcome.required]):
        decision = "reject" if job.reject and i == 0 else "approve"
        response, ambiguous = await api.call(
            "POST",
            f"/drawdowns/{outcome.drawdown_id}/approvals",
            finance_tokens[officer],
            body={"decision": decision, "reason": f"chaos {job.key}"},
            key=f"{job.key}-{officer}",
            what="approval",
            created=True,
        )
        if response is None:
            outcome.result = "gave up approving"
            return
        if response.status_code == 409:
            # Maybe our own earlier attempt went through and its answer was lost: look before giving up.
            seen, _ = await api.call(
                "GET", f"/drawdowns/{outcome.drawdown_id}", finance_tokens[officer], what="read", created=True
            )
            mine = (
                seen is not None
                and seen.status_code == 200
                and officer in {a["approver"] for a in seen.json()["approvals"]}
            )
            if mine and ambiguous:
                api.stats.sample(
                    OFFICER_409, f"{job.key} drawdown {outcome.drawdown_id} by {officer}: {_detail(response)}"
                )
            if mine:
                api.stats.calls[
                    OFFICER_409
                    if ambiguous
                    else "approval: 409 on the first definite answer, decision recorded"
                ] += 1
            else:
                outcome.result, outcome.detail = "approval refused", _detail(response)
                api.stats.unexpected.append(f"{job.key} approval by {officer}: 409 {_detail(response)}")
                return
        elif response.status_code != 200:
            outcome.result = f"unexpected approval {response.status_code}"
            outcome.detail = response.text[:300]
            api.stats.unexpected.append(f"{job.key} approval: {response.status_code} {response.text[:300]}")
            return
        outcome.approvals_confirmed.append(officer)
        if decision == "reject":
            outcome.result = "rejected"
            return
    outcome.result = "approved"


class PaidWatch:
    """Which awaited drawdowns the bank has paid (or refused for good): one query for all of them a second -
    the runner's own look at the database, like the settle wait's (the repayments themselves go through the
    API) - that outlasts PostgreSQL crashes. Past ``bound`` nobody waits any more."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.waiting: dict[str, asyncio.Future[str | None]] = {}
        self.bound = float("inf")

    async def paid(self, drawdown_id: str) -> str | None:
        """The drawdown's status once it is no longer on its way to the bank; None past the bound."""
        if time.monotonic() > self.bound:
            return None
        future = self.waiting.get(drawdown_id)
        if future is None:
            future = self.waiting[drawdown_id] = asyncio.get_running_loop().create_future()
        return await future

    async def run(self) -> None:
        from sqlalchemy import text

        while True:
            if self.waiting:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5), self.engine.connect() as conn:
                        rows = await conn.execute(
                            text(
                                "SELECT id::text, status FROM drawdowns WHERE id::text = ANY(:ids) "
                                "AND status NOT IN ('pending_approval', 'approved')"
                            ),
                            {"ids": list(self.waiting)},
                        )
                    for drawdown_id, status in rows.all():
                        future = self.waiting.pop(drawdown_id, None)
                        if future is not None and not future.done():
                            future.set_result(status)
            if time.monotonic() > self.bound:
                for future in self.waiting.values():
                    if not future.done():
                        future.set_result(None)
                self.waiting.clear()
            await asyncio.sleep(1.0)


async def repay_job(api: Api, outcome: Outcome, watch: PaidWatch, finance_tokens: dict[str, str]) -> None:
    """Once the drawdown is paid out, its planned repayments one after the other, each with its own
    Idempotency-Key and retried with it like every call of the load (``Api.call``); one sent twice at once
    races itself (the loser hears 409 "still being processed" and retries into the replay)."""
    assert outcome.drawdown_id is not None
    status = await watch.paid(outcome.drawdown_id)
    if status != "disbursed":
        outcome.repaying = f"drawdown {status}" if status else "drawdown not paid in time"
        return
    path = f"/drawdowns/{outcome.drawdown_id}/repayments"
    for repayment in outcome.job.repayments:
        token = finance_tokens[repayment.by] if repayment.by else outcome.job.enterprise.token
        body = {"amount": f"{repayment.amount:.2f}", "reference": repayment.key}
        copies = 2 if repayment.double_submit else 1
        repayment.sent = True
        answers = await asyncio.gather(
            *(
                api.call("POST", path, token, body=body, key=repayment.key, what="repayment", created=True)
                for _ in range(copies)
            )
        )
        for response, _ in answers:
            if response is not None and response.status_code == 201:
                repayment.ids_seen.add(str(response.json()["id"]))
                repayment.replays += response.headers.get("Idempotent-Replayed") == "true"
        if len(repayment.ids_seen) > 1:
            api.stats.unexpected.append(
                f"{repayment.key}: one Idempotency-Key answered {sorted(repayment.ids_seen)}"
            )
        response = answers[0][0]
        if repayment.ids_seen:
            repayment.result = "recorded"
        elif response is None:
            repayment.result = "gave up"
            return  # the deadline passed: the next parts would give up too
        else:
            repayment.result = f"unexpected {response.status_code}"
            api.stats.unexpected.append(
                f"{repayment.key} repayment: {response.status_code} {response.text[:300]}"
            )


async def run_load(
    api: Api,
    jobs: list[Job],
    finance_tokens: dict[str, str],
    concurrency: int,
    *,
    repay_api: Api,
    watch: PaidWatch,
    repay_wait: float,
) -> list[Outcome]:
    """The drawdowns by ``concurrency`` clients; each drawdown approved with repayments planned hands them to
    a task of its own that waits for the payment and sends them (``repay_job``), the clients moving on. Once
    every drawdown is done, the repayments get ``repay_wait`` s more (the chaos still on)."""
    outcomes = [Outcome(job) for job in jobs]
    queue: asyncio.Queue[Outcome] = asyncio.Queue()
    for outcome in outcomes:
        queue.put_nowait(outcome)
    done = 0
    started = time.monotonic()
    repaying: list[asyncio.Task[None]] = []

    async def client() -> None:
        nonlocal done
        while True:
            try:
                outcome = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if time.monotonic() > api.deadline:
                outcome.result = "not started (load deadline)"
                continue
            await run_job(api, outcome.job, outcome, finance_tokens)
            if outcome.result == "approved" and outcome.job.repayments:
                repaying.append(asyncio.create_task(repay_job(repay_api, outcome, watch, finance_tokens)))
            done += 1
            api.stats.done = done
            if done % 100 == 0:
                say(f"  {done:>6} drawdowns done ({time.monotonic() - started:.0f} s)")

    watching = asyncio.create_task(watch.run())
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
        left = sum(not t.done() for t in repaying)
        say(
            f"  {done:>6} drawdowns done ({time.monotonic() - started:.0f} s); repayments of {left} of "
            f"{len(repaying)} drawdowns still waiting for their payment or under way (up to {repay_wait:g} s)"
        )
        watch.bound = time.monotonic() + repay_wait
        repay_api.deadline = min(repay_api.deadline, watch.bound)
        await asyncio.gather(*repaying)
    finally:
        for task in (*repaying, watching):
            task.cancel()
        await asyncio.gather(*repaying, watching, return_exceptions=True)
    return outcomes


# --- seeding through the real review path ----------------------------------------------------------------


async def seed_enterprise(api: Api, stack: Stack, enterprise: Enterprise, timeout: float) -> None:
    """Register, upload evidence, apply, pass screening and both reviews, wait out the notice, then wait for
    the benefits workflow to open the credit line - all over HTTP (bench/journey.py's way), each call retried
    like the load's."""
    from bench.journey import Journey

    async def send(
        method: str, path: str, token: str, *, key: str | None = None, json: Any = None, **request: Any
    ) -> httpx.Response | None:
        response, _ = await api.call(method, path, token, body=json, key=key, what="seed", **request)
        return response

    journey = Journey(
        api.http, stack.token, enterprise.uscc, program=PROGRAM, send=send, timeout=timeout, poll=0.3
    )
    enterprise.token = journey.owner
    enterprise.line_id = (await journey.to_credit_line())["id"]


# --- settling and accounting -----------------------------------------------------------------------------


async def calm_bank(bank_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{bank_url}/admin/faults",
            json={
                "latency_ms": 0,
                "error_rate": 0,
                "timeout_rate": 0,
                "answer_after_commit_error_rate": 0,
                "duplicate_delivery_rate": 0,
                "hang_seconds": 1,
            },
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


async def settle(engine: Any, approved_ids: set[str], timeout: float) -> float:
    """Wait until no approved drawdown is still being paid (bounded); returns the seconds waited."""
    from sqlalchemy import text

    started = time.monotonic()
    last = -1
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id::text, status FROM drawdowns"))).all()
        open_ = [i for i, s in rows if s == "approved" or (i in approved_ids and s == "pending_approval")]
        if not open_:
            return time.monotonic() - started
        if len(open_) != last:
            say(f"  settling: {len(open_)} approved drawdowns not yet paid or refused")
            last = len(open_)
        if time.monotonic() - started > timeout:
            return time.monotonic() - started
        await asyncio.sleep(2)


async def ledger_check(engine: Any) -> dict[str, Any]:
    from sqlalchemy import text

    async with engine.connect() as conn:
        debits, credits = (
            await conn.execute(
                text("SELECT coalesce(sum(debit), 0), coalesce(sum(credit), 0) FROM ledger_lines")
            )
        ).one()
        unbalanced = (
            (
                await conn.execute(
                    text(
                        "SELECT e.id::text FROM ledger_entries e "
                        "LEFT JOIN ledger_lines l ON l.entry_id = e.id "
                        "GROUP BY e.id HAVING count(l.id) < 2 "
                        "OR coalesce(sum(l.debit), 0) <> coalesce(sum(l.credit), 0)"
                    )
                )
            )
            .scalars()
            .all()
        )
        entries = (await conn.execute(text("SELECT count(*) FROM ledger_entries"))).scalar_one()
    return {
        "debits": Decimal(debits),
        "credits": Decimal(credits),
        "entries": int(entries),
        "unbalanced_entries": list(unbalanced),
        "balanced": Decimal(debits) == Decimal(credits) and not unbalanced,
    }


async def read_rows(engine: Any) -> dict[str, Any]:
    from sqlalchemy import text

    async with engine.connect() as conn:

        async def rows(sql: str) -> list[Any]:
            return list((await conn.execute(text(sql))).all())

        drawdowns = {
            r.id: r._asdict()
            for r in await rows(
                "SELECT id::text AS id, status, amount, repaid, uscc, credit_line_id::text AS line, "
                "required_approvals, requested_by, reason FROM drawdowns"
            )
        }
        disbursements = {
            r.drawdown_id: r._asdict()
            for r in await rows(
                "SELECT drawdown_id::text AS drawdown_id, status, amount, bank_key, bank_reference, "
                "ledger_entry_id::text AS ledger_entry_id, failure_reason FROM disbursements "
                "WHERE drawdown_id IS NOT NULL"
            )
        }
        bank_keys = {r[0] for r in await rows("SELECT bank_key FROM disbursements")}
        entries = {  # the debits of each entry a disbursement points at
            r[0]: Decimal(r[1])
            for r in await rows(
                "SELECT d.drawdown_id::text, coalesce(sum(l.debit), 0) FROM disbursements d "
                "JOIN ledger_lines l ON l.entry_id = d.ledger_entry_id "
                "WHERE d.drawdown_id IS NOT NULL GROUP BY d.drawdown_id"
            )
        }
        lines = {
            r.id: r._asdict()
            for r in await rows(
                "SELECT id::text AS id, uscc, credit_limit, reserved, drawn, repaid, status FROM credit_lines"
            )
        }
        receivables = {
            r[0].split(":", 1)[1]: Decimal(r[1])
            for r in await rows(
                "SELECT a.code, coalesce(sum(l.debit - l.credit), 0) FROM ledger_accounts a "
                "LEFT JOIN ledger_lines l ON l.account_id = a.id "
                "WHERE a.code LIKE 'credit_receivable:%' GROUP BY a.code"
            )
        }
        repayments = [
            r._asdict()
            for r in await rows(
                "SELECT r.id::text AS id, r.drawdown_id::text AS drawdown, r.credit_line_id::text AS line, "
                "r.uscc, r.amount, r.reference, coalesce(sum(l.debit), 0) AS debits, "
                "coalesce(sum(l.credit), 0) AS credits FROM drawdown_repayments r "
                "LEFT JOIN ledger_lines l ON l.entry_id = r.ledger_entry_id GROUP BY r.id"
            )
        ]
        idem = {
            r[0]: (r[1], r[2])
            for r in await rows(
                "SELECT response->>'id', caller, key FROM idempotency_keys "
                "WHERE endpoint LIKE 'POST /credit-lines/%/drawdowns' AND response IS NOT NULL"
            )
        }
    return {
        "drawdowns": drawdowns,
        "disbursements": disbursements,
        "entries": entries,
        "lines": lines,
        "receivables": receivables,
        "idempotency": idem,
        "bank_keys": bank_keys,
        "repayments": repayments,
    }


async def read_lines(api: Api, token: str, line_ids: list[str]) -> dict[str, Any]:
    """Each credit line as the API shows it (GET /credit-lines/{id}); None where it did not answer."""
    lines: dict[str, Any] = {}
    for line_id in line_ids:
        response, _ = await api.call("GET", f"/credit-lines/{line_id}", token, what="line")
        lines[line_id] = response.json() if response is not None and response.status_code == 200 else None
    return lines


async def workflow_report(
    address: str, drawdown_ids: list[str], expected: list[str], limit: int = 12
) -> dict[str, Any]:
    """Running and failed disbursement workflows, the status of each drawdown's (``expected``: every
    drawdown of the database; one the listing misses is described, a Temporal that lost it has none), and
    the tail of the history of the ones named."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WorkflowExecutionStatus
    from temporalio.service import RPCError

    client = await Client.connect(address)
    by_status: Counter[str] = Counter()
    running: list[str] = []
    failed: list[str] = []
    statuses: dict[str, str] = {}
    async for wf in client.list_workflows("WorkflowType = 'DisbursementWorkflow'"):
        status = wf.status.name if wf.status else "UNKNOWN"
        by_status[status] += 1
        statuses[wf.id.removeprefix("disbursement-")] = status
        if wf.status == WorkflowExecutionStatus.RUNNING:
            running.append(wf.id.removeprefix("disbursement-"))
        elif wf.status not in (WorkflowExecutionStatus.COMPLETED, None):
            failed.append(wf.id.removeprefix("disbursement-"))
    for drawdown_id in expected:
        if drawdown_id not in statuses:
            try:
                desc = await client.get_workflow_handle(f"disbursement-{drawdown_id}").describe()
            except RPCError:
                continue
            statuses[drawdown_id] = desc.status.name if desc.status else "UNKNOWN"
    histories: dict[str, Any] = {}
    for drawdown_id in list(dict.fromkeys([*drawdown_ids, *failed]))[:limit]:
        handle = client.get_workflow_handle(f"disbursement-{drawdown_id}")
        try:
            desc = await handle.describe()
            history = await handle.fetch_history()
        except Exception as exc:
            histories[drawdown_id] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        events = []
        for event in history.events:
            name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
            extra = ""
            attrs = event.WhichOneof("attributes")
            if attrs:
                payload = getattr(event, attrs)
                failure = getattr(payload, "failure", None)
                if failure is not None and failure.message:
                    extra = f" {failure.message[:160]}"
                activity = getattr(payload, "activity_type", None)
                if activity is not None and activity.name:
                    extra = f" {activity.name}{extra}"
            events.append(f"{event.event_id} {name}{extra}")
        histories[drawdown_id] = {
            "status": desc.status.name if desc.status else "UNKNOWN",
            "pending_activities": [
                f"{a.activity_type.name} attempt {a.attempt} {a.last_failure.message[:160]}"
                for a in desc.raw_description.pending_activities
            ],
            "events": len(events),
            "tail": events[-25:],
        }
    return {
        "by_status": dict(by_status),
        "running": running,
        "failed": failed,
        "statuses": statuses,
        "histories": histories,
    }


def log_errors(logs: Path) -> Counter[str]:
    """Error-level JSON lines of the API and worker logs by event name, and the plain-text tracebacks (the
    Temporal SDK logs every failed activity attempt with one) by the last exception of each chain."""
    found: Counter[str] = Counter()
    for path in sorted(logs.glob("*.log")):
        if not path.name.startswith(("api", "worker")):
            continue
        part = path.stem.split("-")[0]
        pending: str | None = None  # the last exception line of the traceback chain being read
        in_traceback = False
        for raw in path.read_text(errors="replace").splitlines():
            if raw.startswith("Traceback"):
                in_traceback = True
                continue
            if raw.startswith(("During handling", "The above exception")):
                pending = None
                continue
            if in_traceback:
                if raw.startswith(" ") or not raw.strip():
                    continue
                in_traceback = False
                pending = raw.split(":", 1)[0][:80]
                continue
            if pending is not None and raw.strip():
                found[f"{part}: {pending}"] += 1
                pending = None
            if '"error"' not in raw and '"critical"' not in raw:
                continue
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("level") in ("error", "critical"):
                found[f"{part}: {record.get('event', '?')}"] += 1
        if pending is not None:
            found[f"{part}: {pending}"] += 1
    return found


# --- the outbox scenario: webhooks through relay kills and a PostgreSQL crash ------------------------------
#
# `--scenario outbox` (and `all`, the default): embedded PostgreSQL (migrated), a webhook receiver process
# that answers a third of its calls 500 (devtools/receiver.py, verifying every signature and logging each
# delivery it accepts, in arrival order), an admin's endpoint for every event, `giantflow relay` processes -
# no API, worker or Temporal: this runner emits the events itself (services.events.emit, a few per
# transaction, like a domain's change would), over many aggregates with several events each, interleaved.
# Phase 1 emits half of them over a window while a relay is SIGKILLed every few seconds and restarted;
# phase 2 emits the other half and SIGKILLs PostgreSQL (the whole server, like a crash) in the middle, then
# starts it again. After each phase the run waits until nothing is left to deliver (bounded). It then checks,
# from the receiver's log and the outbox: every event emitted once and delivered, no event's first delivery
# after a later one (by outbox seq) of its aggregate, every duplicate carrying its event's webhook-id, no
# delivery pending or dead-lettered. Retries come after a short backoff
# (GIANTFLOW_WEBHOOK_FIRST_RETRY_SECONDS, 1 s here instead of 5 s).


@dataclass
class OutboxLog:
    kills: list[tuple[float, str, int]] = field(default_factory=list)  # (t, relay, work left at the kill)
    pg_stops: list[tuple[float, float, int]] = field(default_factory=list)  # (t, seconds down, work left)
    notes: list[str] = field(default_factory=list)
    producer_retries: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    def at(self) -> float:
        return time.monotonic() - self.started


class OutboxStack:
    """PostgreSQL, the receiver and the relays of the outbox scenario, in ``data_dir``; every process runs
    the code snapshot in ``src``."""

    def __init__(self, data_dir: Path, src: Path, *, seed: int, args: argparse.Namespace) -> None:
        from devtools.devstack import free_port
        from services.notifications.webhooks import new_secret

        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.src = src
        self.seed = seed
        self.args = args
        self.pg_port = free_port()
        self.receiver_port = free_port()
        self.jwt_secret = secrets.token_urlsafe(32)
        self.webhook_secret = new_secret()
        self.deliveries = data_dir / "deliveries.jsonl"
        self.postgres: EmbeddedPostgres | None = None
        self.receiver: Proc | None = None
        self.relays: list[Proc] = []
        self._pg_log: Any = None

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.pg_port}/giantflow"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}/hooks"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
        env.setdefault("XDG_RUNTIME_DIR", "/tmp")
        env["PYTHONPATH"] = str(self.src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "GIANTFLOW_ENVIRONMENT": "test",
                "GIANTFLOW_JWT_SECRET": self.jwt_secret,
                "GIANTFLOW_DATABASE_URL": self.database_url,
                "GIANTFLOW_DATA_DIR": str(self.data_dir / "var"),
                "GIANTFLOW_LOG_LEVEL": "WARNING",
                "GIANTFLOW_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
                "GIANTFLOW_WEBHOOK_FIRST_RETRY_SECONDS": str(self.args.webhook_first_retry),
                "GIANTFLOW_WEBHOOK_TIMEOUT_SECONDS": str(self.args.webhook_timeout),
            }
        )
        return env

    def _proc(self, name: str, argv: list[str], ready: Callable[[], bool], listens: str) -> Proc:
        from devtools.devstack import Part

        part = Part(name, argv, ready=ready, listens=listens, death_signal=signal.SIGKILL)
        return Proc(part, self.env(), self.logs / f"{name}.log")

    def start(self) -> None:
        """PostgreSQL, migrations and the receiver (the relays start once the endpoint is registered)."""
        from devtools.devstack import EmbeddedPostgres, migrate, tcp_open, wait_until

        self._pg_log = (self.logs / "postgres.log").open("a", buffering=1)
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres", port=self.pg_port, log=self._pg_log)
        self.postgres.start()
        say(f"  postgres      127.0.0.1:{self.pg_port} (data in {self.postgres.data_dir})")
        migrate(self.env())
        say("  migrations    alembic upgrade head: done")
        argv = [sys.executable, "-P", "-m", "devtools.receiver", "--port", str(self.receiver_port)]
        argv += ["--secret", self.webhook_secret, "--fail-ratio", str(self.args.receiver_fail_ratio)]
        argv += ["--seed", str(self.seed), "--log", str(self.deliveries)]
        self.receiver = self._proc(
            "receiver",
            argv,
            lambda: tcp_open("127.0.0.1", self.receiver_port),
            f"{self.url} (answers {self.args.receiver_fail_ratio:.0%} of calls 500)",
        )
        self.receiver.start()
        receiver = self.receiver
        wait_until(receiver.part.ready, timeout=30, what="receiver", alive=lambda: receiver.alive)
        say(f"  receiver      {receiver.part.listens}")

    def start_relays(self) -> None:
        from devtools.devstack import giantflow

        for n in range(self.args.relays):
            relay = self._proc(f"relay-{n + 1}", giantflow("relay"), lambda: True, "the outbox")
            relay.start()
            self.relays.append(relay)
        say(f"  relays        {len(self.relays)} x `giantflow relay`")

    def stop(self) -> None:
        stop_all([*self.relays, *([self.receiver] if self.receiver else [])], self.postgres, self._pg_log)


def outbox_plan(seed: int, events: int, aggregates: int, largest_batch: int) -> list[list[Any]]:
    """The events to emit, as transactions (lists of (event, audience)): ``events`` decisions over
    ``aggregates`` applications, interleaved at random; each names itself in its reason (how a receipt is
    matched to its event without trusting the webhook-id)."""
    from bench.journey import DISTRICT
    from devtools.seeding import random_uscc
    from services.events import ApplicationDecided, Audience

    rng = random.Random(seed + 2)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(aggregates)]
    usccs = [random_uscc(DISTRICT, rng) for _ in range(aggregates)]
    order = [n % aggregates for n in range(events)]
    rng.shuffle(order)
    steps: Counter[int] = Counter()
    flat = []
    for n, a in enumerate(order):
        event = ApplicationDecided(
            application_id=ids[a],
            uscc=usccs[a],
            program=PROGRAM,
            tier="specialized_new",
            status="municipal_review",
            stage="municipal",
            decision="approve",
            reason=f"chaos event {n:05d}: aggregate {a:04d} step {steps[a]:03d}",
        )
        steps[a] += 1
        flat.append((event, Audience(uscc=usccs[a])))
    batches = []
    while flat:
        size = rng.randint(1, largest_batch)
        batches.append(flat[:size])
        flat = flat[size:]
    return batches


async def register_outbox_endpoint(sessionmaker: Any, stack: OutboxStack) -> uuid.UUID:
    """An admin's endpoint for every event type, with the secret the receiver verifies."""
    from services.notifications.models import WebhookEndpoint

    endpoint_id = uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                owner="admin-chaos",
                owner_role="admin",
                uscc=None,
                url=stack.url,
                description="chaos: outbox",
                event_types=[],
                secret=stack.webhook_secret,
                created_by="admin-chaos",
            )
        )
    return endpoint_id


async def work_left(engine: Any) -> int:
    """Events not fanned out yet and deliveries still pending."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        left = await conn.scalar(
            text(
                "SELECT (SELECT count(*) FROM outbox_events WHERE fanned_out_at IS NULL) "
                "+ (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')"
            )
        )
    return int(left or 0)


async def emit_batch(sessionmaker: Any, batch: list[Any], log: OutboxLog) -> None:
    """Commit one transaction of events; after a failure, look (once the database answers) whether it
    committed all the same, and emit it again only if not: every event exactly once."""
    from sqlalchemy import text

    from services.events import emit

    marker = batch[0][0].reason
    while True:
        try:
            async with sessionmaker() as session, session.begin():
                for event, audience in batch:
                    await emit(session, event, audience)
            return
        except Exception as exc:  # the database went away: connection refused, reset, ...
            log.producer_retries[type(exc).__name__] += 1
        while True:
            await asyncio.sleep(0.5)
            try:
                async with sessionmaker() as session:
                    found = await session.scalar(
                        text("SELECT count(*) FROM outbox_events WHERE data->>'reason' = :marker"),
                        {"marker": marker},
                    )
                break
            except Exception as exc:
                log.producer_retries[f"looking: {type(exc).__name__}"] += 1
        if found:
            return


async def produce(sessionmaker: Any, batches: list[list[Any]], window: float, log: OutboxLog) -> None:
    """Emit ``batches`` evenly over about ``window`` seconds."""
    started = time.monotonic()
    for n, batch in enumerate(batches):
        await emit_batch(sessionmaker, batch, log)
        ahead = started + window * (n + 1) / len(batches) - time.monotonic()
        if ahead > 0:
            await asyncio.sleep(ahead)


async def kill_relays(
    stack: OutboxStack, engine: Any, rng: random.Random, every: float, stop: asyncio.Event, log: OutboxLog
) -> None:
    """SIGKILL a random relay about every ``every`` seconds until ``stop``."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(0.5, 1.5) * every)
        if stop.is_set():
            return
        victim = rng.choice(stack.relays)
        left = await work_left(engine)
        if victim.kill():
            log.kills.append((log.at(), victim.name, left))
            say(f"  {log.at():6.1f} s  SIGKILL {victim.name} ({left} events or deliveries left to relay)")


async def crash_postgres(stack: OutboxStack, engine: Any, after: float, down: float, log: OutboxLog) -> None:
    """``after`` seconds in, SIGKILL PostgreSQL, ``down`` seconds later start it again (kill_and_restart)."""
    await asyncio.sleep(after)
    left = await work_left(engine)
    postgres = stack.postgres
    assert postgres is not None
    log.pg_stops.append((log.at(), down, left))
    say(f"  {log.at():6.1f} s  SIGKILL PostgreSQL ({left} events or deliveries left to relay)")
    answered = await kill_and_restart(
        postgres.process, partial(postgres.start, timeout=60), postgres.ready, down=down
    )
    say(f"  {log.at():6.1f} s  PostgreSQL up again, answering {answered:.1f} s after the kill")


async def supervise_relays(stack: OutboxStack, stop: asyncio.Event, log: OutboxLog, delay: float) -> None:
    """Restart the relays that died (``delay`` s later); the receiver must stay up."""
    while not stop.is_set():
        if stack.receiver is not None and not stack.receiver.alive:
            raise RuntimeError(f"the webhook receiver died; see {stack.receiver.log_path}")
        now = time.monotonic()
        for relay in stack.relays:
            note = relay.supervise(now, delay)
            if note:
                log.notes.append(note)
                say(f"  ! {note}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)


async def drain(engine: Any, timeout: float) -> float:
    """Wait until nothing is left to relay (bounded); the seconds waited."""
    started = time.monotonic()
    shown = 0.0
    while time.monotonic() - started < timeout:
        try:
            left = await work_left(engine)
        except Exception:  # the database is coming back
            left = -1
        if left == 0:
            break
        if time.monotonic() - shown >= 10:
            say(f"  settling: {left if left >= 0 else '?'} events or deliveries left to relay")
            shown = time.monotonic()
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def outbox_run(args: argparse.Namespace, seed: int, stack: OutboxStack) -> bool:
    from services.db import create_engine, create_sessionmaker

    engine = create_engine(stack.database_url, pool_size=2)
    sessionmaker = create_sessionmaker(engine)
    log = OutboxLog()
    stop = asyncio.Event()
    supervisor: asyncio.Task[None] | None = None
    try:
        endpoint_id = await register_outbox_endpoint(sessionmaker, stack)
        stack.start_relays()
        supervisor = asyncio.create_task(supervise_relays(stack, stop, log, args.restart_delay))
        batches = outbox_plan(seed, args.events, args.aggregates, largest_batch=5)
        half = len(batches) // 2
        rng = random.Random(seed + 3)
        log.started = time.monotonic()

        phase1 = sum(len(b) for b in batches[:half])
        say(
            f"outbox phase 1: {phase1} events over ~{args.outbox_window:g} s, a relay SIGKILLed every "
            f"~{args.relay_kill_every:g} s, the receiver refusing {args.receiver_fail_ratio:.0%} of calls"
        )
        stop_kills = asyncio.Event()
        kills = asyncio.create_task(kill_relays(stack, engine, rng, args.relay_kill_every, stop_kills, log))
        await guarded(produce(sessionmaker, batches[:half], args.outbox_window, log), supervisor)
        stop_kills.set()
        await kills
        settled1 = await guarded(drain(engine, args.outbox_settle_timeout), supervisor)
        say(f"  phase 1 relayed {settled1:.0f} s after its last event")

        say(
            f"outbox phase 2: {args.events - phase1} events over ~{args.outbox_window:g} s, PostgreSQL "
            f"SIGKILLed {0.4 * args.outbox_window:g} s in and restarted {args.pg_down:g} s later"
        )
        crash = asyncio.create_task(
            crash_postgres(stack, engine, 0.4 * args.outbox_window, args.pg_down, log)
        )
        await guarded(produce(sessionmaker, batches[half:], args.outbox_window, log), supervisor)
        await guarded(crash, supervisor)
        settled2 = await guarded(drain(engine, args.outbox_settle_timeout), supervisor)
        say(f"  phase 2 relayed {settled2:.0f} s after its last event")
        report = await outbox_account(engine, stack, endpoint_id, args.events, log)
        report["settle_seconds"] = [round(settled1, 1), round(settled2, 1)]
    finally:
        stop.set()
        if supervisor is not None:
            with contextlib.suppress(Exception):
                await supervisor
        await engine.dispose()
    (stack.data_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print_outbox_report(seed, report)
    return bool(report["passed"])


@dataclass(frozen=True)
class Emitted:
    """An outbox row, as the accounting needs it."""

    id: str
    seq: int
    aggregate: str
    reason: str  # names the event (outbox_plan): how a receipt is matched without trusting its webhook-id
    at: float  # occurred_at, epoch seconds


def judge_receipts(events: list[Emitted], received: list[Any], planned: int) -> dict[str, Any]:
    """What the receiver logged (``devtools.receiver.Received``, in arrival order) against the outbox: every
    event emitted once and delivered, each receipt carrying its event's webhook-id and body, and per aggregate
    the first deliveries in outbox ``seq`` order. ``failures`` says what went wrong."""
    by_reason = {e.reason: e for e in events}
    receipts: Counter[str] = Counter()
    wrong_id: list[str] = []  # a receipt whose webhook-id is not its event's (or of no event)
    changed: list[str] = []  # a duplicate whose body differs from the first delivery's
    first_body: dict[str, Any] = {}
    arrivals: dict[str, list[Emitted]] = defaultdict(list)  # aggregate -> first deliveries, in arrival order
    lags: list[float] = []
    for item in received:
        reason = item.body.get("data", {}).get("reason")
        event = by_reason.get(reason)
        if event is None or item.webhook_id != event.id:
            wrong_id.append(f"{item.webhook_id}: {reason}")
            continue
        receipts[event.id] += 1
        if receipts[event.id] == 1:
            first_body[event.id] = item.body
            arrivals[event.aggregate].append(event)
            lags.append(1000 * (item.at - event.at))
        elif item.body != first_body[event.id]:
            changed.append(event.id)
    out_of_order = []
    for aggregate, firsts in arrivals.items():
        highest = 0
        for event in firsts:
            if event.seq < highest:
                out_of_order.append(f"aggregate {aggregate}: seq {event.seq} arrived after seq {highest}")
            highest = max(highest, event.seq)
    emitted_twice = len(events) - len(by_reason)
    missing = [e.id for e in events if receipts[e.id] == 0]
    lags.sort()
    failures = []
    if len(by_reason) != planned or emitted_twice:
        failures.append(
            f"emitted {len(by_reason)} distinct events of {planned} planned ({emitted_twice} twice)"
        )
    if missing:
        failures.append(f"{len(missing)} events never delivered")
    if out_of_order:
        failures.append(f"{len(out_of_order)} out of order")
    if wrong_id or changed:
        failures.append(
            f"{len(wrong_id)} receipts with another event's webhook-id, {len(changed)} changed bodies"
        )
    return {
        "planned": planned,
        "emitted": len(events),
        "aggregates": len({e.aggregate for e in events}),
        "delivered": len(receipts),
        "missing": len(missing),
        "missing_ids": missing[:50],
        "receipts": len(received),
        "duplicates": sum(n - 1 for n in receipts.values()),
        "receipts_with_other_id": len(wrong_id),
        "wrong_id_samples": wrong_id[:10],
        "changed_bodies": len(changed),
        "out_of_order": len(out_of_order),
        "out_of_order_samples": out_of_order[:10],
        "lag_ms": {
            "p50": round(_percentile(lags, 50)),
            "p99": round(_percentile(lags, 99)),
            "max": round(lags[-1]) if lags else 0,
        },
        "failures": failures,
    }


async def outbox_account(
    engine: Any, stack: OutboxStack, endpoint_id: uuid.UUID, planned: int, log: OutboxLog
) -> dict[str, Any]:
    from sqlalchemy import text

    from devtools.receiver import read_log

    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT id::text, seq, aggregate_id::text, data->>'reason', "
                    "extract(epoch FROM occurred_at) FROM outbox_events ORDER BY seq"
                )
            )
        ).all()
        deliveries = dict(
            (
                await conn.execute(
                    text("SELECT status, count(*) FROM webhook_deliveries WHERE endpoint_id = :e GROUP BY 1"),
                    {"e": endpoint_id},
                )
            ).all()
        )
        attempts = dict(
            (
                await conn.execute(
                    text(
                        "SELECT coalesce(status_code::text, 'no answer'), count(*) FROM webhook_attempts "
                        "GROUP BY 1 ORDER BY 1"
                    )
                )
            ).all()
        )
    events = [Emitted(i, int(seq), a, r, float(at)) for i, seq, a, r, at in rows]
    report = judge_receipts(events, read_log(stack.deliveries), planned)
    failures = report["failures"]
    if set(deliveries) - {"delivered"}:
        failures.append(f"deliveries not delivered: {deliveries}")
    if not log.kills or not log.pg_stops:
        failures.append("the attack did not happen (no relay kill or no PostgreSQL stop)")
    return report | {
        "deliveries": deliveries,
        "attempts": attempts,
        "relay_kills": [f"{t:.1f}s {name} ({left} left)" for t, name, left in log.kills],
        "relay_restarts": sum(r.restarts for r in stack.relays),
        "pg_stops": [f"{t:.1f}s for {down:g}s ({left} left)" for t, down, left in log.pg_stops],
        "relays_died_by_themselves": log.notes,
        "producer_retries": dict(log.producer_retries),
        "passed": not failures,
    }


def _percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(pct / 100 * len(values)) - 1))]


def print_outbox_report(seed: int, report: dict[str, Any]) -> None:
    say()
    say(f"=== outbox chaos, seed {seed} ===")
    say(
        f"events           {report['emitted']:>7}   (planned {report['planned']}, "
        f"over {report['aggregates']} aggregates)"
    )
    say(f"delivered        {report['delivered']:>7}   (missing {report['missing']})")
    say(
        f"duplicates       {report['duplicates']:>7}   (receipts {report['receipts']}; with another event's "
        f"webhook-id {report['receipts_with_other_id']}, bodies changed {report['changed_bodies']})"
    )
    say(
        f"out of order     {report['out_of_order']:>7}   "
        "(per aggregate, by outbox seq, among first deliveries)"
    )
    say(f"deliveries       {report['deliveries']}")
    say(f"attempts         {report['attempts']}")
    say(f"relay kills      {len(report['relay_kills']):>7}   (restarts {report['relay_restarts']})")
    say(f"postgres stops   {len(report['pg_stops']):>7}   {report['pg_stops']}")
    lag = report["lag_ms"]
    say(f"lag              p50 {lag['p50']} ms, p99 {lag['p99']} ms, max {lag['max']} ms (first delivery)")
    if report["producer_retries"]:
        say(f"producer retries {report['producer_retries']}")
    if report["relays_died_by_themselves"]:
        say(f"relays that died by themselves: {report['relays_died_by_themselves']}")
    for sample in [*report["out_of_order_samples"][:5], *report["wrong_id_samples"][:5]]:
        say(f"  {sample}")
    verdict = "PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"])
    say(f"outbox chaos     {verdict}")


def outbox_scenario(args: argparse.Namespace, seed: int, data_dir: Path) -> bool:
    stack = OutboxStack(data_dir / "outbox", data_dir / "src", seed=seed, args=args)
    say(f"outbox scenario: {args.events} events, set-up in {stack.data_dir}")
    try:
        stack.start()
        return asyncio.run(outbox_run(args, seed, stack))
    finally:
        stack.stop()


# --- the run ---------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    p.add_argument("--disbursements", type=int, default=1000, help="drawdowns to request (default 1000)")
    p.add_argument("--enterprises", type=int, default=8, help="enterprises recognised through the API")
    p.add_argument("--concurrency", type=int, default=24, help="concurrent clients")
    p.add_argument("--apis", type=int, default=2, choices=(1, 2))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--worker-kill-every", type=float, default=5.0, help="mean seconds between worker kills")
    p.add_argument("--api-kill-every", type=float, default=15.0, help="mean seconds between API kills")
    p.add_argument("--worker-kills", type=int, default=0, help="at most this many worker kills (0: no bound)")
    p.add_argument("--api-kills", type=int, default=0, help="at most this many API kills (0: no bound)")
    p.add_argument("--restart-delay", type=float, default=0.5, help="seconds before a killed part restarts")
    p.add_argument(
        "--temporal-kills",
        type=int,
        default=2,
        help="Temporal dev server SIGKILLs during the load (default 2)",
    )
    p.add_argument(
        "--postgres-kills", type=int, default=2, help="PostgreSQL SIGKILLs during the load (default 2)"
    )
    p.add_argument(
        "--server-down", type=float, default=3.0, help="seconds a SIGKILLed server stays down (default 3)"
    )
    p.add_argument(
        "--recover-timeout", type=float, default=120.0, help="bound of each time-to-recover measure (s)"
    )
    p.add_argument("--load-timeout", type=float, default=240.0, help="bound of the load phase (s)")
    p.add_argument("--settle-timeout", type=float, default=150.0, help="bound of the settle phase (s)")
    p.add_argument("--client-timeout", type=float, default=15.0, help="a client's read timeout (s)")
    p.add_argument("--bank-error-rate", type=float, default=0.10)
    p.add_argument("--bank-timeout-rate", type=float, default=0.03)
    p.add_argument("--bank-after-commit-rate", type=float, default=0.08)
    p.add_argument("--bank-duplicate-rate", type=float, default=0.10)
    p.add_argument(
        "--bank-hang", type=float, default=11.0, help="seconds a bank hang lasts (> the 10 s client)"
    )
    p.add_argument("--bank-latency-ms", type=int, default=5)
    p.add_argument("--bank-max-faults-per-key", type=int, default=4)
    p.add_argument("--dual-share", type=float, default=0.25, help="share of drawdowns above the threshold")
    p.add_argument("--reject-share", type=float, default=0.02, help="share finance rejects")
    p.add_argument("--closed-share", type=float, default=0.03, help="share to the closed bank account")
    p.add_argument("--double-submit-share", type=float, default=0.05, help="share sent twice at once")
    p.add_argument(
        "--repay-share", type=float, default=0.3, help="share of drawdowns repaid once paid (1-3 parts)"
    )
    p.add_argument(
        "--repay-full-share", type=float, default=0.4, help="share of those repaid in full (else 20-90 %%)"
    )
    p.add_argument(
        "--repay-wait",
        type=float,
        default=45.0,
        help="bound (s) for the repayments once every drawdown is done, the chaos still on",
    )
    p.add_argument(
        "--ref", default=None, help="run the code of this git ref (git archive) instead of the working tree"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="also fail on API contract violations (500s, 404 after 201, ...)",
    )
    p.add_argument("--keep", action="store_true", help="keep the data folder even when the run passes")
    p.add_argument(
        "--scenario",
        choices=("all", "drawdowns", "servers", "outbox"),
        default="all",
        help="drawdowns under worker, API, Temporal and PostgreSQL kills; servers: the same drawdowns under "
        "the Temporal and PostgreSQL kills only; webhooks under relay kills and a database crash; or all "
        "(drawdowns, then outbox)",
    )
    p.add_argument("--events", type=int, default=1000, help="outbox: events to emit and deliver")
    p.add_argument("--aggregates", type=int, default=100, help="outbox: aggregates the events belong to")
    p.add_argument("--relays", type=int, default=1, help="outbox: `giantflow relay` processes")
    p.add_argument("--relay-kill-every", type=float, default=3.0, help="outbox: mean seconds between kills")
    p.add_argument(
        "--receiver-fail-ratio", type=float, default=0.33, help="outbox: share of calls answered 500"
    )
    p.add_argument(
        "--outbox-window", type=float, default=20.0, help="outbox: seconds each half is emitted over"
    )
    p.add_argument("--pg-down", type=float, default=5.0, help="outbox: seconds PostgreSQL stays down")
    p.add_argument(
        "--webhook-first-retry",
        type=float,
        default=1.0,
        help="outbox: seconds before a first retry (doubling)",
    )
    p.add_argument(
        "--webhook-timeout", type=float, default=2.0, help="outbox: a call's timeout (a lease is this + 30 s)"
    )
    p.add_argument(
        "--outbox-settle-timeout", type=float, default=240.0, help="outbox: bound of each drain (s)"
    )
    p.add_argument("--report", type=Path, default=None, help="also write the JSON report here")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    if args.scenario == "servers":  # the drawdowns with only the servers crashed: each recovery on its own
        args.worker_kill_every = args.api_kill_every = 0.0
    scenarios = {
        "drawdowns": f"{args.disbursements} disbursements",
        "servers": f"{args.disbursements} disbursements under server crashes only",
        "outbox": f"{args.events} outbox events",
    }
    chosen = [
        what
        for name, what in scenarios.items()
        if args.scenario == name or (args.scenario == "all" and name != "servers")
    ]
    say(f"chaos run: seed {seed}, " + " then ".join(chosen))
    wall = time.monotonic()
    data_dir = Path(tempfile.mkdtemp(prefix=f"giantflow-chaos-{seed}-"))
    try:
        say(f"code: {snapshot(data_dir / 'src', args.ref)}")
        from bench.journey import DISTRICT
        from devtools.seeding import random_uscc
    except (subprocess.CalledProcessError, OSError, ImportError) as exc:
        say(f"chaos run could not take its code snapshot: {type(exc).__name__}: {exc}")
        shutil.rmtree(data_dir, ignore_errors=True)
        return 2
    rng = random.Random(seed)
    usccs = [random_uscc(DISTRICT, rng) for _ in range(args.enterprises + 1)]
    closed = usccs[-1] if args.closed_share > 0 else None
    faults = {
        "seed": seed,
        "latency_ms": args.bank_latency_ms,
        "error_rate": args.bank_error_rate,
        "timeout_rate": args.bank_timeout_rate,
        "answer_after_commit_error_rate": args.bank_after_commit_rate,
        "duplicate_delivery_rate": args.bank_duplicate_rate,
        "hang_seconds": args.bank_hang,
        "max_faults_per_key": args.bank_max_faults_per_key,
        **({"reject_beneficiaries": closed} if closed else {}),
    }
    stack = Stack(data_dir, seed=seed, apis=args.apis, workers=args.workers, faults=faults)

    def on_signal(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # also when started in the background with SIGINT ignored
    passed = False
    try:
        verdicts: dict[str, bool] = {}
        if args.scenario in ("all", "drawdowns", "servers"):
            say(f"set-up in {data_dir}")
            stack.start(write_program)
            verdicts["drawdowns" if args.scenario == "all" else args.scenario] = asyncio.run(
                run(args, seed, stack, usccs[: args.enterprises] + ([closed] if closed else []), wall)
            )
            stack.stop()
        if args.scenario in ("all", "outbox"):
            verdicts["outbox"] = outbox_scenario(args, seed, data_dir)
        say("chaos run: " + ", ".join(f"{k} {'passed' if v else 'FAILED'}" for k, v in verdicts.items()))
        passed = all(verdicts.values())
    except KeyboardInterrupt:
        say("interrupted")
    except Exception as exc:
        say(f"chaos run failed to complete: {type(exc).__name__}: {exc}")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stack.stop()
        if passed and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            kept = "data, logs and report.json" if (data_dir / "report.json").exists() else "data and logs"
            say(f"{kept} kept in {data_dir}")
        say(
            f"seed {seed}: replay with  .venv/bin/python bench/chaos.py --seed {seed} "
            f"--disbursements {args.disbursements}{f' --ref {args.ref}' if args.ref else ''}"
            f"{f' --scenario {args.scenario}' if args.scenario != 'all' else ''}"
            f"  (or make chaos SEED={seed})"
        )
        say(f"wall time {time.monotonic() - wall:.0f} s")
    return 0 if passed else 1


async def run(args: argparse.Namespace, seed: int, stack: Stack, usccs: list[str], wall: float) -> bool:
    from services.auth import Role
    from services.db import create_engine

    chaos_log = ChaosLog()
    stats = LoadStats()
    stop_supervisor = asyncio.Event()
    supervisor = asyncio.create_task(supervise(stack, stop_supervisor, chaos_log, args.restart_delay))
    timeout = httpx.Timeout(args.client_timeout, connect=2.0)
    limits = httpx.Limits(
        max_connections=args.concurrency * 2 + 8, max_keepalive_connections=args.concurrency
    )
    # The service's engine options (pool_pre_ping): this runner's connections outlive PostgreSQL crashes too.
    engine = create_engine(stack.database_url, pool_size=2)
    recoveries = RecoveryLog()
    load_over, stop_watching = asyncio.Event(), asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:
            # 1. enterprises, recognised through the whole review path, with their credit lines.
            seeding = time.monotonic()
            setup_api = Api(stack.api_urls, http, stats, deadline=time.monotonic() + 180)
            enterprises = [
                Enterprise(uscc=u, closed_account=(u == usccs[-1] and args.closed_share > 0)) for u in usccs
            ]
            await guarded(
                asyncio.gather(*(seed_enterprise(setup_api, stack, e, 150) for e in enterprises)),
                supervisor,
            )
            say(
                f"seeded {len(enterprises)} recognised enterprises with credit lines through the API "
                f"in {time.monotonic() - seeding:.0f} s (set-up total {time.monotonic() - wall:.0f} s)"
            )
            finance_tokens = {sub: stack.token(Role.finance, sub) for sub in OFFICERS}
            jobs = plan(seed, args.disbursements, enterprises, args)

            # 2. the load under chaos.
            chaos = Chaos(
                stack,
                seed=seed + 1,
                worker_every=args.worker_kill_every,
                api_every=args.api_kill_every,
                log=chaos_log,
                worker_kills=args.worker_kills,
                api_kills=args.api_kills,
            )
            crash_plan = server_plan(seed, len(jobs), args.temporal_kills, args.postgres_kills)
            parts = [
                f"a worker killed every ~{args.worker_kill_every:g} s" if args.worker_kill_every > 0 else "",
                f"an API every ~{args.api_kill_every:g} s" if args.api_kill_every > 0 else "",
                f"SIGKILLed and restarted {args.server_down:g} s later: "
                + ", ".join(
                    f"{kind} after {n} drawdowns or {share * args.load_timeout:.0f} s"
                    for share, n, kind in crash_plan
                )
                if crash_plan
                else "",
            ]
            say(
                f"load: {len(jobs)} drawdowns ({sum(len(j.repayments) for j in jobs)} repayments planned "
                f"on {sum(1 for j in jobs if j.repayments)} of them once paid), {args.concurrency} clients, "
                + "; ".join(p for p in parts if p)
                + "; bank faults on"
            )
            load_started = time.monotonic()
            stats.started = chaos_log.started = load_started
            chaos.start()
            watcher = asyncio.create_task(
                watch_part_kills(stack, engine, chaos_log, recoveries, stop_watching, args.recover_timeout)
            )
            crashes = asyncio.create_task(
                crash_servers(
                    stack,
                    engine,
                    crash_plan,
                    stats,
                    load_over,
                    recoveries,
                    down=args.server_down,
                    bound=args.recover_timeout,
                    load_timeout=args.load_timeout,
                )
            )
            api = Api(stack.api_urls, http, stats, deadline=time.monotonic() + args.load_timeout)
            repay_api = Api(stack.api_urls, http, stats, deadline=api.deadline + args.repay_wait)
            try:
                outcomes = await guarded(
                    run_load(
                        api,
                        jobs,
                        finance_tokens,
                        args.concurrency,
                        repay_api=repay_api,
                        watch=PaidWatch(engine),
                        repay_wait=args.repay_wait,
                    ),
                    supervisor,
                )
                load_over.set()
                await guarded(crashes, supervisor)  # the last crash measured (bounded)
            finally:
                chaos.stop_event.set()
                chaos.join()
                if not crashes.done():
                    crashes.cancel()
            load_time = time.monotonic() - load_started
            say(
                f"load done in {load_time:.0f} s; {len(chaos_log.events)} part kills, "
                f"{len(crash_plan)} server crashes; chaos stopped"
            )

        # 3. settle: every part back, bank calm, bounded wait for the payments.
        for _ in range(300):
            if all(p.alive for p in [*stack.apis, *stack.workers]) and all(
                a.part.ready() for a in stack.apis
            ):
                break
            await asyncio.sleep(0.2)
        bank_faults = await calm_bank(stack.bank_url)
        approved_ids = {o.drawdown_id for o in outcomes if o.result == "approved" and o.drawdown_id}
        waited = await guarded(settle(engine, approved_ids, args.settle_timeout), supervisor)
        say(f"settled after {waited:.0f} s")
        stop_watching.set()
        await guarded(watcher, supervisor)

        # 4. accounting.
        async with httpx.AsyncClient(timeout=30) as http:
            statement = (await http.get(f"{stack.bank_url}/statement")).json()
            bank_stats = (await http.get(f"{stack.bank_url}/admin/stats")).json()
            rows = await read_rows(engine)
            reader = Api(stack.api_urls, http, LoadStats(), deadline=time.monotonic() + 60)
            api_lines = await read_lines(reader, finance_tokens[OFFICERS[0]], list(rows["lines"]))
        ledger = await ledger_check(engine)
        report = account(outcomes, rows, statement)
        repaid = account_repayments(outcomes, rows, api_lines)
        wf = await workflow_report(
            stack.temporal_address, report["lost_ids"] + report["mismatch_ids"], list(rows["drawdowns"])
        )
        report["orphan_workflows"] = [d for d in wf["running"] if d not in rows["drawdowns"]]
        report["stuck_workflows"] = [
            d for d in wf["running"] if rows["drawdowns"].get(d, {}).get("status") in TERMINAL
        ]
        # Every drawdown has its workflow (a Temporal that lost one in a crash would leave it without), and
        # the ones awaiting approval have it running, waiting for the decisions.
        report["missing_workflows"] = [d for d in rows["drawdowns"] if d not in wf["statuses"]]
        report["waiting_workflows"] = [
            d
            for d, r in rows["drawdowns"].items()
            if r["status"] == "pending_approval" and d in wf["running"]
        ]
        report["not_waiting"] = [
            d
            for d, r in rows["drawdowns"].items()
            if r["status"] == "pending_approval" and d in wf["statuses"] and d not in wf["running"]
        ]
    finally:
        stop_supervisor.set()
        stop_watching.set()
        if watcher is not None and not watcher.done():
            watcher.cancel()
        for task in (supervisor, watcher):
            if task is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await task
        await engine.dispose()

    errors = log_errors(stack.logs)
    recovery = recovery_figures(recoveries)
    contract = contract_violations(stats, chaos_log)
    failed = bool(
        report["duplicated"]
        or report["lost"]
        or repaid["duplicated"]
        or repaid["lost"]
        or repaid["mismatches"]
        or repaid["lines_off"]
        or not ledger["balanced"]
        or report["unexplained_payments"]
        or report["mismatches"]
        or report["stuck_workflows"]
        or report["missing_workflows"]
        or report["not_waiting"]
        or wf["failed"]
        or (args.strict and contract)
    )
    full = {
        "seed": seed,
        "args": {k: str(v) for k, v in vars(args).items()},
        "figures": {k: v for k, v in report.items() if not k.endswith("_ids")},
        "repayments": repaid,
        "lost_ids": report["lost_ids"],
        "mismatch_ids": report["mismatch_ids"],
        "ledger": {**ledger, "debits": str(ledger["debits"]), "credits": str(ledger["credits"])},
        "kills": [f"{t:.1f}s {what}" for t, what in chaos_log.events],
        "recovery": recovery,
        "server_crashes_skipped": recoveries.skipped,
        "recoveries": [
            {k: round(v, 2) if isinstance(v, float) else v for k, v in vars(r).items() if k != "killed"}
            for r in sorted(recoveries.done, key=lambda r: r.at)
        ],
        "unexpected_exits": chaos_log.notes,
        "exits_while_a_server_was_down": chaos_log.excused,
        "client_calls": dict(stats.calls),
        "api_500_samples": stats.samples_500,
        "contract_samples": stats.samples,
        "unexpected_answers": stats.unexpected[:50],
        "bank_stats": bank_stats,
        "bank_faults_at_end": bank_faults,
        "workflows": wf,
        "contract_violations": contract,
        "log_errors": dict(errors),
        "load_seconds": round(load_time, 1),
        "settle_seconds": round(waited, 1),
        "passed": not failed,
    }
    (stack.data_dir / "report.json").write_text(json.dumps(full, indent=2, default=str))
    if args.report:
        args.report.write_text(json.dumps(full, indent=2, default=str))
    print_report(
        seed, report, repaid, ledger, chaos_log, stats, bank_stats, wf, errors, load_time, waited, contract
    )
    print_recovery(recovery, args.server_down)
    if recoveries.skipped:
        say(f"server crashes skipped, the load having ended first: {', '.join(recoveries.skipped)}")
    return not failed


def contract_violations(stats: LoadStats, chaos_log: ChaosLog) -> dict[str, int]:
    """What the API answered against its contract (API.md) while no money went wrong: 500s, a 404 for a
    drawdown it had just created, an approval retried with its Idempotency-Key answered 409 although the
    first attempt was recorded, other unexpected answers, parts that died by themselves. They fail the run
    with --strict."""
    found = {
        "API 500 answers": sum(v for k, v in stats.calls.items() if k.endswith("HTTP 500")),
        "404 right after 201 (read-your-writes)": sum(
            v for k, v in stats.calls.items() if k.endswith(NOT_FOUND_AFTER_CREATE)
        ),
        "approval retried with its key answered 409 though recorded": stats.calls.get(OFFICER_409, 0),
        "other unexpected answers": len(stats.unexpected),
        "parts that died by themselves": len(chaos_log.notes),
    }
    return {k: v for k, v in found.items() if v}


def account(outcomes: list[Outcome], rows: dict[str, Any], statement: dict[str, Any]) -> dict[str, Any]:
    drawdowns, disbursements = rows["drawdowns"], rows["disbursements"]
    accepted = {o.drawdown_id for o in outcomes if o.drawdown_id}
    payments: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in statement["payments"]:
        payments[p["key"]].append(p)
    # The bank knows keys, the database which drawdown each key pays: every payment must map to one.
    key_owner = {disb["bank_key"]: d for d, disb in disbursements.items()}
    by_drawdown = {key_owner[k]: v for k, v in payments.items() if k in key_owner}

    duplicated = sum(len(v) - 1 for v in payments.values() if len(v) > 1)
    # One client request (caller + Idempotency-Key) must never turn into two paid drawdowns.
    per_request: Counter[tuple[str, str]] = Counter()
    for drawdown_id in by_drawdown:
        request = rows["idempotency"].get(drawdown_id)
        if request is not None:
            per_request[request] += 1
    duplicated += sum(n - 1 for n in per_request.values() if n > 1)
    for o in outcomes:  # one key answered with several drawdowns, each of them paid
        if len(o.ids_seen) > 1:
            duplicated += max(0, sum(1 for i in o.ids_seen if i in by_drawdown) - 1)

    approved_db = {
        d for d, r in drawdowns.items() if r["status"] in ("approved", "disbursed", "repaid", "failed")
    }
    client_approved = {o.drawdown_id for o in outcomes if o.result == "approved" and o.drawdown_id}
    lost_ids: list[str] = []
    reasons: Counter[str] = Counter()
    for d in sorted(approved_db | client_approved):
        row = drawdowns.get(d)
        status = row["status"] if row else None
        if status is None:
            reasons["approved by the API, no drawdown row"] += 1
        elif status in ("pending_approval", "expired", "rejected"):
            reasons[f"approved by the API, database says {status}"] += 1
        elif status == "approved" and d in by_drawdown:
            reasons["paid by the bank, not recorded in the ledger"] += 1
        elif status == "approved":
            reasons["approved, never paid or refused"] += 1
        else:
            continue
        lost_ids.append(d)
    for d in sorted(accepted - approved_db - client_approved):
        if d not in drawdowns:
            reasons["answered 201, never committed"] += 1
            lost_ids.append(d)
    mismatch_ids: list[str] = []
    mismatches: Counter[str] = Counter()
    unexplained = 0
    for key in payments:
        if key not in rows["bank_keys"]:
            unexplained += 1
            mismatches["bank payment under a key no disbursement uses"] += 1
    for d, paid in by_drawdown.items():
        row, disb = drawdowns.get(d), disbursements.get(d)
        if row is None or row["status"] not in ("approved", *PAID_OUT):
            unexplained += 1
            mismatches[f"bank paid a drawdown that is {row['status'] if row else 'unknown'}"] += 1
            mismatch_ids.append(d)
            continue
        if row["status"] == "approved" or disb is None or disb["status"] != "paid":
            if d not in lost_ids:
                lost_ids.append(d)
                reasons["paid by the bank, not recorded in the ledger"] += 1
            continue
        if f"{Decimal(row['amount']):.2f}" != paid[0]["amount"] or disb["bank_reference"] != paid[0]["id"]:
            mismatches["amount or bank reference differs from the bank's"] += 1
            mismatch_ids.append(d)
        if rows["entries"].get(d, Decimal(0)) != Decimal(row["amount"]):
            mismatches["ledger entry missing or of another amount"] += 1
            mismatch_ids.append(d)
    for d, disb in disbursements.items():
        if disb["status"] == "paid" and d not in by_drawdown:
            mismatches["ledger says paid, the bank has no payment"] += 1
            mismatch_ids.append(d)
    for line in rows["lines"].values():
        mine = [r for r in drawdowns.values() if r["line"] == line["id"]]
        drawn = sum((Decimal(r["amount"]) for r in mine if r["status"] in PAID_OUT), Decimal("0.00"))
        reserved = sum(
            (Decimal(r["amount"]) for r in mine if r["status"] in ("pending_approval", "approved")),
            Decimal("0.00"),
        )
        if Decimal(line["drawn"]) != drawn or Decimal(line["reserved"]) != reserved:
            mismatches["credit line drawn/reserved differ from its drawdowns"] += 1

    statuses = Counter(r["status"] for d, r in drawdowns.items() if d in accepted)
    results = Counter(o.result for o in outcomes)
    return {
        "planned": len(outcomes),
        "requested": len(accepted),
        "requested_in_database": len(drawdowns),
        "approved": len(approved_db | client_approved),
        "paid": sum(len(v) for v in payments.values()),
        "paid_amount": statement.get("total"),
        "duplicated": duplicated,
        "lost": len(lost_ids),
        "lost_reasons": dict(reasons),
        "refused_by_bank": statuses.get("failed", 0),
        "repaid_in_full": statuses.get("repaid", 0),
        "rejected_by_finance": statuses.get("rejected", 0),
        "left_pending_approval": statuses.get("pending_approval", 0),
        "expired": statuses.get("expired", 0),
        "unexplained_payments": unexplained,
        "mismatches": sum(mismatches.values()),
        "mismatch_reasons": dict(mismatches),
        "client_results": dict(results),
        "statuses": dict(statuses),
        "lost_ids": lost_ids,
        "mismatch_ids": list(dict.fromkeys(mismatch_ids)),
    }


def account_repayments(
    outcomes: list[Outcome], rows: dict[str, Any], api_lines: dict[str, Any]
) -> dict[str, Any]:
    """The repayments against the database, and every credit line against its drawdowns, its repayments,
    the ledger and what the API shows of it:

    - duplicated: rows beyond one per Idempotency-Key (a repayment carries its key as its ``reference``), and
      a key answered 201 with two repayment ids (a replay answers the first one's id: not a duplicate);
    - lost: a repayment answered 201 that the database does not hold, and a row no key of the client's
      explains;
    - mismatches: a row of another amount or drawdown than its key's, or without its balanced ledger entry;
    - lines off: a line whose ``repaid`` is not the sum of its drawdowns' nor of its repayment rows (each
      drawdown's ``repaid`` the sum of its own, ``repaid`` status exactly when nothing is outstanding), whose
      outstanding (``drawn - repaid``) is not within 0 and the limit, whose credit receivable is not its
      outstanding, or that GET /credit-lines/{id} shows otherwise than PostgreSQL holds it or with an
      ``available`` other than the service's ``limit - reserved - outstanding`` (models.CreditLine.available,
      schemas.CreditLineRead)."""
    zero = Decimal("0.00")
    drawdowns, lines, receivables = rows["drawdowns"], rows["lines"], rows["receivables"]
    planned = {r.key: (o, r) for o in outcomes for r in o.job.repayments}
    sent = {key: (o, r) for key, (o, r) in planned.items() if r.sent}
    by_key: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    by_id: dict[str, dict[str, Any]] = {}
    per_line: defaultdict[str, Decimal] = defaultdict(Decimal)
    per_drawdown: defaultdict[str, Decimal] = defaultdict(Decimal)
    for row in rows["repayments"]:
        by_key[row["reference"]].append(row)
        by_id[row["id"]] = row
        per_line[row["line"]] += Decimal(row["amount"])
        per_drawdown[row["drawdown"]] += Decimal(row["amount"])

    duplicated = sum(len(found) - 1 for found in by_key.values() if len(found) > 1)
    duplicated += sum(len(r.ids_seen) - 1 for _, r in sent.values() if len(r.ids_seen) > 1)
    lost: Counter[str] = Counter()
    mismatches: Counter[str] = Counter()
    for key, (_, repayment) in sent.items():
        for repayment_id in repayment.ids_seen:
            if repayment_id not in by_id:
                lost["answered 201, not in the database"] += 1
            elif by_id[repayment_id]["reference"] != key:
                mismatches["answered with another key's repayment"] += 1
    for reference, found in by_key.items():
        if reference is None or reference not in sent:
            lost["in the database, never sent by the client"] += len(found)
            continue
        outcome, repayment = sent[reference]
        for row in found:
            amount = Decimal(row["amount"])
            if amount != repayment.amount or row["drawdown"] != outcome.drawdown_id:
                mismatches["of another amount or drawdown than its key's"] += 1
            if not Decimal(row["debits"]) == Decimal(row["credits"]) == amount:
                mismatches["ledger entry missing or of another amount"] += 1

    line_reasons: Counter[str] = Counter()
    lines_off = 0
    for line_id, line in lines.items():
        off: set[str] = set()
        limit, reserved = Decimal(line["credit_limit"]), Decimal(line["reserved"])
        drawn, repaid = Decimal(line["drawn"]), Decimal(line["repaid"])
        outstanding = drawn - repaid
        mine = [r for r in drawdowns.values() if r["line"] == line_id]
        if repaid != sum((Decimal(r["repaid"]) for r in mine), zero) or repaid != per_line.get(line_id, zero):
            off.add("repaid is not the sum of its drawdowns' repayments")
        for r in mine:
            amount, paid_back = Decimal(r["amount"]), Decimal(r["repaid"])
            if (
                paid_back != per_drawdown.get(r["id"], zero)
                or (r["status"] == "repaid") != (paid_back == amount)
                or (r["status"] not in PAID_OUT and paid_back != zero)
            ):
                off.add("a drawdown's repaid is not the sum of its repayments or disagrees with its status")
        if not zero <= outstanding <= limit:
            off.add("outstanding not within 0 and the limit")
        if receivables.get(line["uscc"], zero) != outstanding:
            off.add("credit receivable is not the outstanding")
        shown = api_lines.get(line_id)
        if shown is None:
            off.add("GET /credit-lines/{id} did not answer")
        else:
            held = {"limit": limit, "reserved": reserved, "drawn": drawn, "repaid": repaid}
            if (
                any(Decimal(shown[k]) != v for k, v in held.items())
                or Decimal(shown["outstanding"]) != outstanding
            ):
                off.add("the API shows other figures than PostgreSQL holds")
            if Decimal(shown["available"]) != limit - reserved - outstanding:
                off.add("available is not limit - reserved - outstanding")
        if off:
            lines_off += 1
            line_reasons.update(off)

    not_sent: Counter[str] = Counter()
    for outcome in outcomes:
        unsent = sum(1 for r in outcome.job.repayments if not r.sent)
        if unsent:
            reason = outcome.repaying or (
                "an earlier part gave up" if any(r.sent for r in outcome.job.repayments) else outcome.result
            )
            not_sent[reason] += unsent
    return {
        "planned": len(planned),
        "requested": len(sent),
        "drawdowns": len({o.drawdown_id for o, _ in sent.values()}),
        "answered": sum(1 for _, r in sent.values() if r.ids_seen),
        "replayed": sum(r.replays for _, r in sent.values()),
        "not_sent": dict(not_sent),
        "recorded": len(rows["repayments"]),
        "recorded_amount": f"{sum((Decimal(r['amount']) for r in rows['repayments']), zero):.2f}",
        "duplicated": duplicated,
        "lost": sum(lost.values()),
        "lost_reasons": dict(lost),
        "mismatches": sum(mismatches.values()),
        "mismatch_reasons": dict(mismatches),
        "lines_checked": len(lines),
        "lines_off": lines_off,
        "line_reasons": dict(line_reasons),
        "client_results": dict(Counter(r.result for _, r in planned.values())),
    }


RECOVERY_MEASURES = {
    "answered": "server answers",
    "ready": "API /readyz ready",
    "payout": "next payout",
}


def print_recovery(figures: dict[str, dict[str, Any]], down: float) -> None:
    """The kills of each kind and their time to recover, from the SIGKILL: min / median / max seconds."""
    if not figures:
        return
    say()
    say(f"time to recover, s from the SIGKILL: min / median / max (servers stay down {down:g} s)")
    say(f"  {'kill':<9} {'count':>5}   " + "".join(f"{title:<22}" for title in RECOVERY_MEASURES.values()))
    for kind, row in figures.items():
        cells = []
        for measure in RECOVERY_MEASURES:
            if measure not in row:
                cells.append(f"{'-':<22}")
                continue
            m = row[measure]
            text = (
                "never" if m["min"] is None else f"{m['min']:.1f} / {m['median']:.1f} / {m['max']:.1f}"
            ) + (f" ({m['never']} never)" if m["never"] and m["min"] is not None else "")
            cells.append(f"{text:<22}")
        say(f"  {kind:<9} {row['kills']:>5}   " + "".join(cells).rstrip())


def print_report(
    seed: int,
    report: dict[str, Any],
    repaid: dict[str, Any],
    ledger: dict[str, Any],
    chaos_log: ChaosLog,
    stats: LoadStats,
    bank_stats: dict[str, Any],
    wf: dict[str, Any],
    errors: Counter[str],
    load_time: float,
    waited: float,
    contract: dict[str, int],
) -> None:
    kills = Counter(what.split()[-1] for _, what in chaos_log.events)
    say()
    say(f"=== chaos run, seed {seed} ===")
    say(
        f"requested        {report['requested']:>7}   (planned {report['planned']}, "
        f"drawdown rows {report['requested_in_database']})"
    )
    say(
        f"approved         {report['approved']:>7}   (rejected by finance {report['rejected_by_finance']}, "
        f"left pending {report['left_pending_approval']}, expired {report['expired']})"
    )
    say(
        f"paid             {report['paid']:>7}   (total {report['paid_amount']}; refused by the bank "
        f"{report['refused_by_bank']}; repaid in full since {report['repaid_in_full']})"
    )
    say(f"duplicated       {report['duplicated']:>7}")
    say(f"lost             {report['lost']:>7}   {report['lost_reasons'] or ''}")
    say(
        f"repayments       {repaid['requested']:>7}   (keys sent, on {repaid['drawdowns']} drawdowns; "
        f"planned {repaid['planned']}, answered 201 {repaid['answered']}, replayed answers "
        f"{repaid['replayed']}; "
        f"not sent: {repaid['not_sent'] or 0})"
    )
    say(f"repay recorded   {repaid['recorded']:>7}   (amount {repaid['recorded_amount']})")
    say(f"repay duplicated {repaid['duplicated']:>7}")
    say(f"repay lost       {repaid['lost']:>7}   {repaid['lost_reasons'] or ''}")
    say(f"repay mismatches {repaid['mismatches']:>7}   {repaid['mismatch_reasons'] or ''}")
    say(
        f"lines checked    {repaid['lines_checked']:>7}   (repaid = its drawdowns' repayments, "
        "0 <= outstanding <= limit, available = limit - reserved - outstanding, receivable = outstanding)"
    )
    say(f"lines off        {repaid['lines_off']:>7}   {repaid['line_reasons'] or ''}")
    say(
        f"ledger balanced  {'yes' if ledger['balanced'] else 'NO':>7}   (debits {ledger['debits']}, credits "
        f"{ledger['credits']}, {ledger['entries']} entries, {len(ledger['unbalanced_entries'])} unbalanced)"
    )
    say(f"mismatches       {report['mismatches']:>7}   {report['mismatch_reasons'] or ''}")
    say(f"unexplained pay  {report['unexplained_payments']:>7}")
    say(f"contract         {sum(contract.values()):>7}   {contract or ''}")
    say(f"seed             {seed:>7}")
    say()
    say(
        f"load {load_time:.0f} s, settle {waited:.0f} s; kills: "
        + ", ".join(f"{n} x {name}" for name, n in sorted(kills.items()))
    )
    if chaos_log.notes:
        say(f"parts that died by themselves: {chaos_log.notes}")
    say("client results: " + ", ".join(f"{k} {v}" for k, v in sorted(report["client_results"].items())))
    say("repayment results: " + ", ".join(f"{k} {v}" for k, v in sorted(repaid["client_results"].items())))
    say("client retries: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.calls.items())))
    faults = {k: v for k, v in bank_stats.items() if v}
    say(f"bank: {faults}")
    say(
        f"disbursement workflows: {wf['by_status']}; waiting for approval "
        f"{len(report['waiting_workflows'])} (drawdowns pending {report['left_pending_approval']}, not "
        f"waiting {len(report['not_waiting'])}), missing {len(report['missing_workflows'])}, stuck on a "
        f"terminal drawdown {len(report['stuck_workflows'])}, failed {len(wf['failed'])}, orphans (drawdown "
        f"never committed, end at their approval deadline) {len(report['orphan_workflows'])}"
    )
    if chaos_log.excused:
        say(f"parts that exited while a server they need was down (restarted): {chaos_log.excused}")
    for kind, samples in stats.samples.items():
        say(f"{kind}, e.g.:")
        for sample in samples[:3]:
            say(f"  {sample}")
    if stats.samples_500:
        say(f"API 500 answers ({sum(v for k, v in stats.calls.items() if k.endswith('HTTP 500'))}):")
        for sample in stats.samples_500[:5]:
            say(f"  {sample}")
    if stats.unexpected:
        say(f"unexpected answers ({len(stats.unexpected)}):")
        for line in stats.unexpected[:10]:
            say(f"  {line}")
    if errors:
        say(
            "error lines in the logs (failed activity attempts are retried): "
            + ", ".join(f"{k} {v}" for k, v in errors.most_common(10))
        )
    for drawdown_id, history in list(wf["histories"].items())[:5]:
        say(f"workflow disbursement-{drawdown_id}: {history.get('status', history.get('error'))}")
        for line in history.get("pending_activities", []):
            say(f"    pending {line}")
        for line in history.get("tail", [])[-12:]:
            say(f"    {line}")


if __name__ == "__main__":
    sys.exit(main())
