"""The `giantflow` command: dev, api, worker, relay, migrate, temporal-setup, token, bank-sim, mail."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from services.config import Settings, get_settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")

app = typer.Typer(
    help="giantflow: SME cultivation workflows and benefits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"giantflow: {message}", err=True)
    raise typer.Exit(1)


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"invalid settings: {first['msg']}")


@app.command()
def dev() -> None:
    """Start embedded PostgreSQL, migrations, the Temporal dev server, bank simulator, worker and API."""
    from devtools.devstack import DevStack

    settings = _settings()
    _load_programs_or_fail(settings)
    raise typer.Exit(DevStack(settings, out=lambda line: typer.echo(line)).run())


@app.command()
def api() -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from services.app import create_app
    from services.logging import cache_loggers
    from services.runtime import settle_heap

    settings = _settings()
    _load_programs_or_fail(settings)
    application = create_app(settings)
    cache_loggers()
    settle_heap(settings.gc_gen0_threshold)
    uvicorn.run(
        application,
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
        # Which proxies' X-Forwarded-For to believe is GIANTFLOW_TRUSTED_PROXIES' say (services/ratelimit.py),
        # not uvicorn's (which would believe 127.0.0.1's by default): the client is the socket peer.
        proxy_headers=False,
    )


@app.command()
def worker() -> None:
    """Run the Temporal worker (workflows and activities)."""
    from services.runtime import settle_heap
    from workflows.worker import run_worker

    settings = _settings()
    _load_programs_or_fail(settings)
    settle_heap()
    try:
        asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        pass


@app.command()
def relay() -> None:
    """Run only the outbox's webhook relay (each worker runs one too, unless GIANTFLOW_WORKER_RELAY=false)."""
    settings = _settings()
    try:
        asyncio.run(_relay(settings))
    except KeyboardInterrupt:
        pass


async def _relay(settings: Settings) -> None:
    import signal

    from services.db import create_engine, create_sessionmaker
    from services.logging import cache_loggers, configure_logging
    from services.notifications.relay import relay_forever

    configure_logging(settings.log_level, json=settings.log_json)
    cache_loggers()
    from services.metrics import serve_metrics
    from services.telemetry import RELAY, instrument_engine, setup_tracing, shutdown_tracing

    setup_tracing(settings, RELAY)
    metrics = serve_metrics(settings)  # with GIANTFLOW_METRICS_PORT: the process's own figures
    engine = create_engine(settings.effective_database_url)
    instrument_engine(engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await relay_forever(create_sessionmaker(engine), settings, stop)
    finally:
        await engine.dispose()
        if metrics is not None:
            metrics.close()
        shutdown_tracing()


@app.command("temporal-setup")
def temporal_setup() -> None:
    """Register the search attributes the workflows carry (Uscc, Program, Tier, Stage) in the Temporal
    namespace; those already there are left alone. Create or update the daily bank reconciliation's schedule
    (`reconciliation-daily`). Run it before the API and worker on a new cluster."""
    from temporalio.service import RPCError

    settings = _settings()
    try:
        added = asyncio.run(_temporal_setup(settings))
    except (RuntimeError, RPCError, ValueError) as exc:  # unreachable, refused, or of another type
        typer.echo(f"giantflow: temporal-setup at {settings.temporal_address}: {exc}", err=True)
        _exit_without_teardown(1)
    namespace = settings.temporal_namespace
    typer.echo(
        f"search attributes added in {namespace}: {', '.join(added)}"
        if added
        else f"search attributes already registered in {namespace}"
    )
    _exit_without_teardown(0)


def _exit_without_teardown(code: int) -> NoReturn:
    """End a short-lived command that used a Temporal client without the interpreter's teardown: the
    client's Rust core keeps threads that can call into Python while it finalizes, which aborts the process
    ("PyGILState_Release: thread state ... must be current", temporalio/sdk-python#300) after the work
    is done. Everything the command wrote is flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _temporal_setup(settings: Settings) -> list[str]:
    from services.resources import connect_temporal
    from services.temporal import register_search_attributes

    client = await connect_temporal(settings, lazy=False)
    added = await register_search_attributes(client, settings.temporal_namespace)
    # The daily bank reconciliation's schedule (the worker ensures it at start-up as well).
    from services.credit.reconciliation import ensure_schedule

    await ensure_schedule(client, task_queue=settings.temporal_task_queue)
    return added


@app.command()
def migrate(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Upgrade the database to a revision (default: head)."""
    from alembic import command

    from services.migrate import alembic_config

    settings = _settings()
    try:
        command.upgrade(alembic_config(settings.effective_database_url), revision)
    except (OSError, ConnectionError) as exc:
        _fail(f"the database cannot be reached: {exc}")


@app.command("bank-sim")
def bank_sim(
    port: Annotated[int | None, typer.Option(help="port (default: from GIANTFLOW_BANK_URL)")] = None,
) -> None:
    """Run the partner-bank simulator (payments under idempotency keys, with fault injection)."""
    from urllib.parse import urlsplit

    import uvicorn

    from devtools.banksim import create_bank_app

    settings = _settings()
    url = urlsplit(settings.bank_url)
    uvicorn.run(
        create_bank_app(settings.data_dir / "bank"),
        host=url.hostname or "127.0.0.1",
        port=port or url.port or 8100,
        log_config=None,
        access_log=False,
    )


@app.command()
def token(
    role: Annotated[str, typer.Option(help="enterprise, reviewer, finance or admin")],
    sub: Annotated[
        str | None,
        typer.Option(
            help="user id (default: one per identity - enterprise-<uscc>, reviewer-<level>-<region>, "
            "finance-1, admin-1)"
        ),
    ] = None,
    uscc: Annotated[str | None, typer.Option(help="enterprise: its USCC")] = None,
    level: Annotated[str | None, typer.Option(help="reviewer: municipal, provincial or national")] = None,
    region: Annotated[
        str | None, typer.Option(help="reviewer: 6-digit region code (000000: the whole country)")
    ] = None,
    group: Annotated[
        list[str] | None,
        typer.Option(help="reviewer: a group it belongs to, e.g. a program's backup group (repeatable)"),
    ] = None,
    hours: Annotated[int, typer.Option(help="lifetime in hours")] = 12,
) -> None:
    """Print a development HS256 token for trying the API by hand."""
    from pydantic import ValidationError

    from services.auth import Role, default_sub, issue_development_token

    settings = _settings()
    try:
        kind = Role(role)
        typer.echo(
            issue_development_token(
                settings,
                role=kind,
                sub=sub or default_sub(kind, uscc=uscc, level=level, region=region),
                ttl=timedelta(hours=hours),
                uscc=uscc,
                level=level,
                region=region,
                groups=group or None,
            )
        )
    except (ValueError, ValidationError) as exc:
        _fail(
            str(exc).splitlines()[0]
            if not isinstance(exc, ValidationError)
            else "; ".join(e["msg"] for e in exc.errors())
        )


mail_app = typer.Typer(help="The e-mail the relay sends (`make run`: to its sink).", no_args_is_help=True)
app.add_typer(mail_app, name="mail")


@mail_app.command("list")
def mail_list(
    status: Annotated[str | None, typer.Option(help="pending, sent or dead")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many, newest first")] = 20,
) -> None:
    """The latest e-mail messages: id, when, status, attempts, recipient, subject."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from services.notifications import mail
    from services.notifications.models import MAIL_STATUSES

    if status is not None and status not in MAIL_STATUSES:
        _fail(f"--status is one of {', '.join(MAIL_STATUSES)}")
    rows = asyncio.run(_with_session(_settings(), lambda s: mail.recent(s, status=status, limit=limit)))
    table = Table("id", "created", "status", "tries", "to", "subject", box=None)
    for row in rows:
        when = f"{row.created_at.astimezone():%Y-%m-%d %H:%M:%S}"
        to, subject = Text(row.recipient), Text(row.subject)  # as written, never read as markup
        table.add_row(str(row.id)[:8], when, row.status, str(row.attempts), to, subject)
    Console().print(table if rows else "No e-mail yet.")


@mail_app.command("show")
def mail_show(
    ident: Annotated[str, typer.Argument(metavar="ID", help="a message's id, or the start of it")],
    raw: Annotated[bool, typer.Option("--raw", help="the whole message as sent (RFC 5322)")] = False,
) -> None:
    """One message: its state and text (``--raw``: as the SMTP server gets it)."""
    from services.notifications import mail

    settings = _settings()
    try:
        row = asyncio.run(_with_session(settings, lambda s: mail.find(s, ident)))
    except LookupError as exc:
        _fail(str(exc))
    if row is None:
        _fail(f"no e-mail message {ident}")
    if raw:
        typer.echo(mail.message(settings, row).as_string())
        return
    ended, due = row.sent_at or row.dead_at, row.next_attempt_at if row.status == "pending" else None
    for name, value in [
        ("Id", str(row.id)),
        ("Event", f"{row.event_id} ({row.event_type})"),
        ("To", f"{row.recipient} ({row.recipient_kind})"),
        ("Subject", row.subject),
        ("Status", f"{row.status}, {row.attempts} attempt(s)"),
        ("Created", f"{row.created_at.astimezone():%Y-%m-%d %H:%M:%S}"),
        ("Next try", f"{due.astimezone():%Y-%m-%d %H:%M:%S}" if due else ""),
        (row.status.capitalize(), f"{ended.astimezone():%Y-%m-%d %H:%M:%S}" if ended else ""),
        ("Last error", row.last_error or ""),
    ]:
        if value:
            typer.echo(f"{name + ':':<12}{value}")
    typer.echo("\n" + row.body)


pool_app = typer.Typer(help="Cultivation pools (services/pools).", no_args_is_help=True)
app.add_typer(pool_app, name="pool")


@pool_app.command("import")
def pool_import(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="CSV (UTF-8 or GBK) or XLSX", dir_okay=False)],
    program: Annotated[str, typer.Option("--program", help="the program's key", metavar="KEY")],
) -> None:
    """Import a program's cultivation pool from FILE (columns USCC, name, region, industry, tier, notes, in
    English or Chinese) with a progress bar; a refused row (line, field, reason) goes to FILE.errors.csv."""
    from services.pools.command import PoolCommandError, import_file

    try:
        asyncio.run(import_file(_settings(), file, program_key=program))
    except PoolCommandError as exc:
        _fail(str(exc))


async def _with_session(settings: Settings, read: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``read(session)`` against the service's database; one clear line when it cannot be reached."""
    from services.db import create_engine, create_sessionmaker

    engine = create_engine(settings.effective_database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            return await read(session)
    except (OSError, ConnectionError) as exc:
        _fail(f"the database cannot be reached: {exc}")
    finally:
        await engine.dispose()


def _load_programs_or_fail(settings: Settings) -> None:
    try:
        from services.programs import ProgramFileError, load_programs
    except ImportError:  # pragma: no cover
        return
    try:
        load_programs(settings.programs_dir)
    except ProgramFileError as exc:
        _fail(str(exc))


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
