"""The reviewer's pages on a real database and a real review workflow: the queue with its filters and claims,
the application page with its evidence and decision form, the evidence content, decisions (refused without a
reason, refused to a reviewer who does not hold the claim, refused without the CSRF token, taken with a
reason), a reviewer of another province kept out, both languages, and the public notice with an objection
resolved from its form."""

from __future__ import annotations

import html
import re
import uuid
from datetime import datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import httpx

from services.config import Settings
from services.console import reviews as console_reviews
from services.console.web import translations
from services.vocabulary import TIERS, ApplicationStatus
from tests.applications.conftest import Applicant, poll
from tests.conftest import bearer, make_token
from tests.console.conftest import StaffFactory
from tests.support.factories import random_uscc

CITY = {"level": "municipal", "region": "500100"}  # covers the applicant's district 500103
PROVINCE = {"level": "provincial", "region": "500000"}
ELSEWHERE = {"level": "provincial", "region": "650000"}
EVIDENCE = b"%PDF-1.4 console evidence " + uuid.uuid4().bytes.hex().encode()


def api_reviewer(settings: Settings, sub: str, level: str, region: str) -> dict[str, str]:
    return bearer(make_token(settings, "reviewer", sub, level=level, region=region))


async def submitted(api: httpx.AsyncClient, settings: Settings) -> tuple[Applicant, dict[str, Any], str]:
    """An application in review at the municipal stage (its API view) and its evidence document's id."""
    applicant = Applicant(api=api, settings=settings, uscc=random_uscc("500103"))
    assert (await applicant.register()).status_code == 201
    licence = await applicant.upload("business_licence", EVIDENCE)
    assert licence.status_code == 201, licence.text
    statements = await applicant.evidence("financial_statements_3y")
    document_id = licence.json()["id"]
    resp = await applicant.submit(evidence=[document_id, *statements])
    assert resp.status_code == 201, resp.text
    view = await poll(
        api,
        f"/api/v1/applications/{resp.json()['id']}",
        applicant.headers,
        lambda b: b["status"] == "in_review" and b["task"] is not None,
    )
    return applicant, view, document_id


def buttons(page: str) -> list[str]:
    return [html.unescape(label).strip() for label in re.findall(r"<button[^>]*>([^<]*)</button>", page)]


def row_of(page: str, uscc: str) -> str:
    found = re.search(r"<tr[^>]*>(?:(?!</tr>).)*" + uscc + r"(?:(?!</tr>).)*</tr>", page, re.S)
    assert found, f"no row for {uscc}"
    return found.group(0)


async def test_a_reviewer_claims_reads_and_decides(
    api: httpx.AsyncClient, settings: Settings, staff: StaffFactory
) -> None:
    applicant, view, document_id = await submitted(api, settings)
    app_id, task_id, uscc = view["id"], view["task"]["id"], applicant.uscc
    url = f"/api/v1/applications/{app_id}"
    city_api = api_reviewer(settings, "rev-a", **CITY)
    page_url = f"/console/applications/{app_id}"

    async with (
        staff("reviewer", "rev-a", **CITY) as a,
        staff("reviewer", "rev-b", **CITY) as b,
        staff("reviewer", "rev-x", **ELSEWHERE) as x,
    ):
        for client in (a, b, x):
            client.client.headers["Accept-Language"] = "en"  # English labels, unless a request says otherwise
        # the queue, filtered: the task with its facts and a Claim button; the counts beside the filters
        queue = await a.get("/console/reviews", params={"stage": "municipal", "assignee": "none", "q": uscc})
        assert queue.status_code == 200, queue.text
        row = row_of(queue.text, uscc)
        assert f"Enterprise {uscc}" in row
        assert f"/console/applications/{app_id}" in row
        assert "Claim" in buttons(row)
        assert "Release" not in buttons(row)
        assert 'class="counts"' in queue.text
        assert '<option value="municipal" selected>' in queue.text
        assert '<label for="f-q">' in queue.text
        other = await a.get("/console/reviews", params={"stage": "provincial", "q": uscc})
        assert f"Enterprise {uscc}" not in other.text  # the filter applies

        # rev-a claims it; back to the queue it came from, which now offers Release
        back = f"/console/reviews?q={uscc}"
        claimed = await a.post(
            f"/console/review-tasks/{task_id}/claim", {"idempotency_key": str(uuid.uuid4()), "next": back}
        )
        assert claimed.status_code == 303, claimed.text
        assert claimed.headers["location"].startswith(back)
        assert "done=claimed" in claimed.headers["location"]
        mine = await a.get(claimed.headers["location"])
        assert "Release" in buttons(row_of(mine.text, uscc))
        assert 'role="status"' in mine.text

        # rev-b sees who holds it, no Release nor Claim; its own claim and its decision are refused (409)
        theirs = await b.get("/console/reviews", params={"q": uscc})
        row = row_of(theirs.text, uscc)
        assert "rev-a" in row
        assert "Release" not in buttons(row)
        assert "Claim" not in buttons(row)
        refused = await b.post(f"/console/review-tasks/{task_id}/claim", {"next": back})
        assert refused.status_code == 409
        assert "rev-a" in refused.text
        b_page = await b.get(page_url)
        assert b_page.status_code == 200
        assert "rev-a" in b_page.text
        assert 'value="approve"' not in b_page.text
        b_decides = await b.post(
            f"{page_url}/decisions", {"decision": "approve", "reason": "fine", "stage": "municipal"}
        )
        assert b_decides.status_code == 409, b_decides.text
        assert "rev-a" in b_decides.text

        # the application page: facts, figures, screening, evidence inline, history, the decision form
        page = await a.get(page_url, headers={"Accept-Language": "en"})
        assert page.status_code == 200, page.text
        text = page.text
        for part_of_page in (f"Enterprise {uscc}", "Declared figures", "Screening", '<ol class="timeline">'):
            assert part_of_page in text
        frame = f'<iframe class="evidence-frame" src="/console/documents/{document_id}/content?inline=1"'
        assert frame in text
        assert f'href="/console/documents/{document_id}/content"' in text
        assert {"Approve", "Return", "Reject", "Release"} <= set(buttons(text))
        assert '<textarea id="f-reason" name="reason" rows="4" required' in text
        assert '<label for="f-reason">' in text
        zh = await a.get(page_url, headers={"Accept-Language": "zh-CN"})
        zh_ = translations("zh-CN").gettext
        assert {zh_("Approve"), zh_("Return"), zh_("Reject")} <= set(buttons(zh.text))
        assert zh_("Approve") != "Approve"
        assert "Approve" not in buttons(zh.text)

        # the evidence: inline for the page's frame, attached for a download, ETag and ranges kept
        inline = await a.get(f"/console/documents/{document_id}/content", params={"inline": "1"})
        assert inline.status_code == 200
        assert inline.content == EVIDENCE
        assert inline.headers["content-disposition"].startswith("inline")
        assert inline.headers["x-frame-options"] == "SAMEORIGIN"
        assert inline.headers["content-type"] == "application/pdf"
        download = await a.get(f"/console/documents/{document_id}/content")
        assert download.headers["content-disposition"].startswith("attachment")
        part = await a.get(f"/console/documents/{document_id}/content", headers={"Range": "bytes=0-3"})
        assert part.status_code == 206
        assert part.content == EVIDENCE[:4]
        same = await a.get(
            f"/console/documents/{document_id}/content", headers={"If-None-Match": download.headers["etag"]}
        )
        assert same.status_code == 304

        # another province: the 404 page for the application and its evidence, nothing of them shown
        for path in (page_url, f"/console/documents/{document_id}/content"):
            elsewhere = await x.get(path)
            assert elsewhere.status_code == 404
            assert uscc not in elsewhere.text
            assert EVIDENCE not in elsewhere.content

        before = (await api.get(url, headers=city_api)).json()

        # no reason: refused next to the field (422), nothing decided
        no_reason = await a.post(
            f"{page_url}/decisions",
            {"decision": "approve", "reason": "  ", "stage": "municipal"},
            headers={"Accept-Language": "en"},
        )
        assert no_reason.status_code == 422, no_reason.text
        error = re.search(r'<p class="field-error" id="e-reason">([^<]+)</p>', no_reason.text)
        assert error
        assert "reason" in error.group(1)
        assert 'aria-describedby="e-reason"' in no_reason.text

        # no CSRF token: 403, nothing decided
        forged = await a.client.post(
            f"{page_url}/decisions",
            data={"decision": "approve", "reason": "looks right", "stage": "municipal"},
            headers={"Origin": "http://testserver"},
        )
        assert forged.status_code == 403

        after = (await api.get(url, headers=city_api)).json()
        assert (after["status"], after["stage"], len(after["history"])) == (
            before["status"],
            before["stage"],
            len(before["history"]),
        )

        # approved with a reason: the next stage
        approved = await a.post(
            f"{page_url}/decisions",
            {
                "decision": "approve",
                "reason": "Figures and evidence agree.",
                "stage": "municipal",
                "idempotency_key": str(uuid.uuid4()),
            },
        )
        assert approved.status_code == 303, approved.text
        assert approved.headers["location"] == f"{page_url}?done=decided"
        moved = await poll(api, url, city_api, lambda body: body["stage"] == "provincial")
        assert "Figures and evidence agree." in [entry["reason"] for entry in moved["history"]]
        shown = await a.get(approved.headers["location"], headers={"Accept-Language": "en"})
        assert "Your decision is recorded." in shown.text
        assert "Figures and evidence agree." in shown.text
        assert 'value="approve"' not in shown.text  # the provincial stage is not a city reviewer's


async def test_public_notice_and_an_objection_resolved(
    api: httpx.AsyncClient, settings: Settings, staff: StaffFactory
) -> None:
    applicant, view, _ = await submitted(api, settings)
    app_id = view["id"]
    url = f"/api/v1/applications/{app_id}"
    for level, region in (("municipal", "500100"), ("provincial", "500000")):
        headers = api_reviewer(settings, f"{level}-decider", level, region)

        def waiting(body: dict[str, Any], level: str = level) -> bool:
            return body["stage"] == level and body["task"] is not None

        await poll(api, url, headers, waiting)
        resp = await api.post(
            f"{url}/decisions", headers=headers, json={"decision": "approve", "reason": f"{level} ok"}
        )
        assert resp.status_code == 200, resp.text
    province_api = api_reviewer(settings, "rev-p", **PROVINCE)
    await poll(api, url, province_api, lambda b: b["status"] == "public_notice")
    filed = await api.post(
        f"{url}/objections",
        headers=bearer(make_token(settings, "enterprise", "rival", uscc=random_uscc("500103"))),
        json={"reason": "Their market share is overstated."},
    )
    assert filed.status_code == 201, filed.text
    objection_id = filed.json()["objection_id"]

    async with staff("reviewer", "rev-p", **PROVINCE) as p, staff("reviewer", "rev-x", **ELSEWHERE) as x:
        p.client.headers["Accept-Language"] = "en"
        page = await p.get("/console/notices", headers={"Accept-Language": "en"})
        assert page.status_code == 200, page.text
        assert f"Enterprise {applicant.uscc}" in page.text
        assert "Their market share is overstated." in page.text
        assert f'action="/console/objections/{objection_id}/resolution"' in page.text
        assert f'<label for="f-reason-{objection_id}">' in page.text
        assert applicant.uscc not in (await x.get("/console/notices")).text

        missing = await p.post(
            f"/console/objections/{objection_id}/resolution",
            {"reason": "", "next": "/console/notices"},
            headers={"Accept-Language": "en"},
        )
        assert missing.status_code == 422
        assert f'id="e-upheld-{objection_id}"' in missing.text
        assert f'id="e-reason-{objection_id}"' in missing.text
        assert (await api.get(url, headers=province_api)).json()["objections"][0]["status"] == "open"

        resolved = await p.post(
            f"/console/objections/{objection_id}/resolution",
            {
                "upheld": "false",
                "reason": "The share is confirmed by the association.",
                "idempotency_key": str(uuid.uuid4()),
                "next": "/console/notices",
            },
        )
        assert resolved.status_code == 303, resolved.text
        assert resolved.headers["location"] == "/console/notices?done=resolved"
        body = await poll(
            api, url, province_api, lambda b: b["objections"] and b["objections"][0]["status"] != "open"
        )
        assert body["objections"][0]["status"] == "dismissed"


def test_the_words_the_pages_look_up_have_their_zh_cn_translation() -> None:
    """What the reviewer's pages translate by value (the extractor cannot see these): the figures' labels,
    the form messages, the tiers, statuses and history actions."""
    chinese = translations("zh-CN")
    words = [
        *console_reviews.DONE.values(),
        *console_reviews.YEAR_FIGURES.values(),
        *console_reviews.OTHER_FIGURES.values(),
        *console_reviews.COMPLIANCE.values(),
        *console_reviews.DECISION_MESSAGES.values(),
        *console_reviews.RESOLUTION_MESSAGES.values(),
        *TIERS,
        *get_args(ApplicationStatus),
        *("open", "upheld", "dismissed", "screened", "submitted", "approved", "supplemented"),
    ]
    missing = [word for word in words if chinese.gettext(word) == word]
    assert not missing


async def test_a_return_sets_when_the_supplement_is_due(
    api: httpx.AsyncClient, settings: Settings, staff: StaffFactory
) -> None:
    """The decision form's "Supplement due by" (Asia/Shanghai time): refused next to the field with Approve,
    or beyond the program's deadline (nothing decided); with Return, the due date the application shows."""
    applicant, view, _ = await submitted(api, settings)
    app_id = view["id"]
    page_url = f"/console/applications/{app_id}"
    shanghai = ZoneInfo("Asia/Shanghai")
    async with staff("reviewer", "rev-due", **CITY) as reviewer:
        reviewer.client.headers["Accept-Language"] = "en"
        page = await reviewer.get(page_url)
        assert '<label for="f-supplement_due_at">Supplement due by (with Return)</label>' in page.text
        soon = (datetime.now(shanghai) + timedelta(seconds=40)).replace(microsecond=0, tzinfo=None)
        for decision, due in (("approve", soon), ("return", soon + timedelta(days=3))):
            refused = await reviewer.post(
                f"{page_url}/decisions",
                {
                    "decision": decision,
                    "reason": "stamp",
                    "stage": "municipal",
                    "supplement_due_at": due.isoformat(),
                },
            )
            assert refused.status_code == 422, refused.text
            assert 'id="e-supplement_due_at"' in refused.text
            body = (await api.get(f"/api/v1/applications/{app_id}", headers=applicant.headers)).json()
            assert body["status"] == "in_review"
        returned = await reviewer.post(
            f"{page_url}/decisions",
            {
                "decision": "return",
                "reason": "stamp",
                "stage": "municipal",
                "supplement_due_at": soon.isoformat(),
            },
        )
        assert returned.status_code == 303, returned.text
    body = (await api.get(f"/api/v1/applications/{app_id}", headers=applicant.headers)).json()
    assert body["status"] == "returned"
    assert datetime.fromisoformat(body["supplement_due_at"]) == soon.replace(tzinfo=shanghai)


async def test_a_form_over_the_write_limit_is_a_429_page_that_says_when_to_come_back(
    api_rollback: httpx.AsyncClient, staff_rollback: StaffFactory
) -> None:
    """The console's forms count against the API's write limit; over it, the page says so in the reader's
    language and carries Retry-After, as the API's problem does."""
    api_rollback._transport.app.state.write_limiter.limit = 1  # type: ignore[attr-defined]
    claim = f"/console/review-tasks/{uuid.uuid4()}/claim"
    async with staff_rollback("reviewer", f"rev-limit-{uuid.uuid4().hex[:8]}", **CITY) as reviewer:
        first = await reviewer.post(claim, {"next": "/console/reviews"}, headers={"Accept-Language": "en"})
        assert first.status_code == 404, first.text  # counted, though there is no such task
        over = await reviewer.post(claim, {"next": "/console/reviews"}, headers={"Accept-Language": "en"})
        zh = await reviewer.post(claim, {"next": "/console/reviews"}, headers={"Accept-Language": "zh-CN"})
    assert over.status_code == 429, over.text
    retry = int(over.headers["Retry-After"])
    assert 1 <= retry <= 60
    said = f"Too many changes at once: nothing was changed. Try again in {retry} s."
    assert said in html.unescape(over.text)
    assert zh.status_code == 429
    assert f"请在 {zh.headers['Retry-After']} 秒后重试" in zh.text
