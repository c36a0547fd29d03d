"""The staff console in a real browser: Debian's Chromium driven by Playwright (``executable_path``, nothing
downloaded), against the dev stack `make run` starts (embedded PostgreSQL, the Temporal dev server, the
worker, the bank simulator and the API), with the demo program. Each page the tests pass through is saved
as a screenshot under docs/console/ (the README shows them)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from bench.journey import CITY, PROVINCE, Journey
from bench.stack import Stack
from devtools.seeding import random_uscc

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's own probe starts it: no sandbox (root in a container), no GPU, and none of the background
# connections a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO, DISTRICT, OTHER_PROVINCE = "demo", "500103", "510000"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`giantflow dev` on free ports with the demo program, as `make run` starts it."""
    running = Stack(tmp_path_factory.mktemp("console") / "var", programs_dir=ROOT / "programs")
    try:
        running.start()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is missing: bash .ci/install-debian-tools.sh chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
        yield client


class Console:
    """One person at one browser: a context of its own (its own cookies) in the shared Chromium."""

    def __init__(self, context: BrowserContext, page: Page, base: str) -> None:
        self.context, self.page, self.base = context, page, base

    async def open(self, path: str) -> Page:
        await self.page.goto(self.base + path)
        return self.page

    async def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(
    browser: Browser, stack: Stack, role: str, user_id: str, *, locale: str = "en-GB", **claims: str
) -> Console:
    """Through the development sign-in form, field by field, by label."""
    context = await browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    console = Console(context, page, stack.api_url)
    await console.open("/console/login")
    await page.get_by_label("Role").select_option(role)
    await page.get_by_label("User id").fill(user_id)
    if "level" in claims:
        await page.get_by_label("Level").select_option(claims["level"])
    for label, key in (("Region", "region"), ("USCC", "uscc"), ("Groups", "groups")):
        if key in claims:
            await page.get_by_label(label, exact=True).fill(claims[key])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    return console


def journey(http: httpx.AsyncClient, stack: Stack) -> Journey:
    return Journey(http, stack.token, random_uscc(DISTRICT), program=DEMO)


@dataclass
class OnItsWay:
    enterprise: Journey
    credit_line: asyncio.Task[dict[str, Any]]


@pytest.fixture(scope="module", autouse=True)
async def credit_line_on_its_way(stack: Stack) -> AsyncIterator[OnItsWay]:
    """The finance test's enterprise, on its way to a credit line from the start of the module: the same
    journey (both reviews, the demo program's 20 s public notice, recognition, the line), begun before the
    tests ahead of it rather than after them, so that its notice passes while they run. Looked at every
    0.25 s rather than every 20 ms, so as not to crowd the pages the other tests are waiting for."""
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=30) as client:
        enterprise = Journey(client, stack.token, random_uscc(DISTRICT), program=DEMO, poll=0.25)
        task = asyncio.create_task(enterprise.to_credit_line())
        try:
            yield OnItsWay(enterprise, task)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def test_sign_in_form_language_switch_and_refusals(browser: Browser, stack: Stack) -> None:
    context = await browser.new_context(locale="en-GB")
    page = await context.new_page()
    await page.goto(stack.api_url + "/console/login")
    for label in ("Role", "User id", "Level", "Region", "USCC", "Groups"):
        await expect(page.get_by_label(label, exact=True)).to_be_visible()
    await Console(context, page, stack.api_url).shot("login")
    # A reviewer needs a level and a region: said next to the fields, no session.
    await page.get_by_label("Role").select_option("reviewer")
    await page.get_by_label("User id").fill("rev-no-region")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator(".field-error").first).to_be_visible()
    assert not [c for c in await context.cookies() if c["name"] == "giantflow_console"]
    await context.close()

    reviewer = await sign_in(browser, stack, "reviewer", "rev-lang", level="municipal", region=CITY)
    page = reviewer.page
    await expect(page.get_by_role("link", name="Review queue")).to_be_visible()
    await page.get_by_role("link", name="中文").click()
    await expect(page.get_by_role("button", name="退出")).to_be_visible()
    await expect(page.get_by_role("link", name="评审队列")).to_be_visible()
    await page.get_by_role("link", name="English").click()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    # Finance pages are not in a reviewer's navigation.
    await expect(page.get_by_role("link", name="Payouts")).to_have_count(0)

    # A form posted from another origin, or without the session's token, is refused and changes nothing.
    forged = await reviewer.context.request.post(
        stack.api_url + "/console/logout", form={"csrf_token": "forged"}, max_redirects=0
    )
    assert forged.status == 403
    await reviewer.open("/console/reviews")
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()  # still signed in

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await reviewer.context.close()


async def test_reviewer_claims_opens_evidence_and_approves_both_stages(
    browser: Browser, stack: Stack, http: httpx.AsyncClient
) -> None:
    enterprise = journey(http, stack)
    application_id = await enterprise.submit()
    await enterprise.wait_status(application_id, "in_review", "municipal")

    for level, region, user_id in (("municipal", CITY, "rev-city"), ("provincial", PROVINCE, "rev-province")):
        reviewer = await sign_in(browser, stack, "reviewer", user_id, level=level, region=region)
        page = await reviewer.open(f"/console/reviews?q={enterprise.uscc}")
        row = page.locator("tr", has_text=enterprise.uscc)
        await expect(row).to_have_count(1)
        if level == "municipal":
            await reviewer.shot("review-queue")
        await row.get_by_role("button", name="Claim").click()
        row = page.locator("tr", has_text=enterprise.uscc)
        await expect(row.get_by_role("button", name="Release")).to_be_visible()
        await row.get_by_role("link").first.click()
        await expect(page.get_by_role("button", name="Approve")).to_be_visible()

        # The evidence opens: the document's bytes, as a PDF.
        links = page.locator("a[href*='/console/documents/']")
        assert await links.count() >= 1
        href = await links.first.get_attribute("href")
        assert href is not None
        content = await reviewer.context.request.get(stack.api_url + href)
        assert content.status == 200
        assert content.headers["content-type"].startswith("application/pdf")
        assert (await content.body()).startswith(b"%PDF")
        if level == "municipal":
            await reviewer.shot("application")

        await page.get_by_label("Reason").fill(f"{level} review: figures and evidence check out")
        await page.get_by_role("button", name="Approve").click()
        await expect(page.locator(".notice")).to_be_visible()
        await reviewer.context.close()
        if level == "municipal":
            await enterprise.wait_status(application_id, "in_review", "provincial")
    await enterprise.wait_status(application_id, "public_notice")

    # Someone from another province is told there is nothing here: never the data.
    stranger = await sign_in(
        browser, stack, "reviewer", "rev-other", level="provincial", region=OTHER_PROVINCE
    )
    page = await stranger.open(f"/console/applications/{application_id}")
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert enterprise.uscc not in await page.content()
    await stranger.context.close()

    # The notice page lists it for a reviewer whose scope covers it.
    reviewer = await sign_in(browser, stack, "reviewer", "rev-notice", level="provincial", region=PROVINCE)
    page = await reviewer.open("/console/notices")
    await expect(page.get_by_text(enterprise.uscc).first).to_be_visible()
    await reviewer.shot("public-notice")
    await reviewer.context.close()


async def test_returned_application_is_supplemented(
    browser: Browser, stack: Stack, http: httpx.AsyncClient
) -> None:
    enterprise = journey(http, stack)
    application_id = await enterprise.submit()
    await enterprise.wait_status(application_id, "in_review", "municipal")
    reviewer = await sign_in(browser, stack, "reviewer", "rev-return", level="municipal", region=CITY)
    page = await reviewer.open(f"/console/applications/{application_id}")
    # Return needs a reason: refused next to the field, nothing decided.
    await page.get_by_role("button", name="Return").click(no_wait_after=True)
    body = await enterprise.application(application_id)
    assert body["status"] == "in_review"
    await page.get_by_label("Reason").fill("The 2025 statements are missing the auditor's stamp")
    await page.get_by_role("button", name="Return").click()
    await expect(page.locator(".notice")).to_be_visible()
    await enterprise.wait_status(application_id, "returned")

    await enterprise.call(
        "POST",
        f"/applications/{application_id}/supplements",
        enterprise.owner,
        200,
        key=str(uuid.uuid4()),
        json={"note": "Stamped statements attached"},
    )
    await enterprise.wait_status(application_id, "in_review")
    page = await reviewer.open(f"/console/applications/{application_id}")
    timeline = page.locator(".timeline")
    await expect(timeline).to_contain_text("Stamped statements attached")
    await reviewer.context.close()


async def test_finance_two_approvers_then_disbursed(
    browser: Browser, stack: Stack, credit_line_on_its_way: OnItsWay
) -> None:
    enterprise = credit_line_on_its_way.enterprise
    line = await credit_line_on_its_way.credit_line
    drawdown_id = await enterprise.request_drawdown(line["id"], "1500000.00")  # above the dual threshold

    # The maker never checks: a finance officer signed in under the requester's own user id sees the payout
    # and no button.
    maker = await sign_in(browser, stack, "finance", f"owner-{enterprise.uscc}")
    page = await maker.open(f"/console/payouts?uscc={enterprise.uscc}")
    row = page.locator("tr", has_text="1,500,000.00")
    await expect(row).to_have_count(1)
    await expect(row.get_by_role("button", name="Approve")).to_have_count(0)
    await maker.context.close()

    first = await sign_in(browser, stack, "finance", "finance-a")
    page = await first.open(f"/console/payouts?uscc={enterprise.uscc}")
    row = page.locator("tr", has_text="1,500,000.00")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("¥1,500,000.00")
    await first.shot("payouts")
    await row.get_by_label("Reason").fill("Within the line; purpose checked")
    await row.get_by_role("button", name="Approve").click()
    row = page.locator("tr", has_text="1,500,000.00")
    await expect(row).to_contain_text("finance-a")
    await expect(row.get_by_role("button", name="Approve")).to_have_count(0)  # never twice
    await first.context.close()

    second = await sign_in(browser, stack, "finance", "finance-b")
    page = await second.open(f"/console/payouts?uscc={enterprise.uscc}")
    row = page.locator("tr", has_text="1,500,000.00")
    await row.get_by_label("Reason").fill("Second approval")
    await row.get_by_role("button", name="Approve").click()
    await expect(page.locator(".notice")).to_be_visible()
    disbursed = await enterprise.wait_disbursed(drawdown_id)
    assert disbursed["status"] == "disbursed"

    page = await second.open(f"/console/disbursements?uscc={enterprise.uscc}")
    await expect(page.get_by_text("¥1,500,000.00").first).to_be_visible()
    await expect(page.get_by_role("link", name="Export CSV")).to_be_visible()
    await second.shot("disbursements")
    async with page.expect_download() as download_info:
        await page.get_by_role("link", name="Export CSV").click()
    download = await download_info.value
    saved = await download.path()
    assert "1500000.00" in Path(saved).read_text()
    page = await second.open("/console/credit")
    await expect(page.locator("svg.chart").first).to_be_visible()
    await second.shot("credit")

    # Finance heard of it all: the payout's events are in the feed, newest first, the paid one on top.
    page = await second.open("/console/notifications")
    paid = page.locator("tr", has_text="Payout paid").filter(has_text=enterprise.uscc)
    await expect(paid).to_have_count(1)
    await expect(page.get_by_role("link", name="Notifications (")).to_be_visible()
    await second.shot("notifications")
    await paid.get_by_role("button", name="Mark read").click()
    await expect(paid.get_by_role("button", name="Mark read")).to_have_count(0)
    await second.context.close()


async def test_administrator_pages(browser: Browser, stack: Stack) -> None:
    admin = await sign_in(browser, stack, "admin", "admin-console")
    for path, name, shot in (
        ("/console/programs", "Programs", "programs"),
        ("/console/recognitions", "Recognitions", "recognitions"),
    ):
        page = await admin.open(path)
        await expect(page.get_by_role("link", name=name)).to_have_attribute("aria-current", "page")
        await admin.shot(shot)
    await admin.context.close()
