"""Importing a cultivation pool through the API: formats, encodings, headers, every refusal with its line,
field and reason, re-imports that change nothing, files refused whole (nothing written), and reading the
pool and an enterprise's memberships."""

from __future__ import annotations

import csv
import io
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.identifiers import make_uscc
from services.pools.files import MAX_ROWS
from services.pools.models import PoolImport, PoolMember
from tests.conftest import bearer, make_token
from tests.pools.conftest import API, REGION, ZH, csv_bytes, imported, member, upload, xlsx_bytes
from tests.support.factories import random_uscc

pytestmark = pytest.mark.usefixtures("api_rollback")


@pytest.fixture
def admin(tokens: dict[str, str]) -> dict[str, str]:
    return bearer(tokens["admin"])


async def _members(session: AsyncSession, usccs: list[str]) -> dict[str, PoolMember]:
    rows = await session.scalars(select(PoolMember).where(PoolMember.uscc.in_(usccs)))
    return {m.uscc: m for m in rows}


async def _jobs(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(PoolImport)) or 0)


async def test_csv_utf8_is_imported_with_progress_and_listed(
    api_rollback: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    rows = [member(n) for n in range(3)]
    job = await imported(api_rollback, admin, csv_bytes(rows))
    assert job["format"] == "csv"
    assert job["encoding"] == "utf-8"
    assert (job["rows_total"], job["rows_done"], job["accepted"], job["refused"]) == (3, 3, 3, 0)
    assert (job["created"], job["updated"], job["unchanged"]) == (3, 0, 0)
    assert job["errors"] == []
    stored = await _members(session, [r[0] for r in rows])
    assert {m.tier_aimed for m in stored.values()} == {"specialized_new"}
    assert stored[rows[0][0]].notes == "note 0"

    page = await api_rollback.get(f"{API}/programs/demo/pool", headers=admin, params={"q": rows[1][0]})
    assert page.status_code == 200, page.text
    assert [m["uscc"] for m in page.json()["items"]] == [rows[1][0]]


async def test_gbk_csv_with_chinese_headers_and_tier_names(
    api_rollback: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    uscc = random_uscc(REGION)
    rows = [[uscc, "重庆某某精密机械有限公司", REGION, "通用设备制造", "专精特新中小企业", "第一批"]]
    job = await imported(api_rollback, admin, csv_bytes(rows, header=ZH, encoding="gbk"))
    assert job["encoding"] == "gb18030"
    assert job["accepted"] == 1, job
    stored = (await _members(session, [uscc]))[uscc]
    assert (stored.name, stored.industry, stored.tier_aimed, stored.notes) == (
        "重庆某某精密机械有限公司",
        "通用设备制造",
        "specialized_new",
        "第一批",
    )


async def test_utf8_with_bom(api_rollback: httpx.AsyncClient, admin: dict[str, str]) -> None:
    job = await imported(api_rollback, admin, csv_bytes([member(1)], header=ZH, encoding="utf-8-sig"))
    assert (job["encoding"], job["accepted"]) == ("utf-8-sig", 1)


async def test_xlsx_with_numbers_and_a_formula_never_evaluated(
    api_rollback: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    good = random_uscc(REGION)
    formula = random_uscc(REGION)
    rows = [
        [good, "XLSX Co", int(REGION), "machinery", "little_giant", None],  # region typed as a number
        [formula, '=HYPERLINK("http://evil.example","click")', REGION, "machinery", "little_giant", "x"],
    ]
    job = await imported(api_rollback, admin, xlsx_bytes(rows, header=ZH), filename="pool.xlsx")
    assert (job["format"], job["accepted"], job["refused"]) == ("xlsx", 1, 1)
    assert job["errors"] == [
        {"line": 3, "field": "name", "reason": "a formula is never evaluated: write the value itself"}
    ]
    assert set(await _members(session, [good, formula])) == {good}

    export = await api_rollback.get(f"{API}/pool-imports/{job['id']}/errors.csv", headers=admin)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    records = list(csv.reader(io.StringIO(export.text)))
    assert records[0] == ["line", "field", "reason", "value"]
    assert records[1][:2] == ["3", "name"]
    assert records[1][3].startswith("'=HYPERLINK")  # escaped: a spreadsheet shows it, never runs it
    assert all(not cell.startswith(("=", "+", "-", "@")) for record in records for cell in record)


async def test_every_refusal_names_line_field_and_reason(
    api_rollback: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    good = random_uscc(REGION)
    wrong_check = good[:17] + ("0" if good[17] != "0" else "1")
    twice = random_uscc(REGION)
    rows = [
        member(2, uscc=good),  # line 2
        member(3, uscc=wrong_check),  # line 3
        member(4, uscc=good.lower()),  # line 4
        member(5, uscc=twice),  # line 5: first of two
        member(6, uscc=twice),  # line 6: duplicate of line 5
        member(7, region="50010"),  # line 7
        member(8, region="110105"),  # line 8: outside the program's region (500000)
        member(9, tier="single_champion"),  # line 9: not a tier of the demo program
        ["", "No Code Co", REGION, "machinery", "specialized_new", ""],  # line 10
        [random_uscc(REGION), "", REGION, "", "specialized_new", ""],  # line 11: two fields
        [random_uscc(REGION), "Co", REGION, "machinery", "specialized_new", "-1+1"],  # line 12: kept as text
        member(13, uscc=good),  # line 13: duplicate of line 2
    ]
    job = await imported(api_rollback, admin, csv_bytes(rows))
    errors = {(e["line"], e["field"]): e["reason"] for e in job["errors"]}
    assert "check character" in errors[(3, "uscc")]
    assert "lower case" in errors[(4, "uscc")]
    assert errors[(6, "uscc")] == "duplicate: this USCC is already on line 5"
    assert errors[(13, "uscc")] == "duplicate: this USCC is already on line 2"
    assert "6 digits" in errors[(7, "region")]
    assert "outside the program's region 500000" in errors[(8, "region")]
    assert "not a tier of program demo" in errors[(9, "tier")]
    assert errors[(10, "uscc")] == "required"
    assert errors[(11, "name")] == errors[(11, "industry")] == "required"
    assert len(errors) == 10
    assert (job["accepted"], job["refused"], job["errors_total"]) == (3, 9, 10)
    assert set(await _members(session, [good, twice, wrong_check])) == {good, twice}


async def test_reimporting_the_same_file_changes_nothing(
    api_rollback: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    rows = [member(n) for n in range(4)]
    content = csv_bytes(rows)
    await imported(api_rollback, admin, content)
    before = {
        u: (m.version, m.updated_at, m.id) for u, m in (await _members(session, [r[0] for r in rows])).items()
    }

    again = await imported(api_rollback, admin, content)
    assert (again["accepted"], again["created"], again["updated"], again["unchanged"]) == (4, 0, 0, 4)
    session.expire_all()
    after = {
        u: (m.version, m.updated_at, m.id) for u, m in (await _members(session, [r[0] for r in rows])).items()
    }
    assert after == before

    rows[0][1] = "Renamed Co"
    changed = await imported(api_rollback, admin, csv_bytes(rows))
    assert (changed["created"], changed["updated"], changed["unchanged"]) == (0, 1, 3)
    session.expire_all()
    renamed = (await _members(session, [rows[0][0]]))[rows[0][0]]
    assert (renamed.name, renamed.version) == ("Renamed Co", 2)


def _broken_xlsx() -> bytes:
    good = xlsx_bytes([member(1)])
    return good[: len(good) // 2]


def _rows(count: int) -> bytes:
    line = f"{make_uscc('91500103MA0000000')},Co,{REGION},machinery,specialized_new,\r\n"
    return ("USCC,name,region,industry,tier,notes\r\n" + line * count).encode()


@pytest.mark.parametrize(
    ("content", "filename", "status", "says"),
    [
        (b"%PDF-1.4 not a pool", "pool.pdf", 415, "neither CSV nor XLSX"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "pool.xls", 415, "Old Excel"),
        (b"PK\x03\x04 broken", "pool.xlsx", 422, "XLSX file is broken"),
        (_broken_xlsx(), "pool.xlsx", 422, "XLSX file is broken"),
        (b"USCC,name\r\n\x81\x30\xff\xfe", "pool.csv", 422, "neither UTF-8 nor GBK"),
        (b"", "pool.csv", 422, "empty"),
        (b"USCC,name,region,industry,tier\r\n", "pool.csv", 422, "no rows"),
        (b"USCC,name,region,industry,tier,owner\r\n1,2,3,4,5,6\r\n", "pool.csv", 422, "Unknown columns"),
        (b"USCC,name,region,industry\r\n1,2,3,4\r\n", "pool.csv", 422, "lacks the columns tier"),
        (_rows(MAX_ROWS + 1), "pool.csv", 413, f"at most {MAX_ROWS:,} rows"),
    ],
    ids=[
        "pdf",
        "xls",
        "xlsx-garbage",
        "xlsx-truncated",
        "encoding",
        "empty",
        "header-only",
        "unknown-col",
        "missing-col",
        "too-many-rows",
    ],
)
async def test_a_refused_file_is_a_problem_and_writes_nothing(
    api_rollback: httpx.AsyncClient,
    admin: dict[str, str],
    session: AsyncSession,
    content: bytes,
    filename: str,
    status: int,
    says: str,
) -> None:
    jobs = await _jobs(session)
    resp = await upload(api_rollback, admin, content, filename=filename)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = resp.json()
    assert says in problem["detail"]
    assert problem["errors"][0]["field"] in ("file", "encoding")
    assert await _jobs(session) == jobs


async def test_a_file_of_100000_rows_is_refused_with_a_413(
    api_rollback: httpx.AsyncClient, admin: dict[str, str], session: AsyncSession
) -> None:
    content = _rows(100_000)
    assert len(content) < 10 * 1024 * 1024  # under the byte limit: the row limit answers
    jobs = await _jobs(session)
    resp = await upload(api_rollback, admin, content)
    assert resp.status_code == 413, resp.text
    assert "split" in resp.json()["detail"]
    assert await _jobs(session) == jobs


async def test_who_imports_and_who_reads(
    api_rollback: httpx.AsyncClient, admin: dict[str, str], settings: Any
) -> None:
    inside = member(1, region="500103")
    elsewhere_region = "500230"
    other = member(2, region=elsewhere_region)
    await imported(api_rollback, admin, csv_bytes([inside, other]))
    enterprise = bearer(make_token(settings, "enterprise", "e-1", uscc=inside[0]))
    assert (await upload(api_rollback, enterprise, csv_bytes([member(3)]))).status_code == 403
    assert (await api_rollback.get(f"{API}/programs/demo/pool", headers=enterprise)).status_code == 403
    assert (await upload(api_rollback, admin, csv_bytes([member(3)]), program="nope")).status_code == 404

    reviewer = bearer(make_token(settings, "reviewer", "r-1", level="municipal", region="500100"))
    seen = await api_rollback.get(f"{API}/programs/demo/pool", headers=reviewer, params={"limit": 200})
    usccs = {m["uscc"] for m in seen.json()["items"]}
    assert inside[0] in usccs
    assert other[0] not in usccs  # 500230 is outside the reviewer's city 5001xx
    finance = bearer(make_token(settings, "finance", "f-1"))
    by_tier = await api_rollback.get(
        f"{API}/programs/demo/pool", headers=finance, params={"region": "500200", "tier": "specialized_new"}
    )
    assert {m["uscc"] for m in by_tier.json()["items"]} >= {other[0]}
    assert inside[0] not in {m["uscc"] for m in by_tier.json()["items"]}


async def test_membership_on_the_enterprise(api_rollback: httpx.AsyncClient, admin: dict[str, str]) -> None:
    row = member(1)
    registered = await api_rollback.post(
        f"{API}/enterprises",
        headers=admin,
        json={
            "uscc": row[0],
            "name": "Member Co",
            "region_code": REGION,
            "industry": "machinery",
            "founded_on": "2015-01-01",
        },
    )
    assert registered.status_code == 201, registered.text
    empty = await api_rollback.get(f"{API}/enterprises/{row[0]}", headers=admin)
    assert empty.json()["pools"] == []
    await imported(api_rollback, admin, csv_bytes([row]))
    view = (await api_rollback.get(f"{API}/enterprises/{row[0]}", headers=admin)).json()
    assert [(p["program"], p["tier_aimed"]) for p in view["pools"]] == [("demo", "specialized_new")]
    assert view["pools"][0]["since"]


async def test_errors_csv_and_import_are_404_for_unknown_ids(
    api_rollback: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await api_rollback.get(f"{API}/pool-imports/{unknown}", headers=admin)).status_code == 404
    assert (
        await api_rollback.get(f"{API}/pool-imports/{unknown}/errors.csv", headers=admin)
    ).status_code == 404
