"""Cultivation pools: importing a program's pool from a file (a durable job) and reading the pool.

An import job is a row (``pool_imports``) holding the file's rows. Whoever created it - the API (a background
task once the request has committed) or ``giantflow pool import`` - runs it at once under a lease: chunk by
chunk, each chunk's members, refusals and the job's progress in one transaction that first checks the lease
is still its own and the job still stands where it left it. A process that dies mid-import leaves the job
with its lease running out; the worker's periodic sweep (``resume_abandoned``) takes it over and goes on from
the last committed chunk, so nothing is done twice and nothing is lost. Re-importing a file changes nothing:
members are upserted by (program, USCC) and a row equal to the stored one is not written."""

from __future__ import annotations

import csv
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.attributes import fields_of
from services.auth import CurrentUser, Role
from services.errors import (
    Conflict,
    FieldError,
    Forbidden,
    GiantflowError,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    UnsupportedMediaType,
)
from services.pagination import Page, decode_cursor, split_page
from services.pools import repository as repo
from services.pools.files import FileRefused, read_pool_file
from services.pools.models import PoolImport
from services.pools.rules import Member, Refusal, RowChecker, csv_safe
from services.pools.schemas import ERRORS_SHOWN, PoolImportRead, PoolMemberRead, PoolMembership, RowRefusal
from services.programs import DEFAULT_FRAUD_BAR, IsoDuration, Program

log = structlog.get_logger(__name__)

CHUNK = 1000
"""Rows per transaction: members, refusals and progress of a chunk commit together."""
LEASE = timedelta(seconds=60)
"""How long a job is its runner's: each chunk renews it; once run out, the worker's sweep takes over."""
MAX_ATTEMPTS = 5
"""Runs a job gets (a crash or an error each); then it is marked failed."""

Progress = Callable[[int, int], None]


def authorize_import(user: CurrentUser) -> None:
    if user.role is not Role.admin:
        raise Forbidden("Only an administrator imports a cultivation pool.")


def authorize_pool_reader(user: CurrentUser) -> None:
    if user.role not in (Role.admin, Role.finance, Role.reviewer):
        raise Forbidden(
            "A program's pool is read by administrators, finance and reviewers (of their region)."
        )


def program_or_404(programs: Mapping[str, Program], key: str) -> Program:
    program = programs.get(key)
    if program is None:
        raise NotFound(f"No program {key}.")
    return program


def refused_file(exc: FileRefused) -> GiantflowError:
    """The problem a refused file answers with."""
    errors = [FieldError(field=exc.field, message=exc.detail)]
    if exc.status == 415:
        return UnsupportedMediaType(exc.detail, errors=errors)
    if exc.status == 413:
        return PayloadTooLarge(exc.detail, errors=errors)
    return Unprocessable(exc.detail, errors=errors)


def fingerprint(*, program: str, filename: str, content: bytes) -> dict[str, str]:
    """What makes two uploads the same request for the Idempotency-Key."""
    return {"program": program, "filename": filename, "sha256": hashlib.sha256(content).hexdigest()}


async def accept_file(
    session: AsyncSession,
    *,
    user: CurrentUser | str,
    program: Program,
    filename: str,
    content: bytes,
    owner: str,
) -> PoolImportRead:
    """Read the file (a refused file writes nothing: 413, 415 or 422) and queue its import, leased to
    ``owner`` (who runs it next with ``run_import``)."""
    try:
        parsed = read_pool_file(content, filename)
    except FileRefused as exc:
        raise refused_file(exc) from None
    job = PoolImport(
        id=uuid.uuid4(),
        program=program.key,
        filename=filename[:255] or "pool",
        file_format=parsed.format,
        encoding=parsed.encoding,
        sha256=hashlib.sha256(content).hexdigest(),
        status="queued",
        rows=[[line, *cells] for line, cells in parsed.rows],
        rows_total=len(parsed.rows),
        rows_done=0,
        accepted=0,
        refused=0,
        created=0,
        updated=0,
        attempts=0,
        requested_by=user if isinstance(user, str) else user.identity,
        lease_owner=owner,
        lease_until=datetime.now(UTC) + LEASE,
        created_at=datetime.now(UTC),
    )
    await repo.add_import(session, job)
    return _read(job)


_JOB_FIELDS = (
    "id program filename encoding status rows_total rows_done accepted refused created updated failure "
    "created_at finished_at"
).split()
"""What an import's read says as its row does (the row's ``file_format`` is its ``format``)."""


def _read(
    job: PoolImport, refusals: Sequence[RowRefusal] | None = None, total: int | None = None
) -> PoolImportRead:
    return PoolImportRead(
        **fields_of(job, _JOB_FIELDS),
        format=job.file_format,
        unchanged=job.accepted - job.created - job.updated,
        errors=list(refusals) if refusals is not None else None,
        errors_total=total,
    )


async def run_import(
    sessionmaker: async_sessionmaker[AsyncSession],
    import_id: uuid.UUID,
    *,
    programs: Mapping[str, Program],
    owner: str,
    progress: Progress | None = None,
) -> bool:
    """Run (or go on with) an import job under ``owner``'s lease; True when it finished here. Returns False
    at once when another process holds the job or it is already done."""
    async with sessionmaker() as session, session.begin():
        job = await repo.claim(session, import_id, owner=owner, lease=LEASE, max_attempts=MAX_ATTEMPTS)
        if job is None:
            return False
        rows = await repo.job_rows(session, import_id) or []
        key, cursor, total = job.program, job.rows_done, job.rows_total
    program = programs.get(key)
    if program is None:
        await _fail(sessionmaker, import_id, owner, f"the program {key} no longer exists")
        return False
    checker = RowChecker(program)
    for line, *cells in rows[:cursor]:
        checker.remember(line, tuple(cells))
    if progress is not None:
        progress(cursor, total)
    try:
        while cursor < total:
            members: list[Member] = []
            refusals: list[Refusal] = []
            refused_rows = 0
            for line, *cells in rows[cursor : cursor + CHUNK]:
                result = checker.check(line, tuple(cells))
                if isinstance(result, Member):
                    members.append(result)
                else:
                    refusals.extend(result)
                    refused_rows += 1
            done = min(total, cursor + CHUNK)
            if not await _commit_chunk(
                sessionmaker, import_id, owner=owner, program=key, cursor=cursor, done=done,
                members=members, refusals=refusals, refused_rows=refused_rows,
            ):  # fmt: skip
                log.warning("pool_import_lease_lost", import_id=str(import_id), at=cursor)
                return False
            cursor = done
            if progress is not None:
                progress(cursor, total)
        async with sessionmaker() as session, session.begin():
            job = await repo.lock_for_chunk(session, import_id)
            if job is None or job.lease_owner != owner or job.status != "running":
                return False
            job.status, job.finished_at, job.rows = "finished", func.now(), None
            job.lease_owner, job.lease_until = None, None
    except Exception:
        log.exception("pool_import_failed", import_id=str(import_id), at=cursor)
        raise
    log.info("pool_import_finished", import_id=str(import_id), rows=total)
    return True


async def _commit_chunk(
    sessionmaker: async_sessionmaker[AsyncSession],
    import_id: uuid.UUID,
    *,
    owner: str,
    program: str,
    cursor: int,
    done: int,
    members: list[Member],
    refusals: list[Refusal],
    refused_rows: int,
) -> bool:
    async with sessionmaker() as session, session.begin():
        job = await repo.lock_for_chunk(session, import_id)
        if job is None or job.lease_owner != owner or job.status != "running" or job.rows_done != cursor:
            return False
        created, updated = await repo.upsert_members(
            session, program=program, import_id=import_id, members=members
        )
        await repo.add_refusals(session, import_id, refusals)
        job.rows_done = done
        job.accepted += len(members)
        job.refused += refused_rows
        job.created += created
        job.updated += updated
        job.lease_until = func.now() + LEASE
    return True


async def _fail(
    sessionmaker: async_sessionmaker[AsyncSession], import_id: uuid.UUID, owner: str, why: str
) -> None:
    async with sessionmaker() as session, session.begin():
        job = await repo.lock_for_chunk(session, import_id)
        if job is not None and job.status in repo.UNFINISHED:
            job.status, job.failure, job.finished_at, job.rows = "failed", why[:500], func.now(), None
            job.lease_owner, job.lease_until = None, None


async def resume_abandoned(
    sessionmaker: async_sessionmaker[AsyncSession], *, programs: Mapping[str, Program], owner: str
) -> int:
    """The worker's sweep: go on with the import jobs whose runner died (lease run out); a job that has had
    its ``MAX_ATTEMPTS`` runs is marked failed. Returns how many it finished."""
    async with sessionmaker() as session:
        stalled = await repo.abandoned(session, limit=10)
    finished = 0
    for import_id in stalled:
        try:
            if await run_import(sessionmaker, import_id, programs=programs, owner=owner):
                finished += 1
            else:
                async with sessionmaker() as session:
                    job = await repo.get_import(session, import_id)
                    exhausted = (
                        job is not None and job.attempts >= MAX_ATTEMPTS and job.status in repo.UNFINISHED
                    )
                if exhausted:
                    await _fail(sessionmaker, import_id, owner, f"gave up after {MAX_ATTEMPTS} attempts")
        except Exception:
            log.exception("pool_import_resume_failed", import_id=str(import_id))
    return finished


async def read_import(session: AsyncSession, *, user: CurrentUser, import_id: uuid.UUID) -> PoolImportRead:
    authorize_import(user)
    job = await repo.get_import(session, import_id)
    if job is None:
        raise NotFound(f"No pool import {import_id}.")
    if job.status != "finished":
        return _read(job)
    shown = await repo.refusals(session, import_id, limit=ERRORS_SHOWN)
    total = await repo.count_refusals(session, import_id) if len(shown) == ERRORS_SHOWN else len(shown)
    return _read(job, [RowRefusal.model_validate(r) for r in shown], total)


async def refusals_csv(
    session: AsyncSession, *, user: CurrentUser, import_id: uuid.UUID
) -> AsyncIterator[str]:
    """Every problem of a finished import as CSV (line, field, reason, value); every cell safe to open in a
    spreadsheet (a leading = + - @ is quoted with ')."""
    authorize_import(user)
    job = await repo.get_import(session, import_id)
    if job is None:
        raise NotFound(f"No pool import {import_id}.")
    if job.status != "finished":
        raise Conflict(f"The import is {job.status}: its refused rows are listed once it has finished.")
    return _csv_lines(repo.stream_refusals(session, import_id))


ERRORS_HEADER = ("line", "field", "reason", "value")


def csv_line(cells: Sequence[object]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([csv_safe(str(c)) for c in cells])
    return out.getvalue()


async def _csv_lines(rows: AsyncIterator[object]) -> AsyncIterator[str]:
    yield csv_line(ERRORS_HEADER)
    async for row in rows:
        yield csv_line([getattr(row, name) for name in ERRORS_HEADER])


async def errors_file(session: AsyncSession, import_id: uuid.UUID) -> list[str]:
    """The refused rows of an import as CSV lines (for the command's FILE.errors.csv)."""
    return [line async for line in _csv_lines(repo.stream_refusals(session, import_id))]


async def get_import(session: AsyncSession, import_id: uuid.UUID) -> PoolImportRead:
    job = await repo.get_import(session, import_id)
    if job is None:
        raise NotFound(f"No pool import {import_id}.")
    return _read(job)


async def list_pool(
    session: AsyncSession,
    *,
    user: CurrentUser,
    program: Program,
    region: str | None,
    tier: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
) -> Page[PoolMemberRead]:
    """A program's pool, oldest member first: admin and finance all of it, a reviewer its region's part."""
    authorize_pool_reader(user)
    scope = user.region if user.role is Role.reviewer else None
    if user.role is Role.reviewer and scope is None:
        return Page(items=[])
    rows = await repo.list_members(
        session, program=program.key, scope=scope, region=region, tier=tier, q=q,
        cursor=decode_cursor(cursor), limit=limit,
    )  # fmt: skip
    page, next_cursor = split_page(rows, limit, lambda m: (m.created_at, m.id))
    return Page(items=[PoolMemberRead.model_validate(m) for m in page], next_cursor=next_cursor)


async def memberships_of(
    session: AsyncSession, uscc: str, *, programs: Mapping[str, Program], lock: bool = False
) -> list[PoolMembership]:
    """The pools an enterprise is in (the enterprise view shows them; pools never import the domains), each
    with its bar, if the enterprise was barred (``bar_enterprise``): that program's ``durations.fraud_bar``
    from the revocation, as the bar on applying counts it. ``lock``: a bridge loan is being qualified by them
    (FOR SHARE: a bar being written waits for it, or it reads the bar)."""
    rows = await repo.memberships(session, uscc, lock=lock)
    barred = await repo.bar_of(session, uscc) if rows else None
    return [
        PoolMembership(
            program=m.program,
            tier_aimed=m.tier_aimed,
            since=m.created_at,
            barred_until=_fraud_bar(programs, m.program).add_to(barred.since) if barred else None,
            barred_reason=barred.reason if barred else None,
        )
        for m in rows
    ]


def _fraud_bar(programs: Mapping[str, Program], key: str) -> IsoDuration:
    program = programs.get(key)
    return program.durations.fraud_bar if program is not None else IsoDuration.parse(DEFAULT_FRAUD_BAR)


async def bar_enterprise(
    session: AsyncSession, *, uscc: str, since: datetime, reason: str, recognition_id: uuid.UUID
) -> None:
    """A recognition of the enterprise was revoked for fraud (``recognition_id``, at ``since``): bar it from
    the benefits of every pool it is in or comes to be in, for each program's ``durations.fraud_bar``, in
    the revocation's transaction. No import clears a bar (its own row, not a membership's columns)."""
    await repo.bar(session, uscc=uscc, since=since, reason=reason[:1000], recognition_id=recognition_id)


async def barred_by(session: AsyncSession, recognition_id: uuid.UUID) -> str | None:
    """The enterprise the revocation of ``recognition_id`` barred, if it did (and no later one since)."""
    found = await repo.barred_by(session, recognition_id)
    return found.uscc if found is not None else None
