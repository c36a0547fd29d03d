"""HTTP routes of cultivation pools: import a program's pool from a file (an import job with progress) and
read the pool. Routes parse, call the service and return."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, File, Path, Query, UploadFile
from fastapi.responses import StreamingResponse

from services import deps
from services.errors import READ_ONE_ERRORS, FieldError, PayloadTooLarge, problem_responses
from services.idempotency import IdempotencyKey, once
from services.pagination import Page
from services.pools import service
from services.pools.schemas import PoolImportRead, PoolMemberRead
from services.ratelimit import WriterDep

router = APIRouter(tags=["pools"], route_class=deps.StrictQueryRoute)

KEY_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
ProgramKey = Annotated[str, Path(pattern=KEY_PATTERN)]
READ_CHUNK = 1024 * 1024


@router.post(
    "/programs/{key}/pool-imports",
    status_code=202,
    response_model=PoolImportRead,
    responses=problem_responses(401, 403, 404, 413, 415, 422, 429),
)
@router.post(  # API.md's name for the same import
    "/programs/{key}/pool",
    status_code=202,
    response_model=PoolImportRead,
    responses=problem_responses(401, 403, 404, 413, 415, 422, 429),
)
async def import_pool(
    key: ProgramKey,
    file: Annotated[
        UploadFile, File(description="CSV (UTF-8 or GBK) or XLSX: USCC, name, region, industry, tier, notes")
    ],
    user: WriterDep,
    session: deps.SessionDep,
    resources: deps.ResourcesDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Queue the import of a program's cultivation pool (admin): 202 with the job, whose progress and refused
    rows `GET /pool-imports/{id}` shows. A file that cannot be read as a whole is refused at once and writes
    nothing: 415 not CSV or XLSX, 413 too large (bytes or rows), 422 broken, wrong encoding or headers."""
    service.authorize_import(user)
    program = service.program_or_404(resources.programs, key)
    limit = resources.settings.max_upload_bytes
    content = bytearray()
    while chunk := await file.read(READ_CHUNK):
        content += chunk
        if len(content) > limit:
            raise PayloadTooLarge(
                f"A pool file is at most {limit:,} bytes.",
                errors=[FieldError(field="file", message="too large")],
            )
    filename = file.filename or "pool"
    owner = f"api-{uuid.uuid4().hex[:12]}"

    async def run_after_commit(job: PoolImportRead) -> None:
        background.add_task(
            service.run_import, resources.sessionmaker, job.id, programs=resources.programs, owner=owner
        )

    return await once(
        session,
        user,
        idempotency_key,
        endpoint=f"POST /programs/{key}/pool-imports",
        payload=service.fingerprint(program=key, filename=filename, content=bytes(content)),
        status_code=202,
        act=lambda: service.accept_file(
            session, user=user, program=program, filename=filename, content=bytes(content), owner=owner
        ),
        then=run_after_commit,
    )


@router.get("/pool-imports/{import_id}", response_model=PoolImportRead, responses=READ_ONE_ERRORS)
@router.get(  # API.md's name for the same job
    "/imports/{import_id}",
    response_model=PoolImportRead,
    responses=READ_ONE_ERRORS,
)
async def read_pool_import(
    import_id: uuid.UUID, user: deps.CurrentUserDep, session: deps.SessionDep
) -> PoolImportRead:
    """An import job (admin): `rows_done` of `rows_total`, `accepted`, `refused`; once `finished`, the refused
    rows (line, field, reason)."""
    return await service.read_import(session, user=user, import_id=import_id)


@router.get(
    "/pool-imports/{import_id}/errors.csv",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "line, field, reason, value"},
        **problem_responses(401, 403, 404, 409, 422),
    },
)
async def pool_import_errors(
    import_id: uuid.UUID, user: deps.CurrentUserDep, session: deps.StreamingReadSessionDep
) -> StreamingResponse:
    """Every refused row of a finished import as CSV (admin); cells starting with = + - @ are quoted with '
    so that a spreadsheet never runs them."""
    lines = await service.refusals_csv(session, user=user, import_id=import_id)
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="pool-import-{import_id}-errors.csv"'},
    )


@router.get("/programs/{key}/pool", response_model=Page[PoolMemberRead], responses=READ_ONE_ERRORS)
async def list_pool(
    key: ProgramKey,
    listing: deps.ListingDep,
    resources: deps.ResourcesDep,
    region: Annotated[
        str | None, Query(pattern=r"^\d{6}$", description="a region: 0000 a province, 00 a city")
    ] = None,
    tier: Annotated[str | None, Query(max_length=32, description="tier aimed at")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100, description="name or USCC prefix")] = None,
) -> Page[PoolMemberRead]:
    """A program's cultivation pool, oldest member first: admin and finance all of it, a reviewer the part in
    its region."""
    service.authorize_pool_reader(listing.user)
    program = service.program_or_404(resources.programs, key)
    return await service.list_pool(
        listing.session, user=listing.user, program=program, region=region, tier=tier, q=q, **listing.page
    )
