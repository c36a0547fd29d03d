"""The `giantflow` command: dev, api, worker, migrate, token, bank-sim."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from typing import Annotated, NoReturn

import typer

from services.config import Settings, get_settings

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
    from services.runtime import settle_heap

    settings = _settings()
    _load_programs_or_fail(settings)
    application = create_app(settings)
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
