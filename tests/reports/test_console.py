"""The console's reports page: the admin's figures and charts over the seeded cohort, the downloads, the
navigation, and the API's access rule (finance the money, an enterprise nothing)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.config import Settings
from tests.console.conftest import StaffFactory, signed_in_on
from tests.reports.seed import BATCH, HOSTILE, PROGRAM, seed_cohort

EN = {"Accept-Language": "en"}
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
        assert row(text, "funnel-specialized_new") == ["specialized_new", "5", "4", "3", "2", "—", "2", "2"]
        assert row(text, "stage-municipal") == ["municipal", "4", "2.5", "3.7", "1", "1", "2"]
        assert row(text, "plan-little_giant-2027") == ["little_giant", "2027", "10", "1", "15", "1", "6.7%"]
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
        chinese = await admin.get(PAGE, headers={"Accept-Language": "zh-CN"})
        assert "申报漏斗（按层级）" in chinese.text


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
