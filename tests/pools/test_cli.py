"""`giantflow pool import FILE --program KEY`, end to end: the command as a process against the test database
(committed data, so its rows are removed afterwards), writing FILE.errors.csv."""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.pools.models import PoolImport, PoolMember
from tests.conftest import BIN_DIR, PROJECT_ROOT, TEST_SECRET
from tests.pools.conftest import ZH, member, xlsx_bytes

pytestmark = pytest.mark.slow  # a process of its own per call


@pytest.fixture
async def usccs(engine: AsyncEngine) -> AsyncIterator[list[str]]:
    made: list[str] = []
    yield made
    async with engine.begin() as conn:
        imports = select(PoolMember.import_id).where(PoolMember.uscc.in_(made))
        ids = [row[0] for row in await conn.execute(imports)]
        await conn.execute(delete(PoolMember).where(PoolMember.uscc.in_(made)))
        await conn.execute(delete(PoolImport).where(PoolImport.id.in_(ids)))


def _giantflow(postgres_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    env.update(
        GIANTFLOW_ENVIRONMENT="test",
        GIANTFLOW_DATABASE_URL=postgres_url,
        GIANTFLOW_JWT_SECRET=TEST_SECRET,
        GIANTFLOW_DATA_DIR=str(tmp_path / "data"),
        GIANTFLOW_PROGRAMS_DIR=str(PROJECT_ROOT / "programs"),
        COLUMNS="100",
    )
    return subprocess.run(
        [str(BIN_DIR / "giantflow"), "pool", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_the_command_imports_with_a_progress_bar_and_writes_the_errors_file(
    migrated: str, tmp_path: Path, usccs: list[str]
) -> None:
    rows = [member(n) for n in range(3)]
    bad = member(9, tier="no_such_tier")
    formula = member(10)
    formula[5] = "=1+1"
    usccs += [r[0] for r in [*rows, bad, formula]]
    pool = tmp_path / "培育库.xlsx"
    pool.write_bytes(xlsx_bytes([*rows, bad, rows[0], formula], header=ZH))

    done = _giantflow(migrated, tmp_path, "import", str(pool), "--program", "demo")
    assert done.returncode == 0, done.stderr
    assert "finished: 3 accepted (3 new, 0 changed, 0 unchanged), 3 refused" in done.stderr
    assert "6/6" in done.stderr  # the bar's last state
    errors = pool.with_name(pool.name + ".errors.csv")
    records = list(csv.reader(errors.read_text(encoding="utf-8-sig").splitlines()))
    assert records[0] == ["line", "field", "reason", "value"]
    assert [(r[0], r[1]) for r in records[1:]] == [("5", "tier"), ("6", "uscc"), ("7", "notes")]
    assert records[2][2] == "duplicate: this USCC is already on line 2"
    assert records[3][3] == "'=1+1"  # escaped, never a formula

    again = _giantflow(migrated, tmp_path, "import", str(pool), "--program", "demo")
    assert again.returncode == 0, again.stderr
    assert "3 accepted (0 new, 0 changed, 3 unchanged)" in again.stderr


def test_a_refused_file_stops_the_command_and_writes_nothing(migrated: str, tmp_path: Path) -> None:
    pool = tmp_path / "pool.csv"
    pool.write_bytes(b"USCC,owner\r\n1,2\r\n")
    done = _giantflow(migrated, tmp_path, "import", str(pool), "--program", "demo")
    assert done.returncode == 1
    assert "refused: Unknown columns in the header: 'owner'" in done.stderr
    assert not pool.with_name("pool.csv.errors.csv").exists()
    unknown = _giantflow(migrated, tmp_path, "import", str(pool), "--program", "nope")
    assert unknown.returncode == 1
    assert "no program nope" in unknown.stderr
