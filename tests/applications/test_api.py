"""The applications API over HTTP: real PostgreSQL, the Temporal dev server and a running worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.config import Settings
from tests.applications.conftest import Applicant, new_id, poll, reviewer_headers
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc


async def test_register_enterprise_and_refusals(applicant: Applicant, settings: Settings) -> None:
    resp = await applicant.register()
    assert resp.status_code == 201, resp.text
    assert resp.json()["uscc"] == applicant.uscc
    again = await applicant.register()
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    own = await applicant.api.get(f"/api/v1/enterprises/{applicant.uscc}", headers=applicant.headers)
    assert own.status_code == 200
    other = Applicant(api=applicant.api, settings=settings, uscc=random_uscc())
    hidden = await applicant.api.get(f"/api/v1/enterprises/{applicant.uscc}", headers=other.headers)
    assert hidden.status_code == 404
    foreign = await applicant.api.post(
        "/api/v1/enterprises",
        headers=other.headers,
        json={
            "uscc": random_uscc(),
            "name": "x",
            "region_code": "500103",
            "industry": "x",
            "founded_on": "2012-01-01",
        },
    )
    assert foreign.status_code == 403


@pytest.mark.parametrize(
    ("uscc", "why"),
    [
        ("91350100M000100Y44", "check character"),
        ("91350100m000100Y43", "lower case"),
        ("91350100M000100Y4", "length"),
        ("91350100M0001 0Y43", "space"),
        ("91350100M000I00Y43", "I"),
    ],
)
async def test_bad_uscc_is_a_422_with_field_errors(
    api: httpx.AsyncClient, settings: Settings, uscc: str, why: str
) -> None:
    admin = bearer(make_token(settings, "admin"))
    resp = await api.post(
        "/api/v1/enterprises",
        headers=admin,
        json={
            "uscc": uscc,
            "name": "x",
            "region_code": "500103",
            "industry": "x",
            "founded_on": "2012-01-01",
        },
    )
    assert resp.status_code == 422, why
    body = resp.json()
    assert body["errors"][0]["field"] == "uscc"
    assert resp.headers["content-type"] == "application/problem+json"


async def test_programs_are_listed(api: httpx.AsyncClient) -> None:
    resp = await api.get("/api/v1/programs")
    assert resp.status_code == 200
    programs = {p["key"]: p for p in resp.json()}
    assert {"demo", "national", "chongqing-2020"} <= set(programs)
    tiers = {t["key"]: t for t in programs["chongqing-2020"]["tiers"]}
    assert tiers["little_giant"]["credit_line_limit"] == "3000000.00"
    assert programs["demo"]["notice_period"] == "PT20S"


async def test_upload_limits(applicant: Applicant) -> None:
    await applicant.register()
    wrong_type = await applicant.upload("business_licence", b"MZ\x90\x00", "application/x-msdownload")
    assert wrong_type.status_code == 422
    empty = await applicant.upload("business_licence", b"")
    assert empty.status_code == 422
    ok = await applicant.upload("business_licence")
    assert ok.status_code == 201
    assert len(ok.json()["sha256"]) == 64


async def test_submission_refusals(applicant: Applicant, settings: Settings) -> None:
    unregistered = await applicant.submit(evidence=[])
    assert unregistered.status_code == 409
    await applicant.register()
    incomplete = await applicant.submit(evidence=await applicant.evidence("business_licence"))
    assert incomplete.status_code == 422
    assert any("financial_statements_3y" in e["message"] for e in incomplete.json()["errors"])
    giant = await applicant.submit(
        tier="little_giant",
        evidence=await applicant.evidence(
            "business_licence", "audited_financial_statements_3y", "market_share_evidence"
        ),
    )
    assert giant.status_code == 409
    assert "specialized_new" in giant.json()["detail"]
    first = await applicant.submit()
    assert first.status_code == 201, first.text
    duplicate = await applicant.submit()
    assert duplicate.status_code == 409
    bad_metrics = await applicant.api.post(
        "/api/v1/applications",
        headers=applicant.headers,
        json={"uscc": applicant.uscc, "program": "demo", "tier": "specialized_new", "metrics": {"years": 3}},
    )
    assert bad_metrics.status_code == 422
    assert bad_metrics.json()["errors"]


async def test_idempotency_key_replays_and_refuses_another_body(applicant: Applicant) -> None:
    await applicant.register()
    evidence = await applicant.evidence("business_licence", "financial_statements_3y")
    key = new_id()
    first = await applicant.submit(evidence=evidence, key=key)
    assert first.status_code == 201, first.text
    retry = await applicant.submit(evidence=evidence, key=key)
    assert retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers.get("idempotent-replayed") == "true"
    other = await applicant.submit(
        evidence=evidence, key=key, metrics={**(await _metrics()), "niche_years": 9}
    )
    assert other.status_code == 422


async def _metrics() -> dict[str, object]:
    from tests.support.factories import strong_metrics

    return strong_metrics()


async def test_review_over_http_to_recognition(
    applicant: Applicant, settings: Settings, fast_programs: None
) -> None:
    api = applicant.api
    await applicant.register()
    evidence = await applicant.evidence("business_licence", "financial_statements_3y")
    created = await applicant.submit(evidence=evidence[::-1])  # cited in another order than uploaded
    assert created.status_code == 201, created.text
    app_id = created.json()["id"]
    url = f"/api/v1/applications/{app_id}"
    body = await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")
    # The POST answers from what it wrote, without reading it back: the same documents, in the same order,
    # and the same first history row as a read of the application gives.
    filed = created.json()
    assert (filed["task"], filed["objections"], filed["status"]) == (None, [], "screening")
    assert [d["id"] for d in filed["documents"]] == evidence
    assert filed["documents"] == body["documents"]
    assert filed["history"] == body["history"][:1]
    assert filed["history"][0]["action"] == "submitted"
    assert body["stage"] == "municipal"
    assert body["screening"]["passed"] is True
    assert all({"rule", "value", "threshold", "passed"} <= set(r) for r in body["screening"]["rules"])

    municipal = reviewer_headers(settings, "municipal", "500100")
    provincial = reviewer_headers(settings, "provincial", "500000")
    elsewhere = reviewer_headers(settings, "municipal", "110100")
    queue = (await api.get("/api/v1/review-tasks", headers=municipal)).json()["items"]
    assert app_id in [t["application_id"] for t in queue]
    assert (await api.get(url, headers=elsewhere)).status_code == 404
    wrong_level = await api.post(
        f"{url}/decisions", headers=provincial, json={"decision": "approve", "reason": "x"}
    )
    assert wrong_level.status_code == 403
    wrong_region = await api.post(
        f"{url}/decisions", headers=elsewhere, json={"decision": "approve", "reason": "x"}
    )
    assert wrong_region.status_code == 403
    bad = await api.post(f"{url}/decisions", headers=municipal, json={"decision": "maybe", "reason": "x"})
    assert bad.status_code == 422

    approved = await api.post(
        f"{url}/decisions",
        headers=municipal,
        json={"decision": "approve", "reason": "complete", "internal_note": "strong file"},
    )
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["stage"]) == ("in_review", "provincial")
    # The queue is right the moment the decision returns.
    queue = (await api.get("/api/v1/review-tasks", headers=municipal)).json()["items"]
    assert app_id not in [t["application_id"] for t in queue]
    queue = (await api.get("/api/v1/review-tasks", headers=provincial)).json()["items"]
    assert app_id in [t["application_id"] for t in queue]
    again = await api.post(f"{url}/decisions", headers=municipal, json={"decision": "approve", "reason": "x"})
    assert again.status_code == 409
    stale = await api.post(
        f"{url}/decisions",
        headers=provincial,
        json={"decision": "approve", "reason": "x", "stage": "municipal"},
    )
    assert stale.status_code == 409

    notice = await api.post(
        f"{url}/decisions", headers=provincial, json={"decision": "approve", "reason": "good"}
    )
    assert notice.json()["status"] == "public_notice"
    anyone = bearer(make_token(settings, "finance", "finance-9"))
    objection = await api.post(f"{url}/objections", headers=anyone, json={"reason": "figures look inflated"})
    assert objection.status_code == 201, objection.text
    objection_id = objection.json()["objection_id"]
    dismissed = await api.post(
        f"/api/v1/objections/{objection_id}/resolution",
        headers=provincial,
        json={"upheld": False, "reason": "verified with the tax bureau"},
    )
    assert dismissed.status_code == 200, dismissed.text
    body = await poll(api, url, applicant.headers, lambda b: b["status"] == "recognized")
    actions = [h["action"] for h in body["history"]]
    assert actions == [
        "submitted",
        "screened",
        "approved",
        "approved",
        "objection_filed",
        "objection_dismissed",
        "recognized",
    ]
    assert all(
        h["internal_note"] is None for h in body["history"]
    )  # the applicant never sees reviewers' notes
    admin = bearer(make_token(settings, "admin"))
    full = (await api.get(url, headers=admin)).json()
    assert "strong file" in [h["internal_note"] for h in full["history"]]
    recognitions = (await api.get("/api/v1/recognitions", headers=applicant.headers)).json()["items"]
    assert len(recognitions) == 1
    assert recognitions[0]["certificate_no"].startswith("DEMO-")
    profile = (await api.get(f"/api/v1/enterprises/{applicant.uscc}", headers=applicant.headers)).json()
    assert [t["tier"] for t in profile["current_tiers"]] == ["specialized_new"]
    withdraw_late = await api.post(f"{url}/withdraw", headers=applicant.headers, json={})
    assert withdraw_late.status_code == 409
    revoked = await api.post(
        f"/api/v1/recognitions/{recognitions[0]['id']}/revocation",
        headers=admin,
        json={"reason": "fraud found in audit"},
    )
    assert revoked.status_code == 200, revoked.text
    again_revoked = await api.post(
        f"/api/v1/recognitions/{recognitions[0]['id']}/revocation", headers=admin, json={"reason": "again"}
    )
    assert again_revoked.status_code == 409

    # Each step told the enterprise, in its feed, in the order it happened (the outbox, services/events.py).
    feed = await poll(
        api,
        "/api/v1/notifications?limit=50",
        applicant.headers,
        lambda b: "recognition.revoked" in [item["type"] for item in b["items"]],
    )
    told = [(item["type"], item["data"].get("decision")) for item in reversed(feed["items"])]
    assert told == [
        ("application.submitted", None),
        ("application.screened", None),
        ("application.decided", "approve"),
        ("application.decided", "approve"),
        ("application.on_notice", None),
        ("objection.filed", None),
        ("application.recognized", None),
        ("recognition.revoked", None),
    ]
    assert feed["unread_count"] == len(told)
    recognized = next(item for item in feed["items"] if item["type"] == "application.recognized")
    assert recognized["data"]["certificate_no"] == recognitions[0]["certificate_no"]
    # The reviewers of each stage heard of the task that opened in their queue, not of the enterprise's news.
    municipal_feed = (await api.get("/api/v1/notifications?limit=200", headers=municipal)).json()["items"]
    mine = [item["type"] for item in municipal_feed if item["data"].get("application_id") == app_id]
    assert mine == ["application.screened"]


async def _returned(applicant: Applicant, settings: Settings, api: httpx.AsyncClient) -> tuple[str, str]:
    """The applicant's new application, returned for information by the municipal reviewer: its id and URL."""
    await applicant.register()
    app_id = (await applicant.submit()).json()["id"]
    url = f"/api/v1/applications/{app_id}"
    await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")
    municipal = reviewer_headers(settings, "municipal", "500103")
    returned = await api.post(
        f"{url}/decisions", headers=municipal, json={"decision": "return", "reason": "more"}
    )
    assert returned.json()["status"] == "returned"
    return app_id, url


async def test_withdraw_and_return_over_http(
    applicant: Applicant, settings: Settings, api: httpx.AsyncClient
) -> None:
    app_id, url = await _returned(applicant, settings, api)
    supplemented = await api.post(f"{url}/supplements", headers=applicant.headers, json={"note": "attached"})
    assert supplemented.status_code == 200
    assert supplemented.json()["stage"] == "municipal"
    other = Applicant(api=api, settings=settings, uscc=random_uscc())
    assert (await api.post(f"{url}/withdraw", headers=other.headers, json={})).status_code == 404
    withdrawn = await api.post(f"{url}/withdraw", headers=applicant.headers, json={"reason": "later"})
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "withdrawn"
    listed = (await api.get("/api/v1/applications?status=withdrawn", headers=applicant.headers)).json()
    assert [a["id"] for a in listed["items"]] == [app_id]


async def test_a_supplement_citing_an_unknown_document_is_a_422_and_changes_nothing(
    applicant: Applicant, settings: Settings, api: httpx.AsyncClient
) -> None:
    """Evidence a supplement cites must be the applicant's own documents: an id that does not exist and
    another enterprise's document are refused alike (nobody learns the other one exists), before the
    workflow hears of it."""
    _, url = await _returned(applicant, settings, api)
    other = Applicant(api=api, settings=settings, uscc=random_uscc("500103"))
    assert (await other.register()).status_code == 201
    (theirs,) = await other.evidence("business_licence")
    (mine,) = await applicant.evidence("business_licence")
    before = (await api.get(url, headers=applicant.headers)).json()
    for cited in (new_id(), theirs):
        refused = await api.post(
            f"{url}/supplements",
            headers={**applicant.headers, "Idempotency-Key": new_id()},
            json={"note": "attached", "evidence": [mine, cited]},
        )
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"] == [{"field": "evidence", "message": f"unknown document {cited}"}]
    after = (await api.get(url, headers=applicant.headers)).json()
    assert after["status"] == "returned"
    assert [h["action"] for h in after["history"]] == [h["action"] for h in before["history"]]
    accepted = await api.post(
        f"{url}/supplements", headers=applicant.headers, json={"note": "attached", "evidence": [mine]}
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["stage"] == "municipal"


async def test_unauthenticated_and_bad_tokens(api: httpx.AsyncClient, settings: Settings) -> None:
    assert (await api.get("/api/v1/applications")).status_code == 401
    finance = bearer(make_token(settings, "finance"))
    assert (await api.get("/api/v1/applications", headers=finance)).status_code == 403
    assert (
        await api.get("/api/v1/applications?cursor=@@@", headers=bearer(make_token(settings, "admin")))
    ).status_code == 422


async def test_the_commit_happens_before_the_response(
    applicant: Applicant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that fails reaches the client as a problem; it never got a 201 for a row that is not there."""
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.ext.asyncio import AsyncSession

    async def failing_commit(self: AsyncSession) -> None:
        raise OperationalError("COMMIT", {}, ConnectionResetError("connection lost during commit"))

    monkeypatch.setattr(AsyncSession, "commit", failing_commit)
    resp = await applicant.register()
    monkeypatch.undo()
    assert resp.status_code == 503, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    again = await applicant.register()
    assert again.status_code == 201  # nothing was half-written by the failed attempt


@pytest.mark.parametrize(
    ("valid_on", "status"),
    [
        ("2026-11-22T08:00:00+08:00", 200),
        ("2026-11-22T00:00:00Z", 200),
        ("-3990260844", 422),
        ("1700000000", 422),
        ("2026-11-22T08:00:00", 422),
        ("2026-11-22", 422),
    ],
)
async def test_times_in_queries_are_rfc3339_with_an_offset(
    api: httpx.AsyncClient, settings: Settings, valid_on: str, status: int
) -> None:
    admin = bearer(make_token(settings, "admin"))
    resp = await api.get("/api/v1/recognitions", params={"valid_on": valid_on}, headers=admin)
    assert resp.status_code == status, resp.text


async def test_a_return_may_set_when_the_supplement_is_due_within_the_programs_deadline(
    applicant: Applicant, settings: Settings, api: httpx.AsyncClient
) -> None:
    """`supplement_due_at` goes with `return` only, must lie ahead and not beyond the program's
    `supplement_deadline` (the demo's: 60 s); a refused one changes nothing, an accepted one is the due date
    the application shows."""
    await applicant.register()
    app_id = (await applicant.submit()).json()["id"]
    url = f"/api/v1/applications/{app_id}"
    await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")
    municipal = reviewer_headers(settings, "municipal", "500103")
    now = datetime.now(UTC)
    for decision, due, status in (
        ("approve", now + timedelta(seconds=30), 422),
        ("return", now - timedelta(seconds=5), 422),
        ("return", now + timedelta(days=2), 422),
        ("return", (now + timedelta(seconds=30)).replace(tzinfo=None), 422),
    ):
        refused = await api.post(
            f"{url}/decisions",
            headers=municipal,
            json={"decision": decision, "reason": "more", "supplement_due_at": due.isoformat()},
        )
        assert refused.status_code == status, refused.text
        body = (await api.get(url, headers=applicant.headers)).json()
        assert (body["status"], body["stage"]) == ("in_review", "municipal")
    due = (now + timedelta(seconds=45)).replace(microsecond=0)
    returned = await api.post(
        f"{url}/decisions",
        headers=municipal,
        json={"decision": "return", "reason": "stamp missing", "supplement_due_at": due.isoformat()},
    )
    assert returned.status_code == 200, returned.text
    body = (await api.get(url, headers=applicant.headers)).json()
    assert body["status"] == "returned"
    assert datetime.fromisoformat(body["supplement_due_at"]) == due
