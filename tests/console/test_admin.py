"""The administrator's pages: the programs (tiers, amounts, durations, which batches are open now) and the
recognitions (listed and paged as GET /recognitions lists them, counted by tier and by province in a chart
with a table of the same counts, each active one with a revocation form that goes through the review
workflow exactly as POST /recognitions/{id}/revocation does).

Who sees what is the API's rule: the programs are anyone's, the recognitions their enterprise's, finance's and
admins' (a reviewer gets the 403 page, not the data), and only an admin is offered - and allowed - to
revoke."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from services.applications import service
from services.applications.models import Recognition
from services.auth import CurrentUser, Role
from services.config import Settings
from services.programs import load_programs
from services.resources import Resources
from tests.applications.conftest import PROGRAMS, Applicant, poll, reviewer_headers
from tests.conftest import bearer, make_token
from tests.console.conftest import StaffFactory
from tests.support.factories import random_uscc, seed_application

EN = {"Accept-Language": "en"}
API = "/api/v1"
EVERYTHING = {"uscc": None, "tier": None, "certificate_no": None, "status": None, "valid_on": None}


def row_of(page: str, marker: str) -> str:
    """The table row (``<tr>...</tr>``) of a page that shows `marker`."""
    for row in re.findall(r"<tr[ >].*?</tr>", page, re.S):
        if marker in row:
            return str(row)
    raise AssertionError(f"no row shows {marker!r}")


# --- programs ----------------------------------------------------------------------------------------------


async def test_the_programs_page_shows_tiers_amounts_durations_and_open_batches(staff: StaffFactory) -> None:
    async with staff("admin", "adm-programs") as admin:
        page = await admin.get("/console/programs", headers=EN)
    assert page.status_code == 200, page.text
    text = page.text
    assert "Demo program (seconds instead of days)" in text
    assert "Chongqing support for specialized, refined, distinctive and innovative SMEs (2020)" in text
    # Tiers with their review levels and credit-line amounts (the money format), listing rewards.
    chongqing_giant = row_of(text, "Chongqing invisible champion")
    assert "¥4,000,000.00" in chongqing_giant
    assert "municipal → provincial" in chongqing_giant
    assert "¥2,000,000.00" in row_of(text, "Demo SRDI SME")
    assert "¥300,000.00" in row_of(text, "specialized_new_board")
    # Durations as the program files give them.
    assert "<code>P5D</code>" in text
    assert "<code>PT4H</code>" in text
    # Batches: which are open today (demo-2026 runs to the end of 2027; Chongqing's 2025 window closed).
    demo_batch = row_of(text, "<td>demo-2026</td>")
    assert "2026-04-01" in demo_batch
    assert "2027-12-31" in demo_batch
    assert "Open now" in demo_batch
    assert "Closed" in row_of(text, "<td>2025-04-25</td>")
    assert 'href="/console/programs" aria-current="page"' in text  # in the admin's navigation


async def test_the_programs_are_anyones_to_read_but_only_admins_have_the_link(staff: StaffFactory) -> None:
    """GET /programs needs no token at all, so the page refuses no staff member; the navigation offers it to
    admins only."""
    async with staff("reviewer", "rev-programs", level="provincial", region="500000") as reviewer:
        page = await reviewer.get("/console/programs")
    assert page.status_code == 200
    assert "Demo program (seconds instead of days)" in page.text
    assert 'href="/console/programs"' not in page.text
    assert 'href="/console/recognitions"' not in page.text
    assert "培育项目" in page.text  # Chinese unless asked otherwise


# --- recognitions: list, counts, paging, who sees them ------------------------------------------------------


async def seed_recognitions(
    resources: Resources, region: str, tiers: list[str], *, status: str = "active"
) -> tuple[str, list[Recognition]]:
    """An enterprise of `region` with a recognition of each of `tiers`, committed."""
    uscc = random_uscc(region)
    now = datetime.now(UTC)
    made = []
    async with resources.sessionmaker() as db:
        for tier in tiers:
            application = await seed_application(db, tier=tier, region=region, uscc=uscc)
            application.status = "recognized"
            recognition = Recognition(
                id=uuid.uuid4(),
                application_id=application.id,
                uscc=uscc,
                program="demo",
                tier=tier,
                certificate_no=f"TEST-{uuid.uuid4().hex[:16].upper()}",
                valid_from=now - timedelta(days=1),
                valid_until=now + timedelta(days=3 * 365),
                status=status,
                revoked_reason="seeded as revoked" if status == "revoked" else None,
                revoked_by="admin-seed" if status == "revoked" else None,
                revoked_at=now if status == "revoked" else None,
            )
            db.add(recognition)
            made.append(recognition)
        await db.commit()
    return uscc, made


async def test_the_recognition_counts_group_by_tier_and_province(resources: Resources) -> None:
    admin = CurrentUser(sub="adm-counts", role=Role.admin)
    only_revoked = {**EVERYTHING, "status": "revoked"}
    async with resources.sessionmaker() as db:
        before = await service.recognition_counts(db, user=admin, filters=EVERYTHING)
        revoked_before = await service.recognition_counts(db, user=admin, filters=only_revoked)
    await seed_recognitions(resources, "110105", ["specialized_new", "little_giant"])  # Beijing
    await seed_recognitions(resources, "500103", ["specialized_new"], status="revoked")  # Chongqing
    async with resources.sessionmaker() as db:
        after = await service.recognition_counts(db, user=admin, filters=EVERYTHING)
        revoked_after = await service.recognition_counts(db, user=admin, filters=only_revoked)

    def grew(old: list[tuple[str, int]], new: list[tuple[str, int]]) -> dict[str, int]:
        was = dict(old)
        return {key: count - was.get(key, 0) for key, count in new if count != was.get(key, 0)}

    assert grew(before.by_tier, after.by_tier) == {"specialized_new": 2, "little_giant": 1}
    assert grew(before.by_province, after.by_province) == {"110000": 2, "500000": 1}
    assert after.total == before.total + 3
    # The same filters as the list: only the revoked one counts among the revoked.
    assert grew(revoked_before.by_province, revoked_after.by_province) == {"500000": 1}
    # Most first.
    assert [count for _, count in after.by_tier] == sorted(
        (count for _, count in after.by_tier), reverse=True
    )


async def test_the_recognitions_page_lists_counts_and_pages(
    staff: StaffFactory, resources: Resources
) -> None:
    uscc, (first, second) = await seed_recognitions(resources, "110105", ["specialized_new", "little_giant"])
    gone_uscc, (gone,) = await seed_recognitions(resources, "500103", ["specialized_new"], status="revoked")
    async with staff("admin", "adm-recognitions") as admin:
        page = await admin.get("/console/recognitions", params={"uscc": uscc}, headers=EN)
        assert page.status_code == 200, page.text
        text = page.text
        assert first.certificate_no in text
        assert second.certificate_no in text
        assert gone.certificate_no not in text  # another enterprise's
        # The chart: one bar per tier and per province, with the same counts in a table beside it.
        charts = re.findall(r'<svg class="chart" role="img" aria-label="([^"]+)".*?</svg>', text, re.S)
        assert charts == ["Recognitions by tier", "Recognitions by province"]
        assert text.count('<rect class="bar"') == 3
        assert '<tr><td>specialized_new</td><td class="num">1</td></tr>' in text
        assert '<tr><td>little_giant</td><td class="num">1</td></tr>' in text
        assert '<tr><td>110000</td><td class="num">2</td></tr>' in text
        # Each active recognition has its revocation form: a labelled reason and a Revoke button.
        for held in (first, second):
            row = row_of(text, held.certificate_no)
            assert f'action="/console/recognitions/{held.id}/revocation"' in row
            assert f'<label for="reason-{held.id}">Reason</label>' in row
            assert ">Revoke</button>" in row
            assert 'name="idempotency_key"' in row

        # Paged as the API pages (cursor + limit); the counts are the whole list's.
        paged = await admin.get("/console/recognitions", params={"uscc": uscc, "limit": 1}, headers=EN)
        assert paged.text.count(">Revoke</button>") == 1
        assert '<tr><td>110000</td><td class="num">2</td></tr>' in paged.text
        following = re.search(r'<a href="([^"]+)" rel="next">Next page</a>', paged.text)
        assert following is not None
        rest = await admin.get(html.unescape(following.group(1)), headers=EN)
        assert rest.status_code == 200
        assert rest.text.count(">Revoke</button>") == 1
        assert 'rel="next"' not in rest.text
        shown = {
            c for c in (first.certificate_no, second.certificate_no) if c in paged.text or c in rest.text
        }
        assert shown == {first.certificate_no, second.certificate_no}

        # A revoked recognition shows why, and offers nothing.
        revoked = await admin.get(
            "/console/recognitions", params={"uscc": gone_uscc, "status": "revoked"}, headers=EN
        )
        row = row_of(revoked.text, gone.certificate_no)
        assert "seeded as revoked" in row
        assert "Revoke</button>" not in row

        # A filter the API would refuse is shown next to its field.
        bad = await admin.get("/console/recognitions", params={"uscc": "not-a-uscc"}, headers=EN)
        assert bad.status_code == 422
        assert '<p class="field-error" id="e-uscc">' in bad.text


async def test_finance_reads_recognitions_without_a_revoke_form_and_reviewers_are_refused(
    staff: StaffFactory, resources: Resources
) -> None:
    uscc, (held,) = await seed_recognitions(resources, "500103", ["specialized_new"])
    async with staff("finance", "fin-recognitions") as finance:
        page = await finance.get("/console/recognitions", params={"uscc": uscc}, headers=EN)
    assert page.status_code == 200
    assert held.certificate_no in page.text
    assert "Revoke</button>" not in page.text
    assert "/revocation" not in page.text
    assert 'href="/console/recognitions"' not in page.text  # not in finance's navigation

    async with staff("reviewer", "rev-recognitions", level="provincial", region="500000") as reviewer:
        refused = await reviewer.get("/console/recognitions", params={"uscc": uscc}, headers=EN)
    assert refused.status_code == 403
    assert "Not allowed" in refused.text
    assert held.certificate_no not in refused.text


# --- revocation, through the review workflow ---------------------------------------------------------------


async def recognized(api: httpx.AsyncClient, settings: Settings, resources: Resources, tmp_path: Path) -> str:
    """An enterprise recognized through the real review workflow (the demo program, a 2-second notice):
    its uscc."""
    text = (PROGRAMS / "demo.toml").read_text().replace('notice_period = "PT20S"', 'notice_period = "PT2S"')
    (tmp_path / "demo.toml").write_text(text)
    resources._programs = load_programs(tmp_path)
    applicant = Applicant(api=api, settings=settings, uscc=random_uscc("500103"))
    assert (await applicant.register()).status_code == 201
    submitted = await applicant.submit()
    assert submitted.status_code == 201, submitted.text
    url = f"{API}/applications/{submitted.json()['id']}"
    await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")
    for level, region in (("municipal", "500100"), ("provincial", "500000")):
        decided = await api.post(
            f"{url}/decisions",
            headers=reviewer_headers(settings, level, region),
            json={"decision": "approve", "reason": "ok"},
        )
        assert decided.status_code == 200, decided.text
    await poll(api, url, applicant.headers, lambda b: b["status"] == "recognized")
    return applicant.uscc


def revocation_form(page: str, recognition_id: str) -> dict[str, str]:
    found = re.search(
        rf'<form method="post" action="/console/recognitions/{recognition_id}/revocation">.*?</form>',
        page,
        re.S,
    )
    assert found is not None, "no revocation form"
    fields = re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)"', found.group(0))
    # The fields the form carries but its CSRF token (each signed-in client sends its own session's).
    return {name: html.unescape(value) for name, value in fields if name != "csrf_token"}


async def test_an_admin_revokes_a_recognition_once(
    staff: StaffFactory, api: httpx.AsyncClient, settings: Settings, resources: Resources, tmp_path: Path
) -> None:
    uscc = await recognized(api, settings, resources, tmp_path)
    admin_api = bearer(make_token(settings, Role.admin, "adm-api"))
    (held,) = (await api.get(f"{API}/recognitions", params={"uscc": uscc}, headers=admin_api)).json()["items"]
    assert held["status"] == "active"
    recognition = f"{API}/recognitions/{held['id']}"
    action = f"/console/recognitions/{held['id']}/revocation"

    async def status() -> str:
        body = (await api.get(recognition, headers=admin_api)).json()
        return str(body["status"])

    async with staff("admin", "adm-revoke") as admin:
        page = await admin.get("/console/recognitions", params={"uscc": uscc}, headers=EN)
        form = revocation_form(page.text, held["id"])
        assert form["back"] == f"/console/recognitions?uscc={uscc}"

        # Without the session's CSRF token: refused, nothing changed.
        forged = await admin.client.post(
            action,
            data={"reason": "fraud", "idempotency_key": form["idempotency_key"]},
            headers={"Origin": "http://testserver"},
        )
        assert forged.status_code == 403
        assert await status() == "active"

        # Without a reason: the form again with the error next to the field, nothing changed.
        empty = await admin.post(action, {**form, "reason": "   "}, headers=EN)
        assert empty.status_code == 422
        error = re.search(r'<p class="field-error" id="e-reason">([^<]+)</p>', empty.text)
        assert error is not None
        assert error.group(1) == "Give the reason for revoking this recognition."
        assert 'aria-describedby="e-reason"' in empty.text
        assert await status() == "active"

    # Finance may read recognitions, not revoke them: the service says so.
    async with staff("finance", "fin-revoke") as finance:
        refused = await finance.post(action, {**form, "reason": "fraud"}, headers=EN)
        assert refused.status_code == 403
        assert "Your role may not do this." in refused.text
    assert await status() == "active"

    async with staff("admin", "adm-revoke") as admin:
        done = await admin.post(action, {**form, "reason": "falsified R&D figures"}, headers=EN)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == f"/console/recognitions?uscc={uscc}&done=revoked"
        body = (await api.get(recognition, headers=admin_api)).json()
        assert body["status"] == "revoked"
        assert body["revoked_reason"] == "falsified R&D figures"

        after = await admin.get(done.headers["location"], headers=EN)
        assert '<p class="notice" role="status">The recognition is revoked.</p>' in after.text
        row = row_of(after.text, held["certificate_no"])
        assert "falsified R&amp;D figures" in row
        assert "Revoke</button>" not in row

        # The same form sent again (a double submit): it acted once; now the service says why not.
        again = await admin.post(action, {**form, "reason": "falsified R&D figures"}, headers=EN)
        assert again.status_code == 409
        assert "only an active one can be revoked" in again.text
        assert "This recognition can no longer be revoked." in again.text
    body = (await api.get(recognition, headers=admin_api)).json()
    assert body["revoked_reason"] == "falsified R&D figures"
    # The public verification says so too.
    public = await api.get(f"{API}/public/recognitions/{held['certificate_no']}")
    assert public.json()["status"] == "revoked"
