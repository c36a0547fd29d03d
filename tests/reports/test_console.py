"""The console's reports page: the admin's figures and charts over the seeded cohort, the downloads, the
navigation, and the API's access rule (finance the money, an enterprise nothing)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.config import Settings
from tests.console.conftest import StaffFactory, signed_in_on
from tests.reports.conftest import PROGRAMS
from tests.reports.seed import BATCH, HOSTILE, MINISTRY_BATCH, PROGRAM, seed_cohort, seed_imported

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}
PAGE = f"/console/reports?program={PROGRAM}&batch={BATCH}"


@pytest.fixture
def staff(api_rollback: httpx.AsyncClient, settings: Settings) -> StaffFactory:
    return signed_in_on(api_rollback, settings)


def row(page: str, row_id: str) -> list[str]:
    found = re.search(rf'<tr id="{row_id}">(.*?)</tr>', page, re.S)
    assert found, f"no row {row_id}"
    return [
        re.sub(r"<[^>]+>", "", cell).strip()
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", found.group(1), re.S)
    ]


async def test_the_admin_reads_the_report_with_charts_and_downloads(
    staff: StaffFactory, session: AsyncSession
) -> None:
    await seed_cohort(session)
    async with staff("admin", "adm-reports") as admin:
        page = await admin.get(PAGE, headers=EN)
        assert page.status_code == 200, page.text
        text = page.text
        assert row(text, "funnel-specialized_new") == [
            "specialized_new",
            *("5", "4", "3", "2", "—", "2"),
            *("2", "0", "2"),  # recognised: through review, imported, total
        ]
        assert row(text, "stage-municipal") == ["municipal", "4", "2.5", "3.7", "1", "1", "2"]
        assert row(text, "plan-little_giant-2027") == [
            *("little_giant", "2027", "10"),
            *("1", "0", "1"),  # achieved: through review, imported, total
            *("15", "1", "6.7%"),
        ]
        assert row(text, "money-drawdown") == [
            "drawdown",
            "2",
            "¥200,000.00",
            "¥500,000.00",
            "¥100,000.00",
            "¥400,000.00",
        ]
        assert text.count("<svg") >= 3  # the funnel, the provinces, the plan
        assert "<script" not in text.split("<main", 1)[1].split("</main>")[0]
        assert "=HYPERLINK(&#34;" in text or "=HYPERLINK(&quot;" in text  # escaped, as text
        assert HOSTILE not in text
        assert 'href="/console/reports" aria-current="page"' in text  # in the admin's navigation
        links = re.findall(r'href="(/console/reports/export\?[^"]+)"', text)
        assert len(links) == 3
        for link in links:
            download = await admin.get(link.replace("&amp;", "&"))
            assert download.status_code == 200, download.text
            assert "attachment" in download.headers["content-disposition"]
        pdf = await admin.get(f"/console/reports/export?program={PROGRAM}&batch={BATCH}&format=pdf")
        assert pdf.content.startswith(b"%PDF")
        chinese = await admin.get(PAGE, headers=ZH)
        assert "申报漏斗（按层级）" in chinese.text


def rows(page: str, prefix: str) -> list[list[str]]:
    return [row(page, row_id) for row_id in re.findall(rf'<tr id="({prefix}[^"]*)">', page)]


async def test_imported_recognitions_show_beside_the_reviewed_in_both_languages(
    staff: StaffFactory, session: AsyncSession
) -> None:
    """X and Z imported with the program's batch, Y with the ministry's 2024-6 (tests/reports/seed.py): the
    page shows them apart from A, B, C through review and in the totals; a city with only imported
    recognitions is no longer a 0; the ministry's batch is offered and shows Y."""
    await seed_cohort(session)
    await seed_imported(session, PROGRAMS)
    async with staff("admin", "adm-reports-imported") as admin:
        english, chinese = (await admin.get(PAGE, headers=EN)), (await admin.get(PAGE, headers=ZH))
        ministry = await admin.get(f"/console/reports?program={PROGRAM}&batch={MINISTRY_BATCH}", headers=EN)
    assert english.status_code == chinese.status_code == ministry.status_code == 200, english.text
    for page, labels in (
        (english.text, ("Through review", "Imported", "Total", "Imported ministry lists")),
        (chinese.text, ("经评审", "名单导入", "合计", "导入的部委名单")),
    ):
        assert all(f">{label}<" in page or f'label="{label}"' in page for label in labels), labels
        assert re.search(
            rf'<optgroup label="[^"]+">\s*<option value="{MINISTRY_BATCH}">{MINISTRY_BATCH}</option>', page
        )
        # Through review, imported, total: the funnel's last line, the cities, the industries.
        assert row(page, "funnel-specialized_new")[-3:] == ["2", "2", "4"]  # A B; X Z
        assert row(page, "funnel-little_giant")[-3:] == ["1", "0", "1"]  # C; Y is the ministry's batch
        chongqing = row(page, "region-500100-specialized_new")
        assert (chongqing[:2], chongqing[3:]) == (["500000", "500100"], ["2", "1", "3"])  # A B; X
        assert row(page, "region-500200-specialized_new")[3:] == ["0", "1", "1"]  # Z only: not a 0
        assert sorted(r[2:] for r in rows(page, "industry-")) == [
            ["0", "1", "1"],  # software: Z
            ["1", "0", "1"],  # electronics: C
            ["1", "0", "1"],  # HOSTILE: B
            ["1", "1", "2"],  # machinery: A, X
        ]
        # The plan, every batch: achieved through review, imported, total.
        assert row(page, "plan-specialized_new-2026")[2:] == ["20", "1", "1", "2", "20", "2", "10.0%"]
        assert row(page, "plan-little_giant-2027")[2:] == ["10", "1", "1", "2", "15", "2", "13.3%"]
        # Benefits: granted and amount through review, imported, total.
        assert row(page, "benefit-credit_line-specialized_new-active")[3:] == [
            *("2", "¥4,000,000.00"),
            *("1", "¥2,000,000.00"),
            *("3", "¥6,000,000.00"),
        ]
    assert row(chinese.text, "region-500200-specialized_new")[2] == "专精特新中小企业"
    assert row(chinese.text, "benefit-credit_line-specialized_new-active")[0] == "信用额度"
    # The ministry's batch: no applications, Y imported.
    page = ministry.text
    assert f'<option value="{MINISTRY_BATCH}" selected>' in page
    assert row(page, "funnel-little_giant")[1:] == ["0", "0", "0", "0", "0", "0", "0", "1", "1"]
    assert rows(page, "region-") == [["330000", "330100", "little_giant", "0", "1", "1"]]


async def test_finance_sees_the_money_and_an_enterprise_nothing(
    staff: StaffFactory, session: AsyncSession
) -> None:
    await seed_cohort(session)
    async with staff("finance", "fin-reports") as finance:
        page = await finance.get(PAGE, headers=EN)
    assert page.status_code == 200
    assert row(page.text, "money-bridge_loan")[3] == "¥1,000,000.00"
    assert 'id="funnel-' not in page.text
    assert 'href="/console/reports"' not in page.text  # the navigation offers it to admins
    async with staff("reviewer", "rev-reports", level="municipal", region="330100") as reviewer:
        scoped = await reviewer.get(PAGE, headers=EN)
    assert scoped.status_code == 200
    assert row(scoped.text, "funnel-little_giant")[1] == "1"
    assert row(scoped.text, "funnel-specialized_new")[1] == "0"
