"""The stack a benchmark runs against: `giantflow dev` (what `make run` runs: embedded PostgreSQL, the
Temporal dev server with its WAL pragmas, the bank simulator, the worker and the API) on free ports, in a
data folder of its own, with the benchmark program (``bench/programs``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from devtools.devstack import free_port, http_ok
from services.auth import Role, issue_development_token
from services.config import Settings

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROGRAMS = ROOT / "bench" / "programs"


@dataclass
class Stack:
    data_dir: Path
    api_port: int = field(default_factory=free_port)
    pg_port: int = field(default_factory=free_port)
    temporal_port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    bank_port: int = field(default_factory=free_port)
    programs_dir: Path = PROGRAMS
    process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
        env.update(
            {
                "GIANTFLOW_DATA_DIR": str(self.data_dir),
                "GIANTFLOW_API_PORT": str(self.api_port),
                "GIANTFLOW_EMBEDDED_POSTGRES_PORT": str(self.pg_port),
                "GIANTFLOW_TEMPORAL_ADDRESS": self.temporal_address,
                "GIANTFLOW_TEMPORAL_UI_PORT": str(self.ui_port),
                "GIANTFLOW_BANK_URL": self.bank_url,
                "GIANTFLOW_PROGRAMS_DIR": str(self.programs_dir),
                "PYTHONPATH": str(ROOT),
            }
        )
        return env

    @property
    def settings(self) -> Settings:
        return Settings(
            data_dir=self.data_dir,
            api_port=self.api_port,
            embedded_postgres_port=self.pg_port,
            temporal_address=self.temporal_address,
            temporal_ui_port=self.ui_port,
            bank_url=self.bank_url,
            programs_dir=self.programs_dir,
            log_level="WARNING",
        )

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def bank_url(self) -> str:
        return f"http://127.0.0.1:{self.bank_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def database_url(self) -> str:
        return self.settings.effective_database_url

    def start(self, timeout: float = 120.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "dev.log").open("ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(BIN / "giantflow"), "dev"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not http_ok(f"{self.api_url}/readyz"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"giantflow dev did not start; see {self.data_dir / 'dev.log'}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def part(self, command: str) -> psutil.Process:
        """The running part whose command line is ``giantflow <command>`` (the worker, the API ...)."""
        assert self.process is not None
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmdline = child.cmdline()
                if len(cmdline) >= 2 and cmdline[-1] == command and cmdline[-2].endswith("giantflow"):
                    return child
        raise LookupError(f"no `giantflow {command}` process under the stack")

    def token(self, role: Role, sub: str, **claims: str) -> str:
        return issue_development_token(self.settings, role=role, sub=sub, ttl=timedelta(hours=6), **claims)


AnyStack = TypeVar("AnyStack", bound=Stack)


@contextlib.contextmanager
def started(stack: AnyStack) -> Iterator[AnyStack]:
    """``stack`` started for the block, stopped after it (whatever the block raised)."""
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def running(data_dir: Path, programs_dir: Path = PROGRAMS) -> contextlib.AbstractContextManager[Stack]:
    return started(Stack(data_dir, programs_dir=programs_dir))


@contextlib.asynccontextmanager
async def api_in_process(
    prefix: str,
    *,
    programs_dir: Path | None = None,
    prepare: Callable[[str], Awaitable[None]] | None = None,
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """One benchmark alone (``python -m bench.<name>``): an embedded PostgreSQL in a temporary folder named
    from ``prefix``, migrated to head, ``prepare(database_url)`` run on it (untimed seeding), then the API in
    this process with no Temporal behind it. Yields a client on the API and an admin token."""
    import asyncio
    import tempfile

    from alembic import command

    from devtools.devstack import EmbeddedPostgres
    from services.app import create_app
    from services.migrate import alembic_config
    from services.resources import Resources

    chosen: dict[str, Any] = {} if programs_dir is None else {"programs_dir": programs_dir}
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        server = EmbeddedPostgres(Path(folder) / "pg", port=free_port())
        server.start()
        try:
            settings = Settings(
                database_url=server.url(),
                data_dir=Path(folder) / "data",
                **chosen,
                temporal_address=f"127.0.0.1:{free_port()}",  # not needed: these benchmarks never touch it
                log_level="WARNING",
            )
            await asyncio.to_thread(command.upgrade, alembic_config(settings.effective_database_url), "head")
            if prepare is not None:
                await prepare(settings.effective_database_url)
            app = create_app(settings, resources_factory=Resources.build)
            token = issue_development_token(settings, role=Role.admin, sub="bench-admin")
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://bench", timeout=120
                ) as api:
                    yield api, token
        finally:
            server.stop()


@contextlib.contextmanager
def process(argv: list[str], *, env: dict[str, str], ready_url: str | None, log: Path) -> Iterator[None]:
    """A helper process (the raw worker, the bare API) for the duration of one benchmark."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while ready_url is not None and not http_ok(ready_url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"{' '.join(argv)} did not start; see {log}")
                time.sleep(0.1)
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
