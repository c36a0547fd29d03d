"""``giantflow pool import FILE --program KEY``: the same import job as the API's, run in this process with a
rich progress bar; every refused row (line, field, reason, value) is written to ``FILE.errors.csv``."""

from __future__ import annotations

import getpass
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from services.catalog.registry import ProgramRegistry
from services.config import Settings
from services.db import create_engine, create_sessionmaker
from services.errors import GiantflowError
from services.pools import service
from services.pools.schemas import PoolImportRead
from services.programs import ProgramFileError


class PoolCommandError(Exception):
    """What stops the command, in one line."""


def errors_path(file: Path) -> Path:
    return file.with_name(file.name + ".errors.csv")


async def import_file(settings: Settings, file: Path, *, program_key: str) -> PoolImportRead:
    console = Console(stderr=True)
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise PoolCommandError(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(content) > settings.max_upload_bytes:
        raise PoolCommandError(f"{file} is larger than {settings.max_upload_bytes:,} bytes: split it")
    engine = create_engine(settings.effective_database_url, pool_size=1)
    sessionmaker = create_sessionmaker(engine)
    try:
        # The programs in force, as the API and workers see them (services/catalog: the database's
        # versions, the files until the service has seeded it).
        try:
            registry = ProgramRegistry(engine, settings.programs_dir)
            await registry.refresh()
        except ProgramFileError as exc:
            raise PoolCommandError(str(exc)) from None
        programs = registry.book
        if program_key not in programs:
            raise PoolCommandError(f"no program {program_key} (programs: {', '.join(sorted(programs))})")
        owner = f"cli-{uuid.uuid4().hex[:12]}"
        async with sessionmaker() as session, session.begin():
            try:
                job = await service.accept_file(
                    session,
                    user=f"cli:{getpass.getuser()}",
                    program=programs[program_key],
                    filename=file.name,
                    content=content,
                    owner=owner,
                )
            except GiantflowError as exc:  # the file as a whole: nothing written
                raise PoolCommandError(f"{file} refused: {exc.detail}") from None
        console.print(
            Text(
                f"import {job.id}: {job.rows_total} rows ({job.format}"
                + (f", {job.encoding})" if job.encoding else ")")
            )
        )
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task(file.name, total=job.rows_total)
            await service.run_import(
                sessionmaker,
                job.id,
                programs=programs,
                owner=owner,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        async with sessionmaker() as session:
            result = await service.get_import(session, job.id)
            lines = await service.errors_file(session, job.id) if result.refused else []
    except OSError as exc:
        raise PoolCommandError(f"the database cannot be reached: {exc}") from None
    finally:
        await engine.dispose()
    out = errors_path(file)
    if lines:
        out.write_text("".join(lines), encoding="utf-8-sig", newline="")  # BOM: Excel reads it as UTF-8
    else:
        out.unlink(missing_ok=True)  # an earlier run's, no longer true
    console.print(
        Text(
            f"{result.status}: {result.accepted} accepted ({result.created} new, {result.updated} changed, "
            f"{result.unchanged} unchanged), {result.refused} refused"
            + (f"; refused rows in {out}" if lines else "")
        )
    )
    if result.status != "finished":
        raise PoolCommandError(f"import {job.id} is {result.status}: the worker will go on with it")
    return result
