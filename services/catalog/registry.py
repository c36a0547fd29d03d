"""The programs every process reads, kept current without a restart.

``Resources.programs`` answers from ``ProgramRegistry.book``: a ``ProgramBook`` (a dict of the programs in
force, with their version numbers and every version known) held in memory, so the API's thousands of reads a
second cost no query. A background task of each process (the API's lifespan, the worker) asks PostgreSQL once
a second for the versions' counter - ``count(*)`` and ``max(id)`` of ``program_versions``, one index-only
query - and only when it moved reads the versions again and swaps the book whole (a reader holding the old
one finishes with it). So a version an admin creates is read by every API replica and worker within about a
second; the API that created it swaps at once, after its commit. A version is never changed once written, so
versions already parsed are kept, not parsed again.

At start the program files are the seed (``service.seed``): a program the database has no version of gets
its file as version 1."""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services import tasks
from services.catalog import repository as repo
from services.catalog import service
from services.programs import Program, ProgramBook, load_programs

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0


class ProgramRegistry:
    """The process's programs: the files until ``start`` has read the database, then the versions in it."""

    def __init__(self, engine: AsyncEngine, files: Path, *, every: float = POLL_SECONDS) -> None:
        # Connections of its own (not a request's session): seeding commits by itself, polling reads alone.
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        self._files = files
        self._every = every
        self._parsed: dict[int, tuple[str, int, Program]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.book = ProgramBook(load_programs(files))

    async def start(self) -> None:
        """Seed the database from the files, read it, and keep reading it once a second while running."""
        if self._task is not None:
            return
        async with self._sessions.begin() as session:
            await service.seed(session, load_programs(self._files))
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="program-registry")

    async def close(self) -> None:
        task, self._task = self._task, None
        await tasks.stop(task)

    async def refresh(self) -> bool:
        """Read the versions again if the counter moved; True when the book changed."""
        async with self._lock, self._sessions() as session:
            revision = await repo.counter(session)
            if revision == self.book.revision:
                return False
            rows = await repo.every_version(session)
        for row in rows:
            if row.id in self._parsed:
                continue
            try:
                self._parsed[row.id] = (row.program, row.version, Program.model_validate(row.document))
            except ValidationError as error:  # written by an older model: keep serving the others
                log.error(
                    "program_version_unreadable", program=row.program, version=row.version, error=str(error)
                )
        versions = {(key, number): program for key, number, program in self._parsed.values()}
        numbers: dict[str, int] = {}
        for key, number in versions:
            numbers[key] = max(number, numbers.get(key, 0))
        current = {key: versions[key, number] for key, number in sorted(numbers.items())}
        self.book = ProgramBook(current, numbers=numbers, versions=versions, revision=revision)
        log.info("programs_read", versions=len(versions), programs=len(current))
        return True

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                await self.refresh()
            except Exception as error:  # the database away for a moment: the book in hand stays
                log.warning("programs_refresh_failed", error=type(error).__name__)
