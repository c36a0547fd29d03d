"""An import job survives its runner: under a lease, chunk by chunk, a job whose runner died is taken over by
the worker's sweep and goes on from the last committed chunk - nothing written twice, nothing lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pools import service
from services.pools.models import PoolImport, PoolImportError, PoolMember
from services.pools.schemas import PoolImportRead
from services.programs import load_programs
from tests.pools.conftest import csv_bytes, member

PROGRAMS = load_programs(Path(__file__).resolve().parents[2] / "programs")


class Crash(Exception):
    pass


async def accepted(session: AsyncSession, rows: list[list[Any]]) -> PoolImportRead:
    """A file of ``rows`` accepted for the demo program by a runner that will die (``api-dead``)."""
    return await service.accept_file(
        session,
        user="test",
        program=PROGRAMS["demo"],
        filename="pool.csv",
        content=csv_bytes(rows),
        owner="api-dead",
    )


async def test_a_job_whose_runner_died_is_resumed_from_its_last_chunk(
    rollback_sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CHUNK", 2)
    rows = [member(n) for n in range(5)]
    rows.append(list(rows[0]))  # line 7: a duplicate of line 2, in a chunk after the crash
    async with rollback_sessions() as session, session.begin():
        job = await accepted(session, rows)

    def crash_after_first_chunk(done: int, total: int) -> None:
        if done == 2:
            raise Crash

    with pytest.raises(Crash):
        await service.run_import(
            rollback_sessions, job.id, programs=PROGRAMS, owner="api-dead", progress=crash_after_first_chunk
        )
    # Another process while the dead runner's lease still runs: not its job.
    assert not await service.run_import(rollback_sessions, job.id, programs=PROGRAMS, owner="worker-1")
    async with rollback_sessions() as session:
        assert await service.resume_abandoned(rollback_sessions, programs=PROGRAMS, owner="worker-1") == 0
        half = await service.get_import(session, job.id)
    assert (half.status, half.rows_done, half.accepted) == ("running", 2, 2)

    async with rollback_sessions() as session, session.begin():  # the lease runs out
        await session.execute(
            update(PoolImport).where(PoolImport.id == job.id).values(lease_until=func.now() - service.LEASE)
        )
    assert await service.resume_abandoned(rollback_sessions, programs=PROGRAMS, owner="worker-1") >= 1
    async with rollback_sessions() as session:
        done = await service.get_import(session, job.id)
        members = await session.scalar(
            select(func.count()).select_from(PoolMember).where(PoolMember.uscc.in_([r[0] for r in rows]))
        )
        errors = (
            await session.scalars(select(PoolImportError).where(PoolImportError.import_id == job.id))
        ).all()
        stored_rows = await session.scalar(select(PoolImport.rows).where(PoolImport.id == job.id))
    assert (done.status, done.rows_done, done.accepted, done.refused, done.created) == (
        "finished",
        6,
        5,
        1,
        5,
    )
    assert members == 5
    assert [(e.line, e.reason) for e in errors] == [(7, "duplicate: this USCC is already on line 2")]
    assert stored_rows is None  # the file's rows are dropped once done
    # The dead runner, come back, finds its lease gone and writes nothing.
    assert not await service.run_import(rollback_sessions, job.id, programs=PROGRAMS, owner="api-dead")


async def test_a_job_that_keeps_failing_is_marked_failed(
    rollback_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with rollback_sessions() as session, session.begin():
        job = await accepted(session, [member(1)])
        await session.execute(
            update(PoolImport)
            .where(PoolImport.id == job.id)
            .values(attempts=service.MAX_ATTEMPTS, lease_until=func.now() - service.LEASE)
        )
    await service.resume_abandoned(rollback_sessions, programs=PROGRAMS, owner="worker-1")
    async with rollback_sessions() as session:
        failed = await service.get_import(session, job.id)
    assert failed.status == "failed"
    assert "gave up" in (failed.failure or "")
