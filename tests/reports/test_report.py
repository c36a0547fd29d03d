"""The cohort report over a small cohort with known outcomes (tests/reports/seed.py): every section's numbers
exactly, each format, who reads what, and that its queries are index-backed."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.auth import Role
from services.config import Settings
from tests.conftest import bearer, make_token
from tests.platform.test_query_plans import GROWING, seq_scans
from tests.reports.conftest import PROGRAMS
from tests.reports.seed import BATCH, HOSTILE, MINISTRY_BATCH, PROGRAM, seed_cohort, seed_imported
from tests.support.factories import random_uscc

URL = f"/api/v1/programs/{PROGRAM}/report"
PLAN = f"/api/v1/programs/{PROGRAM}/plan"
DAY = 86400.0
SECTIONS = [  # in the order the exports write them
    "funnel",
    "screening_rules",
    "review_times",
    "by_region",
    "by_industry",
    "benefits",
    "money",
    "plan",
]


@pytest.fixture
async def seeded(session: AsyncSession) -> None:
    await seed_cohort(session)


@pytest.fixture
async def with_imports(session: AsyncSession, seeded: None) -> None:
    await seed_imported(session, PROGRAMS)


@pytest.fixture
def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, Role.admin, "report-admin"))


async def _report(api: httpx.AsyncClient, headers: dict[str, str], **params: str) -> dict[str, Any]:
    response = await api.get(URL, params={"batch": BATCH, **params}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_funnel_rules_times_regions_and_money(
    api_rollback: httpx.AsyncClient, seeded: None, admin: dict[str, str]
) -> None:
    report = await _report(api_rollback, admin)
    assert (report["program"], report["batch"], report["region"]) == (PROGRAM, BATCH, None)
    assert report["funnel"] == [
        {
            "tier": "specialized_new",
            "applied": 5,  # A B D E F; the draft G is not counted
            "screened_in": 4,
            "passed_municipal": 3,
            "passed_provincial": 2,
            "passed_national": None,  # not one of the tier's levels
            "on_notice": 2,
            "recognized": 2,
            "imported": 0,
            "recognized_total": 2,
        },
        {
            "tier": "little_giant",
            "applied": 1,
            "screened_in": 1,
            "passed_municipal": 1,
            "passed_provincial": 1,
            "passed_national": 1,
            "on_notice": 1,
            "recognized": 1,
            "imported": 0,
            "recognized_total": 1,
        },
    ]
    rules = {
        (r["tier"], r["rule"]): (r["checked"], r["passed"], r["pass_rate"]) for r in report["screening_rules"]
    }
    assert rules == {
        ("specialized_new", "eligibility"): (5, 4, 0.8),
        ("specialized_new", "rd_intensity"): (5, 4, 0.8),
        ("specialized_new", "direct_award"): (5, 1, 0.2),
        ("little_giant", "eligibility"): (1, 1, 1.0),
        ("little_giant", "rd_intensity"): (1, 1, 1.0),
        ("little_giant", "direct_award"): (1, 0, 0.0),
    }
    times = {row.pop("stage"): row for row in report["review_times"]}
    assert list(times) == ["municipal", "provincial", "national"]
    # municipal: 1, 2, 3, 4 days; p50 = 2.5 days, p90 = 3 + 0.7 * (4 - 3) = 3.7 days (percentile_cont)
    assert times["municipal"] == {
        "decided": 4,
        "p50_seconds": 2.5 * DAY,
        "p90_seconds": 3.7 * DAY,
        "decided_late": 1,  # E after 4 days, due after 3
        "open": 1,
        "open_overdue": 1,  # F, long past its due time
        "breaches": 2,
    }
    # provincial: 10, 20, 30 (exactly at the due time: not late) and 40 days (E, rejected, late)
    assert times["provincial"] == {
        "decided": 4,
        "p50_seconds": 25 * DAY,
        "p90_seconds": 37 * DAY,
        "decided_late": 1,
        "open": 0,
        "open_overdue": 0,
        "breaches": 1,
    }
    assert times["national"]["p50_seconds"] == times["national"]["p90_seconds"] == 5 * DAY
    assert report["by_region"] == [
        {
            "province": "330000",
            "city": "330100",
            "tier": "little_giant",
            "recognized": 1,
            "imported": 0,
            "recognized_total": 1,
        },
        {
            "province": "500000",
            "city": "500100",
            "tier": "specialized_new",
            "recognized": 2,
            "imported": 0,
            "recognized_total": 2,
        },
    ]
    assert sorted((r["industry"], r["tier"], r["recognized"]) for r in report["by_industry"]) == sorted(
        [
            (HOSTILE, "specialized_new", 1),
            ("electronics", "little_giant", 1),
            ("machinery", "specialized_new", 1),
        ]
    )

    def benefit(kind: str, tier: str, granted: int, amount: str) -> dict[str, Any]:
        return {
            "kind": kind,
            "tier": tier,
            "status": "active",
            "granted": granted,
            "amount": amount,
            "imported_granted": 0,
            "imported_amount": "0.00",
            "granted_total": granted,
            "amount_total": amount,
        }

    assert report["benefits"] == [
        benefit("bridge_loan", "little_giant", 1, "0.00"),
        benefit("credit_line", "little_giant", 1, "3000000.00"),
        benefit("credit_line", "specialized_new", 2, "4000000.00"),
    ]
    assert report["money"] == [
        {
            "kind": "drawdown",
            "payouts": 2,
            "pending": "200000.00",
            "disbursed": "500000.00",
            "repaid": "100000.00",
            "outstanding": "400000.00",
        },
        {
            "kind": "bridge_loan",
            "payouts": 1,
            "pending": "0.00",
            "disbursed": "1000000.00",
            "repaid": "0.00",
            "outstanding": "1000000.00",
        },
        {
            "kind": "listing_reward",
            "payouts": 1,
            "pending": "0.00",
            "disbursed": "300000.00",
            "repaid": "0.00",
            "outstanding": "0.00",
        },
    ]


async def test_plan_against_achieved_by_china_year(
    api_rollback: httpx.AsyncClient, seeded: None, admin: dict[str, str]
) -> None:
    """report-test.toml plans, as demo.toml does, specialized_new 20 (2026) and 30 (2027), little_giant 5
    and 10; B was recognised at 2026-12-31 17:00 UTC, which is 2027 in China."""
    report = await _report(api_rollback, admin)
    assert report["plan_source"] == "file"
    plan = [
        (
            r["tier"],
            r["year"],
            r["planned"],
            r["achieved"],
            r["cumulative_planned"],
            r["cumulative_achieved"],
            r["progress"],
        )
        for r in report["plan"]
    ]
    assert plan == [
        ("specialized_new", 2026, 20, 1, 20, 1, 0.05),
        ("specialized_new", 2027, 30, 1, 50, 2, 0.04),
        ("little_giant", 2026, 5, 0, 5, 0, 0.0),
        ("little_giant", 2027, 10, 1, 15, 1, 0.0667),
    ]
    # An admin replaces the plan; the report measures against it; an empty plan returns to the file's.
    put = await api_rollback.put(
        PLAN,
        json={"targets": [{"year": 2027, "tier": "little_giant", "target": 2}]},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    assert put.json()["source"] == "admin"
    assert put.json()["targets"] == [{"year": 2027, "tier": "little_giant", "target": 2}]
    report = await _report(api_rollback, admin)
    assert report["plan_source"] == "admin"
    assert [(r["tier"], r["year"], r["planned"], r["achieved"], r["progress"]) for r in report["plan"]] == [
        ("little_giant", 2027, 2, 1, 0.5)
    ]
    bad = await api_rollback.put(
        PLAN,
        json={"targets": [{"year": 2027, "tier": "single_champion", "target": 2}] * 2},
        headers=admin,
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"targets[0].tier", "targets[1].tier", "targets[1]"}
    back = await api_rollback.put(PLAN, json={"targets": []}, headers=admin)
    assert back.json()["source"] == "file"
    assert len(back.json()["targets"]) == 4
    assert (await api_rollback.get(PLAN, headers=admin)).json()["source"] == "file"


async def test_every_batch_and_the_contract_path(
    api_rollback: httpx.AsyncClient, seeded: None, admin: dict[str, str]
) -> None:
    everything = await api_rollback.get(URL, headers=admin)
    assert everything.json()["batch"] is None
    assert everything.json()["funnel"][0]["applied"] == 6  # and I, of batch report-test-2027
    cohort = await api_rollback.get(
        "/api/v1/reports/cohort", params={"program": PROGRAM, "batch": BATCH}, headers=admin
    )
    assert cohort.status_code == 200
    assert cohort.json()["funnel"] == (await _report(api_rollback, admin))["funnel"]
    missing = await api_rollback.get(URL, params={"batch": "nope"}, headers=admin)
    assert missing.status_code == 404
    unknown = await api_rollback.get("/api/v1/programs/nope/report", headers=admin)
    assert unknown.status_code == 404
    bad_format = await api_rollback.get(URL, params={"format": "docx"}, headers=admin)
    assert bad_format.status_code == 422


def _counts(rows: list[dict[str, Any]], *keys: str) -> list[tuple[Any, ...]]:
    return [
        (*(row[key] for key in keys), row["recognized"], row["imported"], row["recognized_total"])
        for row in rows
    ]


async def test_imported_recognitions_count_apart_beside_the_reviewed(
    api_rollback: httpx.AsyncClient,
    seeded: None,
    admin: dict[str, str],
    session: AsyncSession,
    settings: Settings,
) -> None:
    """X, Y, Z imported (each row twice: counted once) beside A, B, C through review: the funnel's steps
    stay the applications', the recognitions and benefits show the imported apart, the plan counts both."""
    before = await _report(api_rollback, admin)
    await seed_imported(session, PROGRAMS)
    report = await _report(api_rollback, admin)

    steps = ["applied", "screened_in", "passed_municipal", "passed_provincial", "on_notice", "recognized"]
    assert [[row[step] for step in steps] for row in report["funnel"]] == [
        [row[step] for step in steps] for row in before["funnel"]
    ]
    # Of batch report-test-2026: X and Z (revoked since, still a recognition the batch named, as a
    # reviewed one revoked is); Y was named in the ministry's batch 2024-6.
    assert _counts(report["funnel"], "tier") == [("specialized_new", 2, 2, 4), ("little_giant", 1, 0, 1)]
    assert _counts(report["by_region"], "province", "city", "tier") == [
        ("330000", "330100", "little_giant", 1, 0, 1),
        ("500000", "500100", "specialized_new", 2, 1, 3),  # X, by its enterprise's code
        ("500000", "500200", "specialized_new", 0, 1, 1),  # Z
    ]
    assert _counts(report["by_industry"], "industry", "tier") == [
        (HOSTILE, "specialized_new", 1, 0, 1),
        ("electronics", "little_giant", 1, 0, 1),
        ("machinery", "specialized_new", 1, 1, 2),
        ("software", "specialized_new", 0, 1, 1),
    ]
    credit = [r for r in report["benefits"] if (r["kind"], r["tier"]) == ("credit_line", "specialized_new")]
    assert credit == [
        {
            "kind": "credit_line",
            "tier": "specialized_new",
            "status": "active",
            "granted": 2,
            "amount": "4000000.00",
            "imported_granted": 1,
            "imported_amount": "2000000.00",
            "granted_total": 3,
            "amount_total": "6000000.00",
        }
    ]
    assert report["money"] == before["money"]  # the payouts stay the applications' recognitions'
    # The plan, every batch: X in 2026, Y in 2027 (recognised 2027-01-01 in China), Z revoked - not counted.
    assert [
        (r["tier"], r["year"], r["achieved"], r["achieved_reviewed"], r["achieved_imported"], r["progress"])
        for r in report["plan"]
    ] == [
        ("specialized_new", 2026, 2, 1, 1, 0.1),
        ("specialized_new", 2027, 1, 1, 0, 0.06),
        ("little_giant", 2026, 0, 0, 0, 0.0),
        ("little_giant", 2027, 2, 1, 1, 0.1333),
    ]
    assert [r["cumulative_achieved"] for r in report["plan"]] == [2, 3, 0, 2]

    # The ministry's batch, which only imported rows carry: no applications, its recognitions.
    ministry = await _report(api_rollback, admin, batch=MINISTRY_BATCH)
    assert ministry["batch"] == MINISTRY_BATCH
    assert all(row["applied"] == row["recognized"] == 0 for row in ministry["funnel"])
    assert _counts(ministry["funnel"], "tier") == [("specialized_new", 0, 0, 0), ("little_giant", 0, 1, 1)]
    assert _counts(ministry["by_region"], "city", "tier") == [("330100", "little_giant", 0, 1, 1)]
    assert ministry["plan"] == report["plan"]  # a plan counts years, every batch
    # Every batch: the imported rows of every list.
    everything = (await api_rollback.get(URL, headers=admin)).json()
    assert _counts(everything["funnel"], "tier") == [("specialized_new", 2, 2, 4), ("little_giant", 1, 1, 2)]
    # A reviewer in Chongqing: the imported rows of enterprises registered there.
    reviewer = bearer(make_token(settings, Role.reviewer, "rev", level="provincial", region="500000"))
    scoped = await _report(api_rollback, reviewer)
    assert _counts(scoped["funnel"], "tier") == [("specialized_new", 2, 2, 4), ("little_giant", 0, 0, 0)]
    assert (await api_rollback.get(URL, params={"batch": "2024-7"}, headers=admin)).status_code == 404


async def test_exports_show_the_imported(
    api_rollback: httpx.AsyncClient, with_imports: None, admin: dict[str, str]
) -> None:
    from openpyxl import load_workbook  # type: ignore[import-untyped]
    from pypdf import PdfReader

    response = await api_rollback.get(URL, params={"batch": BATCH, "format": "csv"}, headers=admin)
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    funnel = {row["tier"]: row for row in rows if row["section"] == "funnel"}
    assert (funnel["specialized_new"]["imported"], funnel["specialized_new"]["recognized_total"]) == (
        "2",
        "4",
    )
    plan = [row for row in rows if row["section"] == "plan" and row["year"] == "2026"]
    assert plan[0]["achieved_imported"] == "1"
    book = await api_rollback.get(URL, params={"batch": BATCH, "format": "xlsx"}, headers=admin)
    sheet = list(load_workbook(io.BytesIO(book.content))["funnel"].iter_rows(values_only=True))
    assert sheet[0][-2:] == ("imported", "recognized_total")
    assert sheet[1][-2:] == (2, 4)
    meta = list(load_workbook(io.BytesIO(book.content))["report"].iter_rows(values_only=True))
    assert ("recognized", "5 (3 through review, 2 imported from lists)") in meta
    pdf = await api_rollback.get(URL, params={"batch": BATCH, "format": "pdf"}, headers=admin)
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert "recognized_total" in text
    assert "imported from lists" in text


async def test_roles(api_rollback: httpx.AsyncClient, seeded: None, settings: Settings) -> None:
    finance = await _report(api_rollback, bearer(make_token(settings, Role.finance, "report-fin")))
    assert finance["money"][0]["disbursed"] == "500000.00"
    assert finance["benefits"]
    assert finance["funnel"] is finance["plan"] is finance["by_region"] is None
    # A reviewer reads every section over its region's applications: Chongqing's, not Hangzhou's C.
    reviewer = bearer(make_token(settings, Role.reviewer, "report-rev", level="provincial", region="500000"))
    scoped = await _report(api_rollback, reviewer)
    assert scoped["region"] == "500000"
    assert [row["tier"] for row in scoped["funnel"] if row["applied"]] == ["specialized_new"]
    assert [(r["city"], r["tier"], r["recognized"]) for r in scoped["by_region"]] == [
        ("500100", "specialized_new", 2)
    ]
    assert scoped["money"][1]["disbursed"] == "0.00"  # C's bridge loan is Hangzhou's
    enterprise = bearer(make_token(settings, Role.enterprise, "report-ent", uscc=random_uscc("500103")))
    refused = await api_rollback.get(URL, headers=enterprise)
    assert refused.status_code == 403
    assert (await api_rollback.get(URL)).status_code == 401
    not_admin = await api_rollback.put(PLAN, json={"targets": []}, headers=reviewer)
    assert not_admin.status_code == 403


async def test_csv_escapes_formulas(
    api_rollback: httpx.AsyncClient, seeded: None, admin: dict[str, str]
) -> None:
    response = await api_rollback.get(URL, params={"batch": BATCH, "format": "csv"}, headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0]["section"] == "funnel"
    assert {row["section"] for row in rows} == set(SECTIONS)
    industries = [row["industry"] for row in rows if row["section"] == "by_industry"]
    assert "'" + HOSTILE in industries
    assert not any(value.startswith(("=", "+", "-", "@")) for row in rows for value in row.values() if value)
    money = [row for row in rows if row["section"] == "money" and row["kind"] == "drawdown"]
    assert money[0]["outstanding"] == "400000.00"


async def test_xlsx_opens_with_a_sheet_per_section(
    api_rollback: httpx.AsyncClient, seeded: None, admin: dict[str, str]
) -> None:
    from openpyxl import load_workbook

    response = await api_rollback.get(URL, params={"batch": BATCH, "format": "xlsx"}, headers=admin)
    assert response.status_code == 200
    book = load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["report", *SECTIONS]
    funnel = list(book["funnel"].iter_rows(values_only=True))
    assert funnel[0][:3] == ("tier", "applied", "screened_in")
    assert funnel[1][:3] == ("specialized_new", 5, 4)
    cells = [cell for row in book["by_industry"].iter_rows() for cell in row if cell.value == HOSTILE]
    assert cells
    assert all(cell.data_type == "s" for cell in cells)


async def test_pdf_has_pages(api_rollback: httpx.AsyncClient, seeded: None, admin: dict[str, str]) -> None:
    from pypdf import PdfReader

    response = await api_rollback.get(URL, params={"batch": BATCH, "format": "pdf"}, headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    reader = PdfReader(io.BytesIO(response.content))
    assert len(reader.pages) >= 1
    text = "".join(page.extract_text() for page in reader.pages)
    assert "Funnel by tier" in text
    assert "specialized_new" in text


async def test_queries_are_index_backed(
    api_rollback: httpx.AsyncClient,
    with_imports: None,
    admin: dict[str, str],
    connection: AsyncConnection,
    settings: Settings,
) -> None:
    """Every SELECT the report sends, planned again with ``enable_seqscan = off``: no sequential scan of a
    table that grows with the applications (as tests/platform/test_query_plans.py checks the lists)."""
    captured: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            captured.append((statement, parameters))

    sync = connection.sync_connection
    assert sync is not None
    event.listen(sync, "before_cursor_execute", capture)
    try:
        reviewer = bearer(make_token(settings, Role.reviewer, "r", level="provincial", region="500000"))
        await _report(api_rollback, admin)
        await _report(api_rollback, reviewer)
        assert (await api_rollback.get(URL, headers=admin)).status_code == 200  # every batch
        await _report(api_rollback, admin, batch=MINISTRY_BATCH)  # a batch only imported rows carry
    finally:
        event.remove(sync, "before_cursor_execute", capture)
    report_queries = [(s, p) for s, p in captured if "applications a" in s or "FROM recognitions r" in s]
    assert len(report_queries) >= 7 * 4 + 1  # seven statements a report, and the ministry batch's check
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
    failures = []
    for statement, parameters in report_queries:
        result = await connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        raw = result.scalar_one()
        plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
        tables = sorted(set(seq_scans(plan)) & GROWING)
        if tables:
            failures.append(f"Seq Scan on {tables}:\n{statement}\n{json.dumps(plan)[:1500]}")
    await connection.exec_driver_sql("SET LOCAL enable_seqscan = on")
    assert not failures, "\n\n".join(failures)
