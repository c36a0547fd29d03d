"""Drafts (issue 17, part 4): an application saved with `"submit": false` is edited, checked (a screening
preview with a reason per rule, nothing stored) and submitted by its enterprise; only a submitted application
starts a review workflow, and a draft is seen by its enterprise and admins alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.service import RPCError

from services.applications import repository as repo
from services.applications.models import Application, Recognition
from services.config import Settings
from services.programs import load_programs
from services.resources import Resources
from tests.applications.conftest import PROGRAMS, Applicant, new_id, poll, reviewer_headers
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, seed_application, strong_metrics

API = "/api/v1"


def weak_metrics() -> dict[str, Any]:
    """Strong figures with last year's R&D spending cut to nothing: the SRDI R&D gate fails."""
    metrics = strong_metrics()
    last = max(metrics["years"], key=lambda y: y["year"])
    last["rd_expense"] = "0.00"
    return metrics


async def draft(applicant: Applicant, *, evidence: list[str], **fields: Any) -> httpx.Response:
    return await applicant.api.post(
        f"{API}/applications",
        headers=applicant.headers,
        json={
            "uscc": applicant.uscc,
            "program": "demo",
            "tier": "specialized_new",
            "metrics": strong_metrics(),
            "evidence": evidence,
            "submit": False,
            **fields,
        },
    )


async def test_a_draft_is_saved_edited_checked_and_submitted(
    applicant: Applicant, resources: Resources, api: httpx.AsyncClient
) -> None:
    assert (await applicant.register()).status_code == 201
    (licence,) = await applicant.evidence("business_licence")
    saved = await draft(applicant, evidence=[licence])
    assert saved.status_code == 201, saved.text
    body = saved.json()
    app_id, url = body["id"], f"{API}/applications/{body['id']}"
    assert body["status"] == "draft"
    assert body["batch"] == "demo-2026"
    assert body["ruleset"] == "national-2026"
    assert body["history"] == []
    assert body["screening"] is None
    assert [d["id"] for d in body["documents"]] == [licence]
    with pytest.raises(RPCError):  # no review workflow for a draft
        await resources.temporal.get_workflow_handle(f"review-{app_id}").describe()

    # The check: screened as a submission would be, and what would refuse it - nothing stored.
    check = await api.post(f"{url}/check", headers=applicant.headers)
    assert check.status_code == 200, check.text
    preview = check.json()
    assert preview["screening"]["passed"] is True
    assert preview["screening"]["ruleset"] == "national-2026"
    assert preview["screening"]["rules"]
    assert preview["submittable"] is False
    assert {"field": "evidence", "message": "missing a financial_statements_3y document"} in preview[
        "problems"
    ]
    assert (await api.get(url, headers=applicant.headers)).json()["screening"] is None

    # Edit the figures: the preview fails with a reason per rule.
    edited = await api.patch(url, headers=applicant.headers, json={"metrics": weak_metrics()})
    assert edited.status_code == 200, edited.text
    failing = (await api.post(f"{url}/check", headers=applicant.headers)).json()
    assert failing["screening"]["passed"] is False
    assert any(not rule["passed"] and rule["description"] for rule in failing["screening"]["rules"])
    assert any(p["field"] == "metrics" for p in failing["problems"])

    # Complete it: the preview is clean.
    statements = await applicant.evidence("financial_statements_3y")
    completed = await api.patch(
        url,
        headers=applicant.headers,
        json={"metrics": strong_metrics(), "evidence": [licence, *statements]},
    )
    assert completed.status_code == 200, completed.text
    assert {d["id"] for d in completed.json()["documents"]} == {licence, *statements}
    ready = (await api.post(f"{url}/check", headers=applicant.headers)).json()
    assert ready["problems"] == []
    assert ready["submittable"] is True

    # Submit, once per Idempotency-Key: the review starts like a direct submission's.
    key = {"Idempotency-Key": new_id()}
    submitted = await api.post(f"{url}/submit", headers={**applicant.headers, **key})
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "screening"
    assert [h["action"] for h in submitted.json()["history"]] == ["submitted"]
    replayed = await api.post(f"{url}/submit", headers={**applicant.headers, **key})
    assert replayed.status_code == 200
    assert replayed.headers.get("Idempotent-Replayed") == "true"
    reviewed = await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")
    assert reviewed["stage"] == "municipal"
    assert reviewed["screening"]["passed"] is True

    # No longer a draft: edits, checks, another submission and deletion are 409s.
    for method, path, extra in (
        ("PATCH", url, {"json": {"tier": "innovative"}}),
        ("POST", f"{url}/check", {}),
        ("POST", f"{url}/submit", {"headers": {**applicant.headers, "Idempotency-Key": new_id()}}),
        ("DELETE", url, {}),
    ):
        refused = await api.request(method, path, **{"headers": applicant.headers, **extra})
        assert refused.status_code == 409, (method, path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    await resources.temporal.get_workflow_handle(f"review-{app_id}").terminate("test done")


async def test_drafts_are_their_enterprises_and_admins_alone(
    applicant: Applicant, settings: Settings, api: httpx.AsyncClient
) -> None:
    await applicant.register()
    evidence = await applicant.evidence("business_licence", "financial_statements_3y")
    app_id = (await draft(applicant, evidence=evidence)).json()["id"]
    url = f"{API}/applications/{app_id}"
    municipal = reviewer_headers(settings, "municipal", "500100")
    provincial = reviewer_headers(settings, "provincial", "500000")
    admin = bearer(make_token(settings, "admin"))
    other = Applicant(api=api, settings=settings, uscc=random_uscc("500103"))

    assert (await api.get(url, headers=applicant.headers)).status_code == 200
    assert (await api.get(url, headers=admin)).json()["status"] == "draft"
    for headers in (municipal, provincial, other.headers):
        for _ in range(2):  # the second read would come from the view cache, if it leaked
            assert (await api.get(url, headers=headers)).status_code == 404
        listed = await api.get(f"{API}/applications", headers=headers, params={"uscc": applicant.uscc})
        assert app_id not in listed.text
    mine = await api.get(f"{API}/applications", headers=applicant.headers, params={"status": "draft"})
    assert [a["id"] for a in mine.json()["items"]] == [app_id]
    # Its evidence stays the enterprise's: no reviewer reads a document only a draft cites.
    assert (await api.get(f"{API}/documents/{evidence[0]}", headers=municipal)).status_code == 404
    documents = await api.get(f"{API}/documents", headers=municipal, params={"uscc": applicant.uscc})
    assert evidence[0] not in documents.text
    queue = await api.get(f"{API}/review-tasks", headers=municipal, params={"q": applicant.uscc})
    assert app_id not in queue.text
    # Nobody acts on its review: it has none.
    decided = await api.post(
        f"{url}/decisions", headers=municipal, json={"decision": "approve", "reason": "x"}
    )
    assert decided.status_code == 404
    withdrawn = await api.post(f"{url}/withdraw", headers=applicant.headers, json={})
    assert withdrawn.status_code == 409
    assert "draft" in withdrawn.json()["detail"]
    # Only its enterprise edits, checks, submits or deletes it.
    for headers, status in ((other.headers, 404), (admin, 403), (municipal, 403)):
        assert (await api.post(f"{url}/check", headers=headers)).status_code == status
        assert (await api.patch(url, headers=headers, json={"tier": "innovative"})).status_code == status
        assert (await api.post(f"{url}/submit", headers=headers)).status_code == status
        assert (await api.delete(url, headers=headers)).status_code == status


async def test_a_draft_is_deleted_by_its_enterprise(applicant: Applicant, api: httpx.AsyncClient) -> None:
    await applicant.register()
    evidence = await applicant.evidence("business_licence")
    app_id = (await draft(applicant, evidence=evidence)).json()["id"]
    url = f"{API}/applications/{app_id}"
    deleted = await api.delete(url, headers=applicant.headers)
    assert deleted.status_code == 204, deleted.text
    assert (await api.get(url, headers=applicant.headers)).status_code == 404
    assert (await api.delete(url, headers=applicant.headers)).status_code == 404
    assert (await api.get(f"{API}/documents/{evidence[0]}", headers=applicant.headers)).status_code == 200


async def test_a_draft_is_checked_for_what_it_names(applicant: Applicant, api: httpx.AsyncClient) -> None:
    """A draft may be incomplete, but not wrong: its program, tier, batch, figures' years and documents."""
    await applicant.register()
    unknown = await draft(applicant, evidence=[new_id()])
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "evidence"
    no_batch = await draft(applicant, evidence=[], batch="demo-1999")
    assert no_batch.status_code == 422
    empty = await draft(applicant, evidence=[])
    assert empty.status_code == 201
    url = f"{API}/applications/{empty.json()['id']}"
    nothing = await api.patch(url, headers=applicant.headers, json={})
    assert nothing.status_code == 422
    wrong_tier = await api.patch(url, headers=applicant.headers, json={"tier": "no_such_tier"})
    assert wrong_tier.status_code == 422
    # Two drafts of one tier and batch may coexist; only one of them can be submitted.
    another = await draft(applicant, evidence=[])
    assert another.status_code == 201


@pytest.fixture
def later_batch(resources: Resources, tmp_path: Path) -> None:
    """The demo program with a second batch that opens in 2029 (not yet open)."""
    text = (
        (PROGRAMS / "demo.toml")
        .read_text()
        .replace(
            "[durations]",
            '[[batches]]\nkey = "demo-2029"\nopens_on = 2029-04-01\ncloses_on = 2029-05-31\n\n[durations]',
        )
    )
    (tmp_path / "demo.toml").write_text(text)
    resources._programs = load_programs(tmp_path)


@pytest.mark.usefixtures("later_batch")
async def test_a_submission_is_refused_while_its_batch_is_closed(
    applicant: Applicant, resources: Resources, api: httpx.AsyncClient
) -> None:
    await applicant.register()
    evidence = await applicant.evidence("business_licence", "financial_statements_3y")
    saved = await draft(applicant, evidence=evidence, batch="demo-2029")
    assert saved.status_code == 201, saved.text
    url = f"{API}/applications/{saved.json()['id']}"
    preview = (await api.post(f"{url}/check", headers=applicant.headers)).json()
    assert preview["submittable"] is False
    assert any("demo-2029" in p["message"] and "not open" in p["message"] for p in preview["problems"])
    refused = await api.post(f"{url}/submit", headers=applicant.headers)
    assert refused.status_code == 409
    assert "not open" in refused.json()["detail"]
    moved = await api.patch(url, headers=applicant.headers, json={"batch": "demo-2026"})
    assert moved.status_code == 200
    assert moved.json()["batch"] == "demo-2026"
    submitted = await api.post(f"{url}/submit", headers=applicant.headers)
    assert submitted.status_code == 200, submitted.text
    await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")
    await resources.temporal.get_workflow_handle(f"review-{saved.json()['id']}").terminate("test done")


async def test_a_submission_is_refused_during_a_fraud_bar(
    applicant: Applicant, resources: Resources, api: httpx.AsyncClient
) -> None:
    """The bar is checked when the draft is submitted (a barred enterprise may still prepare one)."""
    await applicant.register()
    now = datetime.now(UTC)
    async with resources.sessionmaker.begin() as session:
        old = await seed_application(session, uscc=applicant.uscc, workflow_started=True)
        session.add(
            Recognition(
                application_id=old.id,
                uscc=applicant.uscc,
                program="demo",
                tier="specialized_new",
                certificate_no=f"DEMO-FRAUD-{uuid.uuid4().hex[:12]}",
                valid_from=now - timedelta(days=1),
                valid_until=now + timedelta(days=1),
                status="revoked",
                revoked_reason="fraud",
                revoked_by="admin",
                revoked_at=now,
                revoked_for="fraud",
            )
        )
    evidence = await applicant.evidence("business_licence", "financial_statements_3y")
    saved = await draft(applicant, evidence=evidence)
    assert saved.status_code == 201, saved.text
    url = f"{API}/applications/{saved.json()['id']}"
    preview = (await api.post(f"{url}/check", headers=applicant.headers)).json()
    assert any("revoked for fraud" in p["message"] for p in preview["problems"])
    refused = await api.post(f"{url}/submit", headers=applicant.headers)
    assert refused.status_code == 409
    assert "until" in refused.json()["detail"]
    assert (await api.get(url, headers=applicant.headers)).json()["status"] == "draft"


async def test_the_reconciler_never_starts_a_draft(resources: Resources) -> None:
    """A draft has no workflow to start: the reconciler's query never finds one, however old."""
    async with resources.sessionmaker.begin() as session:
        application = await seed_application(
            session, workflow_started=False, created_at=datetime.now(UTC) - timedelta(days=30)
        )
        row = await session.get(Application, application.id)
        assert row is not None
        row.status = "draft"
    async with resources.sessionmaker() as session:
        found = await repo.applications_without_workflow(session, older_than=datetime.now(UTC), limit=100_000)
        assert application.id not in {a.id for a in found}
        counts = await repo.count_by_status(session)
        assert "draft" not in counts
    async with resources.sessionmaker.begin() as session:
        assert await repo.delete_draft(session, application.id)
