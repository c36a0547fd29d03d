"""The finance pages of the console (services/console/finance.py) on the real app: the payouts inbox and the
two-person approval of a drawdown through it, the disbursements with their totals, chart and exports, the
credit lines and funds - with the credit test programs and the bank simulator (tests/credit/conftest.py), a
real PostgreSQL and the Temporal dev server with a worker paying the approved payouts."""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from openpyxl import load_workbook  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.config import Settings
from services.console.web import LANG_COOKIE
from tests.console.conftest import Staff, StaffFactory
from tests.credit.conftest import (  # noqa: F401 - the credit tests' fixtures, for this module
    PROGRAMS,
    BankSim,
    auth,
    bank_sim,
    calm_bank,
    enterprise_token,
    new_uscc,
    open_line,
    sessions,
)

pytestmark = pytest.mark.usefixtures("calm_bank")

THRESHOLD_ABOVE = "1500000.00"  # the credit-test program wants two approvers above 1,000,000.00


@pytest.fixture(scope="session")
def settings(settings: Settings, bank_sim: BankSim) -> Settings:  # noqa: F811
    """The credit tests' settings: their program folder and the bank simulator as the partner bank."""
    return settings.model_copy(update={"programs_dir": PROGRAMS, "bank_url": bank_sim.url})


class Firm:
    """An enterprise with a 3,000,000.00 credit line in the credit-test program."""

    def __init__(self, api: httpx.AsyncClient, settings: Settings, uscc: str, line_id: uuid.UUID) -> None:
        self.api, self.settings, self.uscc, self.line_id = api, settings, uscc, line_id
        self.headers = {"Authorization": f"Bearer {enterprise_token(settings, uscc)}"}

    async def draw(self, amount: str) -> str:
        response = await self.api.post(
            f"/api/v1/credit-lines/{self.line_id}/drawdowns", json={"amount": amount}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        drawdown_id: str = response.json()["id"]
        return drawdown_id

    async def drawdown(self, drawdown_id: str) -> dict[str, Any]:
        response = await self.api.get(
            f"/api/v1/drawdowns/{drawdown_id}", headers=auth(self.settings, "finance", "fin-reader")
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def until(self, drawdown_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body = await self.drawdown(drawdown_id)
            if body["status"] == status and (
                status != "disbursed" or body["disbursement"]["status"] == "paid"
            ):
                return body
            assert asyncio.get_running_loop().time() < deadline, f"never {status}: {body}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def firm(
    api: httpx.AsyncClient,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],  # noqa: F811
) -> Firm:
    uscc = new_uscc()
    return Firm(api, settings, uscc, await open_line(sessions, uscc=uscc))


def english(member: Staff) -> Staff:
    member.client.cookies.set(LANG_COOKIE, "en")
    return member


def decision_form(page: str, kind: str, payout_id: str) -> dict[str, str] | None:
    """The fields of the decision form of a payout on the inbox page, None when the page has none."""
    found = re.search(
        rf'<form method="post" action="/console/payouts/{kind}/{payout_id}/decision".*?</form>', page, re.S
    )
    if found is None:
        return None
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', found.group(0)))
    assert re.search(r"<label for=\"reason-[^\"]+\">Reason</label>", found.group(0))
    assert ">Approve</button>" in found.group(0)
    assert ">Reject</button>" in found.group(0)
    return fields


async def decide(
    member: Staff, kind: str, payout_id: str, form: dict[str, str], decision: str, reason: str
) -> httpx.Response:
    data = {**form, "decision": decision, "reason": reason}
    data.pop("csrf_token", None)  # Staff.post adds its own
    return await member.post(f"/console/payouts/{kind}/{payout_id}/decision", data)


async def test_two_finance_officers_approve_a_drawdown_from_the_inbox_and_it_is_paid(
    staff: StaffFactory, firm: Firm
) -> None:
    drawdown = await firm.draw(THRESHOLD_ABOVE)
    inbox = f"/console/payouts?uscc={firm.uscc}&status=awaiting_approval"
    async with staff("finance", "fin-con-1") as first, staff("finance", "fin-con-2") as second:
        english(first)
        english(second)
        page = await first.get(inbox)
        assert page.status_code == 200, page.text
        assert "¥1,500,000.00" in page.text
        assert firm.uscc in page.text
        assert f"ent-{firm.uscc}" in page.text  # requested by the enterprise
        assert "Awaiting approval" in page.text
        form = decision_form(page.text, "drawdown", drawdown)
        assert form is not None
        assert form["next"] == inbox.replace("&", "&amp;")
        form["next"] = inbox

        done = await decide(first, "drawdown", drawdown, form, "approve", "contract checked")
        assert done.status_code == 303, done.text
        assert done.headers["location"] == f"{inbox}&done=approved"

        # The past approver: the payout waits for a second approver, and the first has no button any more.
        page = await first.get(done.headers["location"])
        assert "Your approval is recorded." in page.text
        assert "fin-con-1: approved" in page.text
        assert "contract checked" in page.text
        assert "Needs a second approver" in page.text
        assert decision_form(page.text, "drawdown", drawdown) is None
        assert "You have decided on this payout." in page.text
        body = await firm.drawdown(drawdown)
        assert body["status"] == "pending_approval"
        assert len(body["approvals"]) == 1

        # Deciding again anyway (a stale form, a fresh key) is refused in words, and nothing changes.
        again = await decide(
            first, "drawdown", drawdown, {**form, "idempotency_key": str(uuid.uuid4())}, "approve", "again"
        )
        assert again.status_code == 409, again.text
        assert "The decision was not recorded" in again.text
        assert "already decided" in again.text
        assert len((await firm.drawdown(drawdown))["approvals"]) == 1

        # The second officer sees the button and approves: the drawdown is approved, then paid.
        page = await second.get(inbox)
        second_form = decision_form(page.text, "drawdown", drawdown)
        assert second_form is not None
        second_form["next"] = inbox
        done = await decide(second, "drawdown", drawdown, second_form, "approve", "second check")
        assert done.status_code == 303
        assert done.headers["location"].endswith("done=approved")
        body = await firm.drawdown(drawdown)
        assert body["status"] in ("approved", "disbursed")
        assert [a["approver"] for a in body["approvals"]] == ["fin-con-1", "fin-con-2"]
        paid = await firm.until(drawdown, "disbursed")
        assert paid["disbursement"]["amount"] == THRESHOLD_ABOVE

        # The same form sent twice acts once: the replay answers as the first did.
        replay = await decide(second, "drawdown", drawdown, second_form, "approve", "second check")
        assert replay.status_code == 303
        assert len((await firm.drawdown(drawdown))["approvals"]) == 2

        page = await second.get(f"/console/payouts?uscc={firm.uscc}")
        assert "Disbursed" in page.text
        assert decision_form(page.text, "drawdown", drawdown) is None


async def test_a_decision_without_the_csrf_token_is_refused_and_changes_nothing(
    staff: StaffFactory, firm: Firm
) -> None:
    drawdown = await firm.draw("800.00")
    async with staff("finance", "fin-con-csrf") as member:
        english(member)
        page = await member.get(f"/console/payouts?uscc={firm.uscc}")
        form = decision_form(page.text, "drawdown", drawdown)
        assert form is not None
        form.pop("csrf_token")
        refused = await member.client.post(
            f"/console/payouts/drawdown/{drawdown}/decision",
            data={**form, "decision": "approve", "reason": "no token"},
            headers={"Origin": "http://testserver"},
        )
        assert refused.status_code == 403
        assert "did not come from this console" in refused.text
        forged = await member.client.post(
            f"/console/payouts/drawdown/{drawdown}/decision",
            data={**form, "csrf_token": "forged", "decision": "approve", "reason": "forged"},
            headers={"Origin": "http://testserver"},
        )
        assert forged.status_code == 403
    body = await firm.drawdown(drawdown)
    assert body["status"] == "pending_approval"
    assert body["approvals"] == []


async def test_a_refused_reason_is_shown_next_to_the_field_and_changes_nothing(
    staff: StaffFactory, firm: Firm
) -> None:
    drawdown = await firm.draw("900.00")
    async with staff("finance", "fin-con-reason") as member:
        english(member)
        page = await member.get(f"/console/payouts?uscc={firm.uscc}")
        form = decision_form(page.text, "drawdown", drawdown)
        assert form is not None
        # The API takes a reason of at most 2,000 characters (ApprovalCreate); it does not require one.
        refused = await decide(member, "drawdown", drawdown, form, "reject", "x" * 2001)
        assert refused.status_code == 422
        field = re.search(rf'<p class="field-error" id="e-reason-{drawdown}">([^<]+)</p>', refused.text)
        assert field is not None
        assert "2000" in field.group(1)
        assert f'aria-describedby="e-reason-{drawdown}"' in refused.text
        assert (await firm.drawdown(drawdown))["approvals"] == []

        done = await decide(member, "drawdown", drawdown, form, "reject", "duplicate request")
        assert done.status_code == 303
        assert done.headers["location"].endswith("done=rejected")
        page = await member.get(done.headers["location"])
        assert "The payout is rejected." in page.text
    body = await firm.drawdown(drawdown)
    assert body["status"] == "rejected"
    assert body["reason"] == "rejected by finance: duplicate request"


async def test_filters_the_api_would_refuse_are_shown_next_to_their_fields(staff: StaffFactory) -> None:
    async with staff("finance", "fin-con-filters") as member:
        english(member)
        page = await member.get("/console/payouts?uscc=nope&amount_min=12.345&kind=loan&from=2026-13-01")
        assert page.status_code == 422
        assert '<p class="field-error" id="e-uscc">Not a valid USCC (18 characters).</p>' in page.text
        assert '<p class="field-error" id="e-amount_min">Not a valid amount.</p>' in page.text
        assert '<p class="field-error" id="e-kind">Choose one of the listed values.</p>' in page.text
        assert '<p class="field-error" id="e-from">Not a valid date (YYYY-MM-DD).</p>' in page.text
        page = await member.get("/console/payouts?amount_min=3,000,000&amount_max=3000000.00")
        assert page.status_code == 200


async def test_disbursements_show_totals_the_weekly_chart_and_export_the_rows(
    staff: StaffFactory, firm: Firm, settings: Settings
) -> None:
    small, other = await firm.draw("800000.00"), await firm.draw("1234.56")
    approver = auth(settings, "finance", "fin-con-api")
    for drawdown in (small, other):
        response = await firm.api.post(
            f"/api/v1/drawdowns/{drawdown}/approvals", json={"decision": "approve"}, headers=approver
        )
        assert response.status_code == 200, response.text
    await firm.until(small, "disbursed")
    await firm.until(other, "disbursed")

    async with staff("finance", "fin-con-disb") as member:
        english(member)
        page = await member.get(f"/console/disbursements?uscc={firm.uscc}")
        assert page.status_code == 200, page.text
        totals = re.search(r'<table class="totals">.*?</table>', page.text, re.S)
        assert totals is not None
        assert re.search(
            r'<th scope="row">Paid</th><td class="num">2</td><td class="num">¥801,234.56</td>',
            totals.group(0),
        )
        # The chart: 12 weeks of bars and a table of the same figures, this week's with both payments.
        chart = re.search(r'<svg class="chart" role="img".*?</svg>', page.text, re.S)
        assert chart is not None
        assert chart.group(0).count('<rect class="bar"') == 12
        now = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")).date()
        monday = now - timedelta(days=now.weekday())
        weeks = re.search(r'<table class="weeks">.*?</table>', page.text, re.S)
        assert weeks is not None
        assert (
            f'<tr><td>{monday}</td><td class="num">2</td><td class="num">¥801,234.56</td></tr>'
            in weeks.group(0)
        )
        assert weeks.group(0).count("<tr><td>") == 12
        listed = re.search(r'<table class="disbursements">.*?</table>', page.text, re.S)
        assert listed is not None
        assert "¥800,000.00" in listed.group(0)
        assert "¥1,234.56" in listed.group(0)
        assert f'href="/console/disbursements.csv?uscc={firm.uscc}"' in page.text
        assert ">Export CSV<" in page.text
        assert ">Export XLSX<" in page.text

        # A filter the chart and totals follow: a status with nothing paid.
        page = await member.get(f"/console/disbursements?uscc={firm.uscc}&status=failed")
        assert "¥801,234.56" not in page.text

        csv = await member.get(f"/console/disbursements.csv?uscc={firm.uscc}")
        assert csv.status_code == 200
        assert csv.headers["content-type"].startswith("text/csv")
        assert csv.headers["content-disposition"] == 'attachment; filename="disbursements.csv"'
        lines = csv.text.strip().splitlines()
        assert lines[0].startswith("id,kind,payout_id")
        assert len(lines) == 3
        assert any(small in line and "800000.00" in line and firm.uscc in line for line in lines[1:])

        xlsx = await member.get(f"/console/disbursements.xlsx?uscc={firm.uscc}")
        assert xlsx.status_code == 200
        assert xlsx.headers["content-disposition"] == 'attachment; filename="disbursements.xlsx"'
        sheet = load_workbook(io.BytesIO(xlsx.content)).active
        rows = list(sheet.iter_rows())
        header = [cell.value for cell in rows[0]]
        assert header[:3] == ["id", "kind", "payout_id"]
        assert "amount" in header
        amount_at, payout_at = header.index("amount"), header.index("payout_id")
        mine = [row for row in rows[1:] if row[payout_at].value == small]
        assert len(rows) == 3
        assert len(mine) == 1
        amount = mine[0][amount_at]
        assert Decimal(str(amount.value)) == Decimal("800000.00")
        assert amount.number_format == "#,##0.00"
        assert mine[0][header.index("uscc")].value == firm.uscc

        refused = await member.get("/console/disbursements.xlsx?status=lost")
        assert refused.status_code == 422


async def test_credit_lines_and_funds(staff: StaffFactory, firm: Firm) -> None:
    async with staff("admin", "adm-con-credit") as member:
        english(member)
        page = await member.get(f"/console/credit?uscc={firm.uscc}")
        assert page.status_code == 200, page.text
        lines = re.search(r'<table class="credit-lines">.*?</table>', page.text, re.S)
        assert lines is not None
        assert firm.uscc in lines.group(0)
        assert lines.group(0).count("¥3,000,000.00") == 2  # the limit, and all of it available
        funds = re.search(r'<table class="funds">.*?</table>', page.text, re.S)
        assert funds is not None
        assert re.search(
            r'<th scope="row">credit-test</th>\s*<td class="num">¥100,000,000.00</td>', funds.group(0)
        )
        chart = re.search(r'<svg class="chart" role="img" aria-label="[^"]+".*?</svg>', page.text, re.S)
        assert chart is not None
        assert '<rect class="bar alt"' in chart.group(0)


async def test_staff_without_finance_access_are_refused_and_shown_nothing(
    staff: StaffFactory, firm: Firm
) -> None:
    drawdown = await firm.draw("700.00")
    async with staff("reviewer", "rev-con-fin", level="provincial", region="500000") as reviewer:
        english(reviewer)
        for path in (
            f"/console/payouts?uscc={firm.uscc}",
            f"/console/disbursements?uscc={firm.uscc}",
            "/console/disbursements.csv",
            "/console/disbursements.xlsx",
            "/console/credit",
        ):
            page = await reviewer.get(path)
            assert page.status_code == 403, path
            assert "Not allowed" in page.text
            assert drawdown not in page.text
            assert "¥" not in page.text
        refused = await reviewer.post(
            f"/console/payouts/drawdown/{drawdown}/decision",
            {"decision": "approve", "reason": "not mine", "idempotency_key": str(uuid.uuid4())},
        )
        assert refused.status_code == 403
    async with staff("admin", "adm-con-fin") as admin:
        english(admin)
        page = await admin.get(f"/console/payouts?uscc={firm.uscc}")
        assert page.status_code == 200
        assert "¥700.00" in page.text
        assert decision_form(page.text, "drawdown", drawdown) is None  # finance decides, not admin
    assert (await firm.drawdown(drawdown))["approvals"] == []
