"""Evidence documents over HTTP: who reads which (lists, metadata, content), the download's conditional and
range requests, idempotent uploads; the bad-input gaps of registration and filing; supplements that carry
evidence and corrected figures and are screened again. Real PostgreSQL, the Temporal dev server, a worker."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import records
from services.applications.metrics import DeclaredMetrics, changed_figures
from services.applications.models import ApplicationDocument, Document, Transition
from services.applications.schemas import latest_today
from services.config import Settings
from services.contracts import Actor, SupplementContent, TransitionInput
from services.files import byte_range, content_disposition
from services.programs import load_programs
from tests.applications.conftest import PROGRAMS, Applicant, new_id, poll, reviewer_headers
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, seed_application, strong_metrics, weak_metrics

API = "/api/v1"
MUNICIPAL = ("municipal", "500100")  # covers the applicants' district 500103
ELSEWHERE = ("municipal", "110100")


def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "admin", "admin-docs"))


async def filed(applicant: Applicant) -> tuple[str, list[str]]:
    """A registered applicant's application in review: its id and the two documents it cites."""
    assert (await applicant.register()).status_code == 201
    evidence = await applicant.evidence("business_licence", "financial_statements_3y")
    created = await applicant.submit(evidence=evidence)
    assert created.status_code == 201, created.text
    app_id: str = created.json()["id"]
    await poll(
        applicant.api, f"{API}/applications/{app_id}", applicant.headers, lambda b: b["status"] == "in_review"
    )
    return app_id, evidence


async def listed(api: httpx.AsyncClient, headers: dict[str, str], **params: str) -> list[str]:
    """Every page of GET /documents, as ids."""
    ids: list[str] = []
    query: dict[str, str] = {"limit": "2", **params}
    for _ in range(50):
        resp = await api.get(f"{API}/documents", headers=headers, params=query)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        ids += [d["id"] for d in body["items"]]
        if body["next_cursor"] is None:
            return ids
        query["cursor"] = body["next_cursor"]
    raise AssertionError("the list never ended")


# --- who reads what --------------------------------------------------------------------------------------


async def test_the_list_is_scoped_per_caller(applicant: Applicant, settings: Settings) -> None:
    api = applicant.api
    app_id, cited = await filed(applicant)
    (uncited,) = await applicant.evidence("ip_certificates")
    other = Applicant(api=api, settings=settings, uscc=random_uscc("500103"))
    assert (await other.register()).status_code == 201
    (theirs,) = await other.evidence("business_licence")

    mine = [*cited, uncited]
    assert await listed(api, applicant.headers) == mine  # oldest first, over pages of 2
    assert await listed(api, applicant.headers, kind="ip_certificates") == [uncited]
    assert await listed(api, applicant.headers, application_id=app_id) == cited
    assert await listed(api, applicant.headers, uscc=other.uscc) == []
    assert await listed(api, other.headers) == [theirs]
    assert await listed(api, other.headers, application_id=app_id) == []  # not theirs to filter by

    # A reviewer reads what the applications in its region cite - never an uncited upload.
    in_region = reviewer_headers(settings, *MUNICIPAL)
    seen = await listed(api, in_region, uscc=applicant.uscc)
    assert seen == cited
    assert await listed(api, in_region, application_id=app_id) == cited
    assert theirs not in await listed(api, in_region, uscc=other.uscc)
    elsewhere = reviewer_headers(settings, *ELSEWHERE)
    assert await listed(api, elsewhere, uscc=applicant.uscc) == []
    assert await listed(api, elsewhere, application_id=app_id) == []

    assert await listed(api, admin(settings), uscc=applicant.uscc) == mine
    finance = bearer(make_token(settings, "finance", "finance-docs"))
    refused = await api.get(f"{API}/documents", headers=finance)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert (await api.get(f"{API}/documents")).status_code == 401
    bad = await api.get(f"{API}/documents", headers=admin(settings), params={"kind": "No Such"})
    assert bad.status_code == 422


async def test_metadata_and_content_are_404_for_anyone_who_may_not_read_them(
    applicant: Applicant, settings: Settings
) -> None:
    api = applicant.api
    _, (licence, _) = await filed(applicant)
    (uncited,) = await applicant.evidence("ip_certificates")
    other = Applicant(api=api, settings=settings, uscc=random_uscc("500103"))
    in_region = reviewer_headers(settings, *MUNICIPAL)
    provincial = reviewer_headers(settings, "provincial", "500000")
    elsewhere = reviewer_headers(settings, *ELSEWHERE)

    own = await api.get(f"{API}/documents/{licence}", headers=applicant.headers)
    assert own.status_code == 200
    body = own.json()
    assert body["id"] == licence
    assert (body["uscc"], body["kind"], body["filename"]) == (
        applicant.uscc,
        "business_licence",
        "business_licence.pdf",
    )
    assert body["content_type"] == "application/pdf"
    assert body["size"] == len(b"%PDF-1.4 evidence")
    assert body["sha256"] == hashlib.sha256(b"%PDF-1.4 evidence").hexdigest()

    for suffix in ("", "/content"):
        for headers in (applicant.headers, in_region, provincial, admin(settings)):
            assert (await api.get(f"{API}/documents/{licence}{suffix}", headers=headers)).status_code == 200
        for headers, document in [
            (other.headers, licence),
            (elsewhere, licence),
            (in_region, uncited),  # no application cites it
            (admin(settings), new_id()),
        ]:
            hidden = await api.get(f"{API}/documents/{document}{suffix}", headers=headers)
            assert hidden.status_code == 404, (suffix, hidden.text)
            assert hidden.headers["content-type"] == "application/problem+json"
        finance = bearer(make_token(settings, "finance", "finance-docs"))
        assert (await api.get(f"{API}/documents/{licence}{suffix}", headers=finance)).status_code == 403
        assert (await api.get(f"{API}/documents/{licence}{suffix}")).status_code == 401


# --- the download ------------------------------------------------------------------------------------------


async def upload_named(
    applicant: Applicant,
    content: bytes,
    filename: str,
    ctype: str = "application/pdf",
    key: str | None = None,
) -> httpx.Response:
    headers = {**applicant.headers, **({"Idempotency-Key": key} if key else {})}
    return await applicant.api.post(
        f"{API}/documents",
        headers=headers,
        data={"kind": "financial_statements_3y"},
        files={"file": (filename, content, ctype)},
    )


async def test_download_streams_with_etag_conditional_and_range_requests(applicant: Applicant) -> None:
    api = applicant.api
    assert (await applicant.register()).status_code == 201
    content = b"%PDF-1.4\n" + os.urandom(1_300_000)  # several chunks of the stream
    uploaded = await upload_named(applicant, content, "statements.pdf")
    assert uploaded.status_code == 201, uploaded.text
    url = f"{API}/documents/{uploaded.json()['id']}/content"
    size, etag = len(content), f'"{hashlib.sha256(content).hexdigest()}"'
    headers = applicant.headers

    whole = await api.get(url, headers=headers)
    assert whole.status_code == 200
    assert whole.content == content
    assert whole.headers["content-type"] == "application/pdf"
    assert whole.headers["content-length"] == str(size)
    assert whole.headers["etag"] == etag
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-disposition"] == 'attachment; filename="statements.pdf"'

    for tag in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        fresh = await api.get(url, headers={**headers, "If-None-Match": tag})
        assert fresh.status_code == 304, tag
        assert fresh.content == b""
        assert fresh.headers["etag"] == etag
    stale = await api.get(url, headers={**headers, "If-None-Match": '"another"'})
    assert (stale.status_code, stale.content) == (200, content)

    for asked, (first, last) in {
        "bytes=0-99": (0, 99),
        "bytes=500000-600000": (500_000, 600_000),  # across a chunk boundary
        f"bytes={size - 10}-": (size - 10, size - 1),
        "bytes=-25": (size - 25, size - 1),
        f"bytes=100-{size + 500}": (100, size - 1),
        "bytes=-999999999": (0, size - 1),
    }.items():
        part = await api.get(url, headers={**headers, "Range": asked})
        assert part.status_code == 206, asked
        assert part.content == content[first : last + 1], asked
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.headers["content-length"] == str(last - first + 1)
        assert part.headers["etag"] == etag

    for asked in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        refused = await api.get(url, headers={**headers, "Range": asked})
        assert refused.status_code == 416, asked
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["content-range"] == f"bytes */{size}"
        assert refused.json()["status"] == 416

    # Ranges the answer ignores: several at once, another unit, bad syntax - the whole file, 200.
    for asked in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=abc"):
        ignored = await api.get(url, headers={**headers, "Range": asked})
        assert (ignored.status_code, ignored.content) == (200, content), asked
    # If-Range: the range only while the content is the one the client has.
    same = await api.get(url, headers={**headers, "Range": "bytes=0-9", "If-Range": etag})
    assert (same.status_code, same.content) == (206, content[:10])
    changed = await api.get(url, headers={**headers, "Range": "bytes=0-9", "If-Range": '"older"'})
    assert (changed.status_code, changed.content) == (200, content)
    head = await api.head(url, headers=headers)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["etag"] == etag


async def test_a_non_ascii_filename_is_given_in_filename_star(applicant: Applicant) -> None:
    assert (await applicant.register()).status_code == 201
    name = "营业执照 2025 (副本).pdf"  # (quotes are covered below: clients percent-encode them in forms)
    uploaded = await upload_named(applicant, b"%PDF-1.4 licence", name)
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["filename"] == name
    resp = await applicant.api.get(
        f"{API}/documents/{uploaded.json()['id']}/content", headers=applicant.headers
    )
    disposition = resp.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=\"____ 2025 (__).pdf\"; filename*=UTF-8''")
    assert unquote(disposition.split("filename*=UTF-8''", 1)[1]) == name
    assert disposition.isascii()


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("BYTES = 2 - 4", 10, (2, 4)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=8-", 10, (8, 9)),
        ("bytes=3-2", 10, None),
        ("bytes=-", 10, None),
        ("bytes=1-2,4-5", 10, None),
        ("pages=1-2", 10, None),
        ("bytes=" + "9" * 20 + "-", 10, None),
    ],
)
def test_byte_ranges(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert byte_range(header, size) == expected


def test_content_disposition_fallbacks() -> None:
    assert content_disposition("a.pdf") == 'attachment; filename="a.pdf"'
    assert content_disposition('a"\\\r\n.pdf') == (
        "attachment; filename=\"a____.pdf\"; filename*=UTF-8''a%22%5C%0D%0A.pdf"
    )


# --- uploads -----------------------------------------------------------------------------------------------


async def test_an_upload_with_an_idempotency_key_is_stored_once(applicant: Applicant) -> None:
    assert (await applicant.register()).status_code == 201
    key = new_id()
    first = await upload_named(applicant, b"%PDF-1.4 once", "once.pdf", key=key)
    assert first.status_code == 201, first.text
    retry = await upload_named(applicant, b"%PDF-1.4 once", "once.pdf", key=key)
    assert retry.status_code == 201
    assert retry.json() == first.json()
    assert retry.headers.get("idempotent-replayed") == "true"
    another_file = await upload_named(applicant, b"%PDF-1.4 twice", "once.pdf", key=key)
    assert another_file.status_code == 422
    assert another_file.json()["errors"][0]["field"] == "Idempotency-Key"
    assert await listed(applicant.api, applicant.headers) == [first.json()["id"]]
    without_key = [await upload_named(applicant, b"%PDF-1.4 once", "once.pdf") for _ in range(2)]
    assert len({r.json()["id"] for r in without_key} | {first.json()["id"]}) == 3


# --- bad input ---------------------------------------------------------------------------------------------


async def test_founded_on_in_the_future_is_refused(api: httpx.AsyncClient, settings: Settings) -> None:
    tomorrow_everywhere = (datetime.now(UTC) + timedelta(days=2)).date()
    for founded_on, status in [(str(tomorrow_everywhere), 422), ("2999-01-01", 422), ("2012-03-01", 201)]:
        uscc = random_uscc("500103")
        resp = await api.post(
            f"{API}/enterprises",
            headers=bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc)),
            json={
                "uscc": uscc,
                "name": "Tomorrow Co",
                "region_code": "500103",
                "industry": "machinery",
                "founded_on": founded_on,
            },
        )
        assert resp.status_code == status, resp.text
        if status == 422:
            assert resp.headers["content-type"] == "application/problem+json"
            assert [e["field"] for e in resp.json()["errors"]] == ["founded_on"]


def shifted(metrics: dict[str, Any], years: int) -> dict[str, Any]:
    return {**metrics, "years": [{**y, "year": y["year"] + years} for y in metrics["years"]]}


async def test_filed_figures_are_of_ended_years_the_enterprise_existed_in(applicant: Applicant) -> None:
    assert (await applicant.register()).status_code == 201  # founded 2012-03-01
    this_year = latest_today().year
    unended = shifted(strong_metrics(), this_year - 2025 + 1)  # up to this year, not over yet
    future_award = {**strong_metrics(), "awards": [{"level": "national", "rank": 1, "year": this_year + 1}]}
    before_founding = shifted(strong_metrics(), 2008 - 2023)  # 2008-2010
    for metrics, field in [
        (unended, "metrics"),
        (future_award, "metrics"),
        (before_founding, "metrics.years"),
    ]:
        resp = await applicant.submit(metrics=metrics)
        assert resp.status_code == 422, resp.text
        assert resp.headers["content-type"] == "application/problem+json"
        assert [e["field"] for e in resp.json()["errors"]] == [field]


# --- supplements -------------------------------------------------------------------------------------------


async def returned(applicant: Applicant, settings: Settings) -> tuple[str, str]:
    app_id, _ = await filed(applicant)
    url = f"{API}/applications/{app_id}"
    back = await applicant.api.post(
        f"{url}/decisions",
        headers=reviewer_headers(settings, *MUNICIPAL),
        json={"decision": "return", "reason": "the 2025 revenue does not match the audit"},
    )
    assert back.json()["status"] == "returned", back.text
    return app_id, url


def corrected() -> dict[str, Any]:
    metrics = strong_metrics(niche_years=9)
    metrics["years"][2]["revenue"] = "115000000"  # the same amount may be written either way
    metrics["years"][1]["revenue"] = "92000000.00"  # unchanged
    return metrics


async def test_a_supplement_with_evidence_and_corrected_figures_is_screened_again(
    applicant: Applicant, settings: Settings
) -> None:
    api = applicant.api
    app_id, url = await returned(applicant, settings)
    before = (await api.get(url, headers=applicant.headers)).json()
    (audit,) = await applicant.evidence("audited_financial_statements_3y")
    answer = await api.post(
        f"{url}/supplements",
        headers={**applicant.headers, "Idempotency-Key": new_id()},
        json={"note": "audited figures", "evidence": [audit], "metrics": corrected()},
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["stage"]) == ("in_review", "municipal")

    after = (await api.get(url, headers=applicant.headers)).json()
    supplemented, rescreened = after["history"][-2:]
    assert (supplemented["action"], supplemented["reason"]) == ("supplemented", "audited figures")
    assert supplemented["changes"] == [
        {"field": "years.2025.revenue", "old": "110000000.00", "new": "115000000.00"},
        {"field": "niche_years", "old": 8, "new": 9},
        {
            "field": "evidence",
            "old": None,
            "new": {
                "id": audit,
                "kind": "audited_financial_statements_3y",
                "filename": "audited_financial_statements_3y.pdf",
            },
        },
    ]
    assert (rescreened["action"], rescreened["actor"], rescreened["stage"]) == (
        "rescreened",
        "system",
        "municipal",
    )
    assert rescreened["reason"].startswith("passed ")
    assert after["screening"]["passed"] is True
    assert after["screening"] != before["screening"]  # the rules' values
    assert audit in [d["id"] for d in after["documents"]]
    # The reviewer reads the new evidence now that the application cites it.
    reviewer = reviewer_headers(settings, *MUNICIPAL)
    assert (await api.get(f"{API}/documents/{audit}", headers=reviewer)).status_code == 200
    assert audit in await listed(api, reviewer, application_id=app_id)


async def test_a_supplement_whose_figures_fail_goes_back_to_the_reviewer_who_decides(
    applicant: Applicant, settings: Settings
) -> None:
    api = applicant.api
    _, url = await returned(applicant, settings)
    answer = await api.post(
        f"{url}/supplements", headers=applicant.headers, json={"note": "corrected", "metrics": weak_metrics()}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "in_review"
    body = (await api.get(url, headers=reviewer_headers(settings, *MUNICIPAL))).json()
    assert body["status"] == "in_review"
    assert body["screening"]["passed"] is False
    assert "eligibility.no_tax_evasion" in {r["rule"] for r in body["screening"]["rules"] if not r["passed"]}
    rescreened = body["history"][-1]
    assert rescreened["action"] == "rescreened"
    assert rescreened["reason"].startswith("failed ")
    assert {"field": "screening.passed", "old": True, "new": False} in rescreened["changes"]
    changed = {c["field"] for c in body["history"][-2]["changes"]}
    assert {"compliance.no_tax_evasion", "years.2023.rd_expense"} <= changed
    # The reviewer who asked decides on the corrected file.
    rejected = await api.post(
        f"{url}/decisions",
        headers=reviewer_headers(settings, *MUNICIPAL),
        json={"decision": "reject", "reason": "the corrected figures fail the criteria"},
    )
    assert rejected.json()["status"] == "rejected"


async def test_a_supplement_with_bad_figures_is_a_422_and_changes_nothing(
    applicant: Applicant, settings: Settings
) -> None:
    api = applicant.api
    _, url = await returned(applicant, settings)
    this_year = latest_today().year
    not_consecutive = strong_metrics()
    not_consecutive["years"][0]["year"] = 2020
    for metrics, field in [
        (not_consecutive, "metrics.years"),
        (shifted(strong_metrics(), this_year - 2025 + 1), "metrics"),
        (shifted(strong_metrics(), 2008 - 2023), "metrics.years"),
    ]:
        refused = await api.post(
            f"{url}/supplements", headers=applicant.headers, json={"note": "x", "metrics": metrics}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == field
    assert (await api.get(url, headers=applicant.headers)).json()["status"] == "returned"


async def test_a_retried_supplement_write_changes_nothing_twice(session: AsyncSession) -> None:
    """The supplement's transition activity, attempted twice (a retry after a commit whose answer was lost):
    the links, figures, screening and audit rows are written once."""
    application = await seed_application(session, metrics=strong_metrics())
    application.status, application.stage = "returned", "municipal"
    document = uuid.uuid4()
    session.add(
        Document(
            id=document,
            uscc=application.uscc,
            kind="audited_financial_statements_3y",
            filename="audit.pdf",
            content_type="application/pdf",
            size=1,
            sha256="0" * 64,
            uploaded_by="x",
        )
    )
    await session.flush()
    data = TransitionInput(
        application_id=application.id,
        event_key=f"supplement-{uuid.uuid4()}",
        actor=Actor(sub="user", role="enterprise", uscc=application.uscc),
        action="supplemented",
        from_status="returned",
        to_status="in_review",
        stage="municipal",
        reason="audited",
        at=datetime.now(UTC),
        supplement=SupplementContent(evidence=[document, document], metrics=corrected()),
    )
    for _ in range(2):
        await records.apply_transition(session, data=data, programs=load_programs(PROGRAMS))
    rows = (
        await session.execute(
            select(Transition.action)
            .where(Transition.application_id == application.id)
            .order_by(Transition.id)
        )
    ).scalars()
    assert list(rows) == ["supplemented", "rescreened"]
    links = (
        await session.execute(
            select(ApplicationDocument).where(ApplicationDocument.application_id == application.id)
        )
    ).scalars()
    assert [(link.document_id, link.source) for link in links] == [(document, "supplement")]
    assert application.metrics["niche_years"] == 9
    assert application.screening is not None


def test_changed_figures_compare_amounts_by_value_and_name_years() -> None:
    before = DeclaredMetrics.model_validate(strong_metrics())
    after = DeclaredMetrics.model_validate(shifted(strong_metrics(), 1))  # 2024-2026 now
    changes = {field: (old, new) for field, old, new in changed_figures(before, after)}
    assert changes["years.2023.revenue"] == ("80000000.00", None)
    assert changes["years.2026.revenue"] == (None, "110000000.00")
    assert "years.2024.revenue" in changes  # 2024 now holds what 2023 held
    assert changed_figures(before, DeclaredMetrics.model_validate(strong_metrics())) == []
