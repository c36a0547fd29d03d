"""HTTP routes of program versions and batches (admin): create a program or a new version of one (the
document validated exactly as a program file), add, open and close batches (each a new version), read a
program's versions. Routes parse, call the service and return; a write commits, then this process reads
the new version at once (the others within a second: services/catalog/registry.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path

from services.catalog import service
from services.catalog.schemas import BatchCreate, BatchOpen, ProgramVersionRead
from services.deps import CurrentUserDep, SessionDep, StrictQueryRoute
from services.errors import READ_ONE_ERRORS, problem_responses
from services.writes import Write

router = APIRouter(tags=["programs"], route_class=StrictQueryRoute)

KEY_PATTERN = "^[a-z0-9][a-z0-9_-]{0,63}$"
ProgramKey = Annotated[str, Path(pattern=KEY_PATTERN)]
BatchKey = Annotated[str, Path(pattern=KEY_PATTERN)]
VersionNumber = Annotated[int, Path(ge=1, le=2_147_483_647)]
Document = Annotated[
    dict[str, Any],
    Body(description="the program document: a program file's content as JSON (services/programs.py)"),
]
WRITE_ERRORS = problem_responses(401, 403, 404, 409, 422, 429)


class ProgramWrite(Write):
    """What every write route here takes besides its path and body - the request's session, the writer (rate
    limited), the resources and the Idempotency-Key - and ``__call__``, which answers the write once per key
    (admin only): ``act`` is given the request's time; the write commits, then this process reads the new
    version at once."""

    async def __call__(
        self,
        endpoint: str,
        payload: Any,
        act: Callable[[datetime], Awaitable[ProgramVersionRead]],
    ) -> Any:
        now = datetime.now(UTC)

        async def commit_and_read(_: ProgramVersionRead) -> None:
            await self.session.commit()
            await self.resources.program_registry.refresh()

        async def authorize() -> None:
            service.authorize_admin(self.user)

        return await self.once(
            endpoint=endpoint,
            payload=payload,
            status_code=201,
            authorize=authorize,
            act=lambda: act(now),
            then=commit_and_read,
        )


WriteDep = Annotated[ProgramWrite, Depends()]


@router.post("/programs", status_code=201, response_model=ProgramVersionRead, responses=WRITE_ERRORS)
async def create_program(document: Document, write: WriteDep) -> Any:
    """A new program, as its version 1 (admin). 422 names every field the program file loader would; 409
    when the key is taken."""
    return await write(
        "POST /programs",
        document,
        lambda now: service.create_program(write.session, user=write.user, document=document, now=now),
    )


@router.get("/programs/{key}", response_model=ProgramVersionRead, responses=READ_ONE_ERRORS)
async def read_program(key: ProgramKey, user: CurrentUserDep, session: SessionDep) -> ProgramVersionRead:
    """The program's current version (admin)."""
    return await service.program_version(session, user=user, key=key, version=None, now=datetime.now(UTC))


@router.post(
    "/programs/{key}/versions", status_code=201, response_model=ProgramVersionRead, responses=WRITE_ERRORS
)
async def create_version(key: ProgramKey, document: Document, write: WriteDep) -> Any:
    """The program's next version, whole (admin). Applications filed from now are judged by it; those filed
    before keep theirs. 409 when it would change nothing."""
    return await write(
        f"POST /programs/{key}/versions",
        document,
        lambda now: service.create_version(
            write.session, user=write.user, key=key, document=document, now=now
        ),
    )


@router.get("/programs/{key}/versions", response_model=list[ProgramVersionRead], responses=READ_ONE_ERRORS)
async def list_versions(
    key: ProgramKey, user: CurrentUserDep, session: SessionDep
) -> list[ProgramVersionRead]:
    """Every version of the program, newest first (admin)."""
    return await service.history(session, user=user, key=key, now=datetime.now(UTC))


@router.get(
    "/programs/{key}/versions/{version}",
    response_model=ProgramVersionRead,
    responses=READ_ONE_ERRORS,
)
async def read_version(
    key: ProgramKey, version: VersionNumber, user: CurrentUserDep, session: SessionDep
) -> ProgramVersionRead:
    """One version of the program (admin)."""
    return await service.program_version(session, user=user, key=key, version=version, now=datetime.now(UTC))


@router.post(
    "/programs/{key}/batches", status_code=201, response_model=ProgramVersionRead, responses=WRITE_ERRORS
)
async def add_batch(key: ProgramKey, data: BatchCreate, write: WriteDep) -> Any:
    """A new batch (admin): the program's next version, with it."""
    return await write(
        f"POST /programs/{key}/batches",
        data,
        lambda now: service.add_batch(write.session, user=write.user, key=key, data=data, now=now),
    )


@router.post(
    "/programs/{key}/batches/{batch}/open",
    status_code=201,
    response_model=ProgramVersionRead,
    responses=WRITE_ERRORS,
)
async def open_batch(
    key: ProgramKey,
    batch: BatchKey,
    write: WriteDep,
    data: Annotated[BatchOpen | None, Body()] = None,
) -> Any:
    """Open the batch today (admin): the program's next version. 409 when it is open already."""
    body = data or BatchOpen()
    return await write(
        f"POST /programs/{key}/batches/{batch}/open",
        body,
        lambda now: service.open_batch(
            write.session, user=write.user, key=key, batch_key=batch, data=body, now=now
        ),
    )


@router.post(
    "/programs/{key}/batches/{batch}/close",
    status_code=201,
    response_model=ProgramVersionRead,
    responses=WRITE_ERRORS,
)
async def close_batch(key: ProgramKey, batch: BatchKey, write: WriteDep) -> Any:
    """Close the batch now (admin): its last filing day becomes yesterday; the program's next version. 409
    when it is not open."""
    return await write(
        f"POST /programs/{key}/batches/{batch}/close",
        {},
        lambda now: service.close_batch(write.session, user=write.user, key=key, batch_key=batch, now=now),
    )


@router.post(
    "/batches/{batch}/close", status_code=201, response_model=ProgramVersionRead, responses=WRITE_ERRORS
)
async def close_batch_by_key(batch: BatchKey, write: WriteDep) -> Any:
    """Close the batch of this key now (admin), whichever program runs it (API.md's path): as
    ``POST /programs/{key}/batches/{batch}/close``. 404 when no program has the batch, 409 when several do
    (close it through its program's path)."""
    key = service.program_of_batch(write.resources.programs, user=write.user, batch_key=batch)
    return await close_batch(key, batch, write)
