"""Recognitions imported from a ministry's published list (e.g. 工信部2024年第六批): an admin enters one row,
or a CSV of rows, and each named enterprise gets a recognition with its source - the list's reference, its
batch, who entered it - that shows on the enterprise, in public verification and in recognition counts like
any other, and receives its program's benefits through the same benefits workflow.

Exactly once: a recognition's id is derived from (program, tier, USCC, list reference), so importing the same
list again finds what it made and writes nothing; its benefits workflow's id is ``benefits-{recognition id}``
(started with USE_EXISTING and REJECT_DUPLICATE), so starting it again - each import does, for every row,
which also starts one a lost start left behind - never grants twice.

The CSV reader here is minimal: UTF-8 (with or without BOM) or GBK/GB18030, comma-separated, a header row in
English or Chinese; no XLSX (the pool importer's reader, services/pools/files.py, is fixed to a pool's
columns)."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from services import temporal as temporal_boundary
from services.applications import repository as repo
from services.applications import revocation, service
from services.applications.models import Enterprise, Recognition
from services.applications.schemas import (
    ImportRowError,
    RecognitionImportCreate,
    RecognitionImportRead,
    RecognitionRead,
    ReviewStateRead,
    RevocationCreate,
)
from services.attributes import fields_of
from services.auth import CurrentUser, Role
from services.contracts import (
    BENEFITS_WORKFLOW,
    BenefitsInput,
    BenefitsStop,
    TitleRevoked,
    benefits_workflow_id,
    review_workflow_id,
    revoked_with_reason,
    search_attributes,
)
from services.errors import Conflict, FieldError, Forbidden, Unprocessable
from services.idempotency import once
from services.programs import Program, program_version

# The programs' time zone: a list's dates are days in China Standard Time.
CST = timezone(timedelta(hours=8))
# Recognition ids of imported rows: uuid5 of this namespace and the row's identity.
IMPORTED = uuid.UUID("5f0c2b4e-19a3-4c7e-9d2b-6a1e0f3c8d19")
MAX_ROWS = 20_000  # a national batch names ~3,500 enterprises

HEADERS: dict[str, str] = {
    "uscc": "uscc",
    "统一社会信用代码": "uscc",
    "社会信用代码": "uscc",
    "name": "name",
    "名称": "name",
    "企业名称": "name",
    "region": "region_code",
    "region_code": "region_code",
    "地区": "region_code",
    "行政区划代码": "region_code",
    "industry": "industry",
    "行业": "industry",
    "founded_on": "founded_on",
    "成立日期": "founded_on",
    "program": "program",
    "项目": "program",
    "tier": "tier",
    "梯度": "tier",
    "batch": "batch",
    "批次": "batch",
    "list_reference": "list_reference",
    "list": "list_reference",
    "名单": "list_reference",
    "文号": "list_reference",
    "recognized_on": "recognized_on",
    "认定日期": "recognized_on",
    "valid_until": "valid_until",
    "有效期至": "valid_until",
}


class ImportFileRefused(Unprocessable):
    slug, title = "import-file-refused", "The file cannot be read as a list"


def authorize(user: CurrentUser) -> None:
    if user.role is not Role.admin:
        raise Forbidden("Only an administrator imports recognitions.")


def recognition_id(row: RecognitionImportCreate) -> uuid.UUID:
    """The same row of the same list is the same recognition, however often it is imported."""
    return uuid.uuid5(IMPORTED, f"{row.program}|{row.tier}|{row.uscc}|{row.list_reference}")


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=CST)


log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Imported:
    recognition: Recognition
    created: bool


async def import_row(
    session: AsyncSession,
    *,
    user: CurrentUser,
    row: RecognitionImportCreate,
    programs: Mapping[str, Program],
) -> Imported:
    """The row's recognition (and its enterprise, registered from the row when new); what the service already
    holds for the row is returned as it is."""
    program = programs.get(row.program)
    if program is None:
        raise Unprocessable(
            f"No program {row.program!r}.", errors=[FieldError(field="program", message="unknown program")]
        )
    if row.tier not in program.tiers:
        raise Unprocessable(
            f"Program {row.program!r} has no tier {row.tier!r}.",
            errors=[FieldError(field="tier", message="not a tier of the program")],
        )
    rid = recognition_id(row)
    existing = await repo.get_recognition(session, rid)
    if existing is not None:
        return Imported(existing, created=False)
    if await repo.get_enterprise(session, row.uscc) is None:
        await _register(session, user=user, row=row)
    valid_from = _day_start(row.recognized_on)
    if row.valid_until is not None:
        if row.valid_until < row.recognized_on:
            raise Unprocessable(
                "valid_until is before recognized_on.",
                errors=[FieldError(field="valid_until", message="before recognized_on")],
            )
        valid_until = _day_start(row.valid_until + timedelta(days=1))  # the last day holds whole
    else:
        valid_until = program.durations.validity.add_to(valid_from)
    year = row.recognized_on.year
    sequence = await repo.next_certificate_number(session, program=program.key, year=year, tier=row.tier)
    recognition = Recognition(
        id=rid,
        application_id=None,
        uscc=row.uscc,
        program=program.key,
        tier=row.tier,
        certificate_no=f"{program.key.upper()}-{year}-{row.tier.upper()}-{sequence:05d}",
        valid_from=valid_from,
        valid_until=valid_until,
        status="active",
        source="import",
        list_reference=row.list_reference,
        batch=row.batch,
        imported_by=user.sub,
    )
    try:
        async with session.begin_nested():
            session.add(recognition)
            await session.flush()
    except IntegrityError:  # the same row imported at the same moment by another request
        existing = await repo.get_recognition(session, rid)
        if existing is None:
            raise Conflict("The recognition could not be recorded; import the row again.") from None
        return Imported(existing, created=False)
    return Imported(recognition, created=True)


# What registering an enterprise from a list's row takes from the row besides its USCC.
_REGISTRATION = ("name", "region_code", "industry", "founded_on")


async def _register(session: AsyncSession, *, user: CurrentUser, row: RecognitionImportCreate) -> None:
    missing = [name for name in _REGISTRATION if getattr(row, name) is None]
    if missing:
        raise Unprocessable(
            f"{row.uscc} is not registered; registering it from the list needs {', '.join(missing)}.",
            errors=[
                FieldError(field=name, message="required for an enterprise not yet registered")
                for name in missing
            ],
        )
    async with session.begin_nested():
        session.add(Enterprise(uscc=row.uscc, **fields_of(row, _REGISTRATION), registered_by=user.sub))
        await session.flush()


async def import_one(
    session: AsyncSession, *, user: CurrentUser, row: RecognitionImportCreate, programs: Mapping[str, Program]
) -> RecognitionImportRead:
    """One row as JSON: a refusal is the request's 422."""
    authorize(user)
    done = await import_row(session, user=user, row=row, programs=programs)
    return _summary([done], [])


async def import_file(
    session: AsyncSession, *, user: CurrentUser, content: bytes, programs: Mapping[str, Program]
) -> RecognitionImportRead:
    """Every row of a CSV list: each accepted row imported (in a savepoint of its own), each refused one
    named with its line, field and reason; a file that cannot be read at all is a 422 and writes nothing."""
    authorize(user)
    done: list[Imported] = []
    errors: list[ImportRowError] = []
    for line, cells in _read_csv(content):
        try:
            row = RecognitionImportCreate.model_validate(cells)
        except ValidationError as error:
            errors += [
                ImportRowError(line=line, field=".".join(str(p) for p in e["loc"]) or "row", reason=e["msg"])
                for e in error.errors(include_url=False)
            ]
            continue
        try:
            async with session.begin_nested():
                done.append(await import_row(session, user=user, row=row, programs=programs))
        except Unprocessable as refused:
            fields = refused.errors or [FieldError(field="row", message=refused.detail)]
            errors += [ImportRowError(line=line, field=e.field, reason=refused.detail) for e in fields]
    return _summary(done, errors)


def _summary(done: list[Imported], errors: list[ImportRowError]) -> RecognitionImportRead:
    seen: dict[uuid.UUID, Imported] = {}
    for item in done:  # a row twice in one file is one recognition
        seen.setdefault(item.recognition.id, item)
    return RecognitionImportRead(
        created=sum(1 for item in seen.values() if item.created),
        unchanged=sum(1 for item in seen.values() if not item.created),
        refused=len({e.line for e in errors}),
        recognitions=[RecognitionRead.model_validate(item.recognition) for item in seen.values()],
        errors=errors,
    )


def _decode(content: bytes) -> str:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            return content.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ImportFileRefused(
        "The file is neither UTF-8 nor GBK text.",
        errors=[FieldError(field="file", message="unknown encoding")],
    )


def _read_csv(content: bytes) -> list[tuple[int, dict[str, Any]]]:
    """(line, cells by field) for every non-blank data row; the header names the columns."""
    lines = list(csv.reader(io.StringIO(_decode(content))))
    if not lines:
        raise ImportFileRefused("The file is empty.", errors=[FieldError(field="file", message="empty")])
    header = [HEADERS.get(cell.strip().lower().replace(" ", "_")) for cell in lines[0]]
    unknown = [cell for cell, known in zip(lines[0], header, strict=True) if known is None and cell.strip()]
    if unknown:
        raise ImportFileRefused(
            f"Unknown columns: {', '.join(unknown)}.",
            errors=[FieldError(field="file", message="unknown columns")],
        )
    if len(lines) - 1 > MAX_ROWS:
        raise ImportFileRefused(
            f"At most {MAX_ROWS:,} rows a file.", errors=[FieldError(field="file", message="too many rows")]
        )
    rows = []
    for number, cells in enumerate(lines[1:], start=2):
        values = {field: cell.strip() for field, cell in zip(header, cells, strict=False) if field}
        if not any(values.values()):
            continue
        rows.append((number, {field: value for field, value in values.items() if value}))
    if not rows:
        raise ImportFileRefused("The file has no rows.", errors=[FieldError(field="file", message="no rows")])
    return rows


async def start_benefits(
    temporal: Client, *, imported: RecognitionImportRead, programs: Mapping[str, Program], task_queue: str
) -> None:
    """After the import committed: each recognition still valid gets its benefits workflow - started once
    (the id is the recognition's), so a row imported again, or a start lost before, changes nothing twice."""
    now = datetime.now(CST)
    for recognition in imported.recognitions:
        if recognition.valid_until <= now or recognition.status != "active":
            continue
        await temporal_boundary.start_workflow(
            temporal,
            BENEFITS_WORKFLOW,
            BenefitsInput(
                recognition_id=recognition.id,
                **fields_of(recognition, ("uscc", "tier", "program", "valid_until")),
                program_version=program_version(programs, recognition.program),
            ),
            id=benefits_workflow_id(recognition.id),
            task_queue=task_queue,
            search_attributes=search_attributes(
                uscc=recognition.uscc, program=recognition.program, tier=recognition.tier
            ),
            unavailable="The workflow engine is unavailable; the recognitions are saved - import the list "
            "again to start their benefits.",
        )


async def revoke(
    session: AsyncSession,
    temporal: Client,
    *,
    user: CurrentUser,
    key: str | None,
    recognition: Recognition,
    data: RevocationCreate,
) -> Any:
    """Revoke an imported recognition (no review workflow holds it): recorded with the event in the request's
    transaction (``revocation.revoke``: for fraud, with every other title of the enterprise), then each
    revoked one's benefits workflow is told to stop and each application's review workflow that its title is
    gone (pending payouts are rejected as they would be), and the titles so told are marked: one Temporal
    did not take (or an API that died after the commit) is told by the worker's ``tell_untold``."""

    async def act() -> ReviewStateRead:
        also_revoked = await revocation.revoke(
            session,
            recognition,
            actor=service.actor_of(user),
            reason=data.reason,
            revoked_for=data.revoked_for,
            at=datetime.now(UTC),
            told=False,  # marked once Temporal takes the stops (tell), else by the worker (tell_untold)
        )
        return ReviewStateRead.model_validate(
            {
                "application_id": None,
                "status": "recognized",
                "recognition_id": recognition.id,
                "certificate_no": recognition.certificate_no,
                "also_revoked": [title.model_dump() for title in also_revoked],
            }
        )

    async def tell(state: ReviewStateRead) -> None:
        await session.commit()
        with_it = [(title.recognition_id, title.application_id) for title in state.also_revoked]
        certificate_no = recognition.certificate_no
        told = await tell_revoked(
            temporal, recognition.id, data.reason, certificate_no=certificate_no, with_it=with_it
        )
        if told:
            await repo.mark_stop_sent(session, told, at=datetime.now(UTC))
            await session.commit()

    return await once(
        session,
        user,
        key,
        endpoint=f"POST /recognitions/{recognition.id}/revocation",
        payload=data,
        act=act,
        then=tell,
    )


async def tell_revoked(
    temporal: Client,
    recognition_id: uuid.UUID,
    reason: str,
    *,
    certificate_no: str,
    with_it: Sequence[tuple[uuid.UUID, uuid.UUID | None]] = (),
) -> list[uuid.UUID]:
    """Tell a revoked title's benefits workflow to stop, and for each title revoked with it (``with_it``: its
    id and its application's, if any) its benefits to stop and its application's review that the title is
    gone; the titles whose benefits took it (or have ended), to mark told."""
    told = []
    if await _stop_benefits(temporal, recognition_id, reason):
        told.append(recognition_id)
    because = revoked_with_reason(certificate_no, reason)
    for title_id, application_id in with_it:
        if await _stop_benefits(temporal, title_id, because):
            told.append(title_id)
        if application_id is not None:  # best effort: a review that missed it finds the title revoked
            gone = TitleRevoked(recognition_id=title_id, revoked_with=recognition_id, reason=because)
            await temporal_boundary.signal(temporal, review_workflow_id(application_id), "revoked", gone)
    return told


async def tell_untold(
    temporal: Client, sessionmaker: async_sessionmaker[AsyncSession], *, older_than_seconds: float = 30.0
) -> int:
    """The worker's safety net for a request's telling (``revoke``): the benefits of a title revoked more
    than ``older_than_seconds`` ago and not marked told are told to stop now (with its revocation's reason),
    and the title is marked - an API that died after its commit, or a Temporal that did not answer, leaves
    no credit line open on a revoked title. How many were told."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
    async with sessionmaker() as session:
        told = [
            title.id
            for title in await repo.revoked_untold(session, before=cutoff)
            if await _stop_benefits(temporal, title.id, title.revoked_reason or "revoked")
        ]
        if told:
            await repo.mark_stop_sent(session, told, at=datetime.now(UTC))
            await session.commit()
            log.info("revocations_told", titles=len(told))
    return len(told)


async def _stop_benefits(temporal: Client, recognition_id: uuid.UUID, reason: str) -> bool:
    stop = BenefitsStop(reason=reason, cause="revoked")
    return await temporal_boundary.signal(temporal, benefits_workflow_id(recognition_id), "stop", stop)
