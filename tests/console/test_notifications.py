"""The staff member's notifications page and the navigation's badge, inside a rolled-back transaction: the
events written with ``services.events.emit`` are in the feed of whom their audience names (finance, a reviewer
scope) and nobody else's, each in words with the page to act on it; ``Mark read`` (with the CSRF token only)
takes one off the unread count the navigation shows on every page.

The database holds what other tests committed, so counts are compared with what the page showed before."""

from __future__ import annotations

import re
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from devtools.seeding import random_uscc
from services.console.web import LANG_COOKIE
from services.events import Audience, ReviewTaskOverdue, emit
from tests.console.conftest import Staff, StaffFactory
from tests.console.test_admin import row_of
from tests.notifications.conftest import approved

EN = {"Accept-Language": "en"}
PAGE = "/console/notifications"
BADGE = re.compile(r'href="/console/notifications"(?: aria-current="page")?>Notifications(?: \((\d+)\))?</a>')
PROVINCIAL = {"level": "provincial", "region": "500000"}


async def payout_approved(session: AsyncSession, uscc: str) -> uuid.UUID:
    return await emit(session, approved(uscc), Audience(uscc=uscc, finance=True))


async def review_overdue(session: AsyncSession, uscc: str, application_id: uuid.UUID) -> uuid.UUID:
    event = ReviewTaskOverdue(
        application_id=application_id,
        uscc=uscc,
        program="demo",
        tier="specialized_new",
        status="in_review",
        stage="provincial",
        due_at="2026-11-30T10:00:00+08:00",  # type: ignore[arg-type]
        escalation_group=None,
    )
    return await emit(session, event, Audience(uscc=uscc, reviewer_level="provincial", region_code="500103"))


async def badge(member: Staff, path: str = PAGE) -> int:
    """The unread count the navigation shows beside "Notifications" (none shown: 0)."""
    page = await member.get(path, headers=EN)
    assert page.status_code == 200, page.text
    found = BADGE.search(page.text)
    assert found, "the navigation has no Notifications link"
    return int(found.group(1) or 0)


async def test_each_staff_member_sees_the_events_addressed_to_it(
    staff_rollback: StaffFactory, session: AsyncSession
) -> None:
    uscc, application_id = random_uscc("500103"), uuid.uuid4()
    payout = await payout_approved(session, uscc)
    overdue = await review_overdue(session, uscc, application_id)
    await session.flush()

    async with staff_rollback("finance", "fin-notes") as finance:
        page = (await finance.get(PAGE, headers=EN)).text
    row = row_of(page, f"notification-{payout}")
    assert "Payout approved" in row
    assert f'href="/console/payouts?uscc={uscc}"' in row
    assert "Amount: ¥1,500,000.00" in row
    assert uscc in row
    assert "Unread" in row
    assert "Mark read" in row
    assert f"notification-{overdue}" not in page
    assert re.search(r"<time[^>]*>\d{4}-\d{2}-\d{2} \d{2}:\d{2}</time>", row)  # Asia/Shanghai, to the minute

    async with staff_rollback("reviewer", "rev-notes", **PROVINCIAL) as reviewer:
        page = (await reviewer.get(PAGE, headers=EN)).text
    row = row_of(page, f"notification-{overdue}")
    assert "Review task overdue" in row
    assert f'href="/console/applications/{application_id}"' in row
    assert "Stage: provincial" in row
    assert f"notification-{payout}" not in page

    async with staff_rollback("reviewer", "rev-elsewhere", level="provincial", region="510000") as other:
        page = (await other.get(PAGE, headers=EN)).text
    assert f"notification-{overdue}" not in page
    assert f"notification-{payout}" not in page

    async with staff_rollback("admin", "adm-notes") as admin:  # admins hear everything
        page = (await admin.get(PAGE, headers=EN)).text
    assert f"notification-{overdue}" in page
    assert f"notification-{payout}" in page


async def test_marking_read_takes_one_off_the_badge_and_needs_the_csrf_token(
    staff_rollback: StaffFactory, session: AsyncSession
) -> None:
    async with staff_rollback("finance", "fin-badge") as finance:
        before = await badge(finance)
        first = await payout_approved(session, random_uscc("500103"))
        second = await payout_approved(session, random_uscc("500103"))
        await session.flush()
        assert await badge(finance) == before + 2
        assert await badge(finance, "/console/payouts") == before + 2  # on every page's navigation

        url = f"{PAGE}/{first}/read"
        back = f"{PAGE}?unread=1"
        forged = await finance.client.post(
            url, data={"next": back}, headers={"Origin": "http://testserver", **EN}
        )
        assert forged.status_code == 403
        assert "This form has expired" in forged.text
        assert await badge(finance) == before + 2

        done = await finance.post(url, {"next": back, "idempotency_key": ""})
        assert done.status_code == 303
        assert done.headers["location"] == back
        assert await badge(finance) == before + 1
        page = (await finance.get(PAGE, headers=EN)).text
        row = row_of(page, f"notification-{first}")
        assert "Read" in row
        assert "Mark read" not in row
        unread = (await finance.get(back, headers=EN)).text
        assert f"notification-{first}" not in unread
        assert f"notification-{second}" in unread

        again = await finance.post(url, {"next": "https://elsewhere.example/"})
        assert again.status_code == 303
        assert again.headers["location"] == PAGE  # never off the console
        assert await badge(finance) == before + 1

    async with staff_rollback("reviewer", "rev-badge", **PROVINCIAL) as reviewer:
        not_theirs = await reviewer.post(f"{PAGE}/{second}/read", {"next": PAGE}, headers=EN)
    assert not_theirs.status_code == 404


async def test_every_staff_role_has_the_link(staff_rollback: StaffFactory) -> None:
    for role, claims in (("reviewer", PROVINCIAL), ("finance", {}), ("admin", {})):
        async with staff_rollback(role, f"{role}-link", **claims) as member:
            await badge(member, "/console/programs")


async def test_the_page_in_chinese(staff_rollback: StaffFactory, session: AsyncSession) -> None:
    uscc = random_uscc("500103")
    overdue = await review_overdue(session, uscc, uuid.uuid4())
    await session.flush()
    async with staff_rollback("reviewer", "rev-zh", **PROVINCIAL) as reviewer:
        reviewer.client.cookies.set(LANG_COOKIE, "zh-CN")
        page = (await reviewer.get(PAGE)).text
    assert "消息通知" in page
    assert re.search(r"消息通知 \(\d+\)</a>", page)  # the badge
    row = row_of(page, f"notification-{overdue}")
    assert "评审任务已超期" in row
    assert "省级" in row
    assert "未读" in row
    assert "标为已读" in row
