"""The rules of program versions: a program document is validated exactly as a program file is (the same
model, the same messages); versions are numbered per program and never changed; opening, closing or adding a
batch is a new version; the files seed the database at start."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.attributes import fields_of
from services.auth import CurrentUser, Role
from services.catalog import repository as repo
from services.catalog.models import ProgramVersion
from services.catalog.schemas import BatchCreate, BatchOpen, ProgramVersionRead
from services.errors import Conflict, FieldError, Forbidden, NotFound, Unprocessable
from services.programs import Batch, Program, document_problems

log = structlog.get_logger(__name__)


class ProgramExists(Conflict):
    slug, title = "program-exists", "The program exists"


class VersionUnchanged(Conflict):
    slug, title = "program-version-unchanged", "The version would change nothing"


class BatchState(Conflict):
    slug, title = "batch-state", "The batch is not in a state for this"


def authorize_admin(user: CurrentUser) -> None:
    if user.role is not Role.admin:
        raise Forbidden("Only an administrator manages programs and batches.")


def parse(document: Mapping[str, Any]) -> Program:
    """The document as a program, or a 422 whose detail is what ``load_program_file`` says of a file with
    this content (after the file's name) and whose ``errors`` name each field."""
    try:
        return Program.model_validate(document)
    except ValidationError as error:
        problems = document_problems(error)
        detail = "; ".join(f"{field}: {message}" if field else message for field, message in problems)
        raise Unprocessable(
            detail, errors=[FieldError(field=field or "body", message=message) for field, message in problems]
        ) from None


def _normal(document: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as the current model writes it (defaults filled in), for comparison."""
    try:
        return Program.model_validate(document).model_dump(mode="json")
    except ValidationError:
        return dict(document)


def read(row: ProgramVersion, *, current: bool, today: date) -> ProgramVersionRead:
    program = Program.model_validate(row.document)
    return ProgramVersionRead(
        **fields_of(row, ("program", "version", "source", "note", "created_by", "created_at", "document")),
        current=current,
        open_batches=[batch.key for batch in program.open_batches(today)],
    )


async def create_program(
    session: AsyncSession, *, user: CurrentUser, document: Mapping[str, Any], now: datetime
) -> ProgramVersionRead:
    """A new program: its version 1 (409 when the key is taken: a new version of it is
    ``POST /programs/{key}/versions``)."""
    authorize_admin(user)
    program = parse(document)
    await repo.lock_program(session, program.key)
    if await repo.latest(session, program.key) is not None:
        raise ProgramExists(
            f"Program {program.key!r} exists; POST /programs/{program.key}/versions makes a new version."
        )
    row = await repo.add(
        session,
        key=program.key,
        version=1,
        document=program.model_dump(mode="json"),
        source="api",
        created_by=user.sub,
    )
    return read(row, current=True, today=now.date())


async def create_version(
    session: AsyncSession, *, user: CurrentUser, key: str, document: Mapping[str, Any], now: datetime
) -> ProgramVersionRead:
    """The next version of program ``key``, whole (the document replaces the program's policy)."""
    authorize_admin(user)
    program = parse(document)
    if program.key != key:
        message = f"{program.key!r} is not this program's key ({key!r})"
        raise Unprocessable(f"key: {message}", errors=[FieldError(field="key", message=message)])
    return await _next_version(session, user=user, program=program, note=None, now=now)


async def _latest_or_404(session: AsyncSession, key: str) -> ProgramVersion:
    last = await repo.latest(session, key)
    if last is None:
        raise NotFound(f"No program {key!r}.")
    return last


async def _next_version(
    session: AsyncSession, *, user: CurrentUser, program: Program, note: str | None, now: datetime
) -> ProgramVersionRead:
    await repo.lock_program(session, program.key)
    last = await _latest_or_404(session, program.key)
    document = program.model_dump(mode="json")
    if _normal(last.document) == document:
        raise VersionUnchanged(f"Version {last.version} of {program.key!r} already says this.")
    row = await repo.add(
        session,
        key=program.key,
        version=last.version + 1,
        document=document,
        source="api",
        created_by=user.sub,
        note=note,
    )
    log.info("program_version_created", program=program.key, version=row.version, by=user.sub)
    return read(row, current=True, today=now.date())


async def _with_batches(
    session: AsyncSession,
    *,
    user: CurrentUser,
    key: str,
    change: Any,
    note: str,
    now: datetime,
) -> ProgramVersionRead:
    """The next version: the current one with its batches as ``change(batches)`` returns them, validated as
    any document is (a batch judged by a standard not in force is refused with the file's message)."""
    authorize_admin(user)
    await repo.lock_program(session, key)
    last = await _latest_or_404(session, key)
    document = _normal(last.document)
    document["batches"] = [
        batch.model_dump(mode="json") for batch in change(Program.model_validate(document))
    ]
    return await _next_version(session, user=user, program=parse(document), note=note, now=now)


def _batch_or_404(program: Program, key: str) -> Batch:
    for batch in program.batches:
        if batch.key == key:
            return batch
    raise NotFound(f"Program {program.key!r} has no batch {key!r}.")


async def add_batch(
    session: AsyncSession, *, user: CurrentUser, key: str, data: BatchCreate, now: datetime
) -> ProgramVersionRead:
    def change(program: Program) -> list[Batch]:
        if any(batch.key == data.key for batch in program.batches):
            raise BatchState(f"Program {key!r} already has a batch {data.key!r}.")
        return [*program.batches, Batch.model_construct(**data.model_dump())]

    return await _with_batches(
        session, user=user, key=key, change=change, note=f"batch {data.key} added", now=now
    )


async def open_batch(
    session: AsyncSession, *, user: CurrentUser, key: str, batch_key: str, data: BatchOpen, now: datetime
) -> ProgramVersionRead:
    """Open a batch today: one not yet open opens today (it is then judged by the ruleset in force today);
    one closed reopens from its first day until ``closes_on``, which it then needs."""
    today = now.date()

    def change(program: Program) -> list[Batch]:
        batch = _batch_or_404(program, batch_key)
        if batch.is_open(today):
            raise BatchState(f"Batch {batch_key!r} is open already (until {batch.closes_on}).")
        closes_on = data.closes_on or batch.closes_on
        if closes_on < today:
            message = f"the batch closed on {batch.closes_on}; say until when it reopens"
            raise Unprocessable(
                f"closes_on: {message}", errors=[FieldError(field="closes_on", message=message)]
            )
        opened = Batch.model_construct(
            key=batch.key, opens_on=min(batch.opens_on, today), closes_on=closes_on
        )
        return [opened if other.key == batch_key else other for other in program.batches]

    return await _with_batches(
        session, user=user, key=key, change=change, note=f"batch {batch_key} opened", now=now
    )


async def close_batch(
    session: AsyncSession, *, user: CurrentUser, key: str, batch_key: str, now: datetime
) -> ProgramVersionRead:
    """Close an open batch now: its last filing day becomes yesterday (both dates are included), so nothing
    more is filed in it from today. Applications already filed keep the version that judged them."""
    today = now.date()
    yesterday = today - timedelta(days=1)

    def change(program: Program) -> list[Batch]:
        batch = _batch_or_404(program, batch_key)
        if not batch.is_open(today):
            raise BatchState(
                f"Batch {batch_key!r} is not open (it runs {batch.opens_on} to {batch.closes_on})."
            )
        closed = Batch.model_construct(
            key=batch.key, opens_on=min(batch.opens_on, yesterday), closes_on=yesterday
        )
        return [closed if other.key == batch_key else other for other in program.batches]

    return await _with_batches(
        session, user=user, key=key, change=change, note=f"batch {batch_key} closed", now=now
    )


def program_of_batch(programs: Mapping[str, Program], *, user: CurrentUser, batch_key: str) -> str:
    """The key of the one program in force that has a batch ``batch_key``."""
    authorize_admin(user)
    owners = sorted(
        key for key, program in programs.items() if any(b.key == batch_key for b in program.batches)
    )
    if not owners:
        raise NotFound(f"No program has a batch {batch_key!r}.")
    if len(owners) > 1:
        raise Conflict(
            f"Batch {batch_key!r} is in the programs {', '.join(owners)}: close it through "
            f"/programs/{{key}}/batches/{batch_key}/close."
        )
    return owners[0]


async def program_version(
    session: AsyncSession, *, user: CurrentUser, key: str, version: int | None, now: datetime
) -> ProgramVersionRead:
    """One version of a program (the current one for None)."""
    authorize_admin(user)
    last = await _latest_or_404(session, key)
    row = last if version is None else await repo.get(session, key, version)
    if row is None:
        raise NotFound(f"Program {key!r} has no version {version}.")
    return read(row, current=row.version == last.version, today=now.date())


async def history(
    session: AsyncSession, *, user: CurrentUser, key: str, now: datetime
) -> list[ProgramVersionRead]:
    """Every version of a program, newest first (a program has a handful: no pages)."""
    authorize_admin(user)
    rows = await repo.history(session, key)
    if not rows:
        raise NotFound(f"No program {key!r}.")
    return [read(row, current=index == 0, today=now.date()) for index, row in enumerate(rows)]


async def seed(session: AsyncSession, programs: Mapping[str, Program]) -> None:
    """The program files as the database's seed, idempotent (any number of processes starting at once):

    - a program the database has no version of: its file becomes version 1;
    - the file says what the latest version says: nothing;
    - the latest version came from a file (no admin has made one since) and the file now differs: the file
      becomes the next version (a file edited and deployed);
    - the latest version was made through the API (the database is ahead of the file): the database is kept
      and the difference logged (``program_file_ignored``); the file no longer decides that program."""
    for key, program in programs.items():
        await repo.lock_program(session, key)
        document = program.model_dump(mode="json")
        last = await repo.latest(session, key)
        if last is None:
            await repo.add(session, key=key, version=1, document=document, source="file", created_by="seed")
            log.info("program_seeded", program=key, version=1)
        elif _normal(last.document) == document:
            continue
        elif last.source == "file":
            version = last.version + 1
            await repo.add(
                session, key=key, version=version, document=document, source="file", created_by="seed"
            )
            log.info("program_seeded", program=key, version=version)
        else:
            log.warning(
                "program_file_ignored",
                program=key,
                database_version=last.version,
                reason="the database has versions made through the API; the file differs and is not used",
            )
