"""Certificates and the public routes: the certificate PDF (who gets it, what it says, its QR link, its
caching), public verification by certificate number, the list of applications on public notice (what it
shows and nothing more), and the per-address limit on the public routes.

Most tests write their rows straight into the test's rolled-back transaction and read them through the API
(`api_rollback`); one drives an application through the real review workflow to its notice and recognition."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any

import httpx
from pypdf import PdfReader
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request

from services.applications.certificates import china_date
from services.applications.models import Application, Enterprise, Recognition
from services.config import Settings
from services.ratelimit import client_address
from tests.applications.conftest import Applicant, poll, reviewer_headers
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, seed_application

API = "/api/v1"
NOTICE_KEYS = {"enterprise_name", "uscc", "tier", "notice_ends_at", "how_to_object"}
HOW_TO_OBJECT_KEYS = {"path", "authority", "text", "text_zh"}
VERIFY_KEYS = {"enterprise_name", "tier", "valid_from", "valid_until", "status"}


def owner(settings: Settings, uscc: str) -> dict[str, str]:
    return bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc))


def admin(settings: Settings) -> dict[str, str]:
    return bearer(make_token(settings, "admin", "admin-public"))


async def recognition(
    session: AsyncSession,
    *,
    status: str = "active",
    valid_from: datetime | None = None,
    validity: timedelta = timedelta(days=3 * 365),
    name: str | None = None,
) -> Recognition:
    """A recognised application and its recognition, written straight to the database."""
    application = await seed_application(session)
    application.status = "recognized"
    if name is not None:
        enterprise = await session.get(Enterprise, application.uscc)
        assert enterprise is not None
        enterprise.name = name
    start = valid_from or datetime.now(UTC) - timedelta(days=10)
    row = Recognition(
        application_id=application.id,
        uscc=application.uscc,
        program="demo",
        tier="specialized_new",
        certificate_no=f"DEMO-2026-SPECIALIZED_NEW-{uuid.uuid4().hex[:10].upper()}",
        valid_from=start,
        valid_until=start + validity,
        status=status,
        revoked_reason="fraud" if status == "revoked" else None,
        revoked_at=datetime.now(UTC) if status == "revoked" else None,
    )
    session.add(row)
    await session.flush()
    return row


async def on_notice(
    session: AsyncSession, *, ends_in: timedelta, tier: str = "specialized_new", program: str = "demo"
) -> Application:
    application = await seed_application(session, tier=tier, program=program)
    application.status = "public_notice"
    application.notice_ends_at = datetime.now(UTC) + ends_in
    await session.flush()
    return application


def pdf_text(content: bytes) -> tuple[str, list[str]]:
    """The text of every page, and the URIs of its link annotations."""
    reader = PdfReader(io.BytesIO(content))
    text = "\n".join(page.extract_text() for page in reader.pages)
    links = [
        annotation.get_object()["/A"]["/URI"]
        for page in reader.pages
        for annotation in page.get("/Annots", [])
        if annotation.get_object().get("/Subtype") == "/Link"
    ]
    return text, links


# --- the certificate ------------------------------------------------------------------------------------


async def test_the_certificate_is_a_bilingual_pdf_with_its_verification_link(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    name = "重庆示例精密机械有限公司"
    held = await recognition(session, name=name)
    url = f"{API}/recognitions/{held.id}/certificate"
    resp = await api_rollback.get(url, headers=owner(settings, held.uscc))
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/pdf"
    assert resp.headers["content-disposition"] == f'attachment; filename="{held.certificate_no}.pdf"'
    assert resp.headers["cache-control"] == "private, no-cache"
    text, links = pdf_text(resp.content)
    for shown in (
        name,
        held.uscc,
        held.certificate_no,
        china_date(held.valid_from),
        china_date(held.valid_until),
        "专精特新中小企业",  # the tier in Chinese
        "Demo SRDI SME",  # the program's English name of the tier
        "认定证书",
        "Certificate of Recognition",
        "Demo program (seconds instead of days)",  # the issuing program and its authority
        "Demo authority",
    ):
        assert shown in text, f"{shown!r} is not on the certificate:\n{text}"
    verify = f"{settings.public_url}{API}/public/recognitions/{held.certificate_no}"
    assert links
    assert set(links) == {verify}
    assert verify.replace("\n", "") in text.replace("\n", "").replace(" ", "")

    # The same recognition, the same bytes: the ETag holds, and a revalidation is a 304.
    again = await api_rollback.get(url, headers=admin(settings))
    assert again.status_code == 200
    assert again.content == resp.content
    assert again.headers["etag"] == resp.headers["etag"]
    cached = await api_rollback.get(
        url, headers={**owner(settings, held.uscc), "If-None-Match": resp.headers["etag"]}
    )
    assert cached.status_code == 304
    assert cached.content == b""
    other = await api_rollback.get(url, headers={**admin(settings), "If-None-Match": '"another"'})
    assert other.status_code == 200


async def test_only_the_owner_and_admins_get_a_certificate(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    held = await recognition(session)
    url = f"{API}/recognitions/{held.id}/certificate"
    callers = {
        "owner": (owner(settings, held.uscc), 200),
        "admin": (admin(settings), 200),
        "another enterprise": (owner(settings, random_uscc("500103")), 404),
        "reviewer": (reviewer_headers(settings, "provincial", "500000"), 403),
        "finance": (bearer(make_token(settings, "finance", "finance-public")), 403),
        "no token": ({}, 401),
    }
    for caller, (headers, status) in callers.items():
        resp = await api_rollback.get(url, headers=headers)
        assert resp.status_code == status, (caller, resp.text)
        if status >= 400:
            assert resp.headers["content-type"] == "application/problem+json", caller
    unknown = await api_rollback.get(
        f"{API}/recognitions/{uuid.uuid4()}/certificate", headers=admin(settings)
    )
    assert unknown.status_code == 404


async def test_a_revoked_recognition_has_no_certificate_an_expired_one_keeps_it(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    revoked = await recognition(session, status="revoked")
    resp = await api_rollback.get(
        f"{API}/recognitions/{revoked.id}/certificate", headers=owner(settings, revoked.uscc)
    )
    assert resp.status_code == 409
    assert resp.json()["type"].endswith("/certificate-revoked")
    assert revoked.certificate_no in resp.json()["detail"]
    long_ago = datetime.now(UTC) - timedelta(days=4000)
    expired = await recognition(session, status="expired", valid_from=long_ago)
    resp = await api_rollback.get(f"{API}/recognitions/{expired.id}/certificate", headers=admin(settings))
    assert resp.status_code == 200
    assert china_date(expired.valid_until) in pdf_text(resp.content)[0]


# --- public verification --------------------------------------------------------------------------------


async def test_anyone_verifies_a_certificate_by_its_number(
    api_rollback: httpx.AsyncClient, session: AsyncSession
) -> None:
    now = datetime.now(UTC)
    cases = {
        "valid": await recognition(session),
        "expired": await recognition(session, status="expired", valid_from=now - timedelta(days=4000)),
        "revoked": await recognition(session, status="revoked"),
    }
    # Past its validity but not yet marked by its workflow: expired all the same.
    lagging = await recognition(session, valid_from=now - timedelta(days=20), validity=timedelta(days=10))
    cases_with_lag = [*cases.items(), ("expired", lagging)]
    for status, held in cases_with_lag:
        resp = await api_rollback.get(f"{API}/public/recognitions/{held.certificate_no}")
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert set(body) == VERIFY_KEYS  # nothing else: no USCC, no ids, no reasons
        enterprise = await session.get(Enterprise, held.uscc)
        assert enterprise is not None
        assert body == {
            "enterprise_name": enterprise.name,
            "tier": "specialized_new",
            "valid_from": body["valid_from"],
            "valid_until": body["valid_until"],
            "status": status,
        }
        assert datetime.fromisoformat(body["valid_from"]) == held.valid_from
        assert datetime.fromisoformat(body["valid_until"]) == held.valid_until
        assert resp.headers["cache-control"] == "public, max-age=60"
    # A token is not needed, and one that is not valid changes nothing: the route never reads it.
    forged = await api_rollback.get(
        f"{API}/public/recognitions/{cases['valid'].certificate_no}",
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert forged.status_code == 200
    unknown = await api_rollback.get(f"{API}/public/recognitions/DEMO-2026-SPECIALIZED_NEW-NOPE")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.headers["cache-control"] == "no-store"


# --- public notices --------------------------------------------------------------------------------------


async def test_public_notices_show_what_is_on_notice_and_nothing_else(
    api_rollback: httpx.AsyncClient, session: AsyncSession
) -> None:
    later = await on_notice(session, ends_in=timedelta(days=5))
    sooner = await on_notice(session, ends_in=timedelta(days=2))
    giant = await on_notice(session, ends_in=timedelta(days=3), tier="little_giant")
    in_review = await seed_application(session)
    in_review.status = "in_review"
    await session.flush()
    ours = {later.uscc, sooner.uscc, giant.uscc}

    items, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        resp = await api_rollback.get(f"{API}/public/notices", params=params)
        assert resp.status_code == 200, resp.text
        assert resp.headers["cache-control"] == "public, max-age=60"
        assert set(resp.json()) == {"items", "next_cursor"}
        items += resp.json()["items"]
        cursor, pages = resp.json()["next_cursor"], pages + 1
        if cursor is None:
            break
    assert pages == len(items)
    ends = [item["notice_ends_at"] for item in items]
    assert ends == sorted(ends, key=datetime.fromisoformat)  # the notice ending soonest first
    mine = [item for item in items if item["uscc"] in ours]
    assert [item["uscc"] for item in mine] == [sooner.uscc, giant.uscc, later.uscc]
    assert in_review.uscc not in {item["uscc"] for item in items}
    for item, application in zip(mine, [sooner, giant, later], strict=True):
        assert set(item) == NOTICE_KEYS
        assert set(item["how_to_object"]) == HOW_TO_OBJECT_KEYS
        assert item["enterprise_name"] == f"Enterprise {application.uscc}"
        assert item["tier"] == application.tier
        assert datetime.fromisoformat(item["notice_ends_at"]) == application.notice_ends_at
        assert item["how_to_object"]["path"] == f"{API}/applications/{application.id}/objections"
        assert item["how_to_object"]["authority"] == "Demo authority"
        # No figures, no screening, no reviewers, no documents: the only id is the objection path's.
        assert str(application.id) not in str({k: v for k, v in item.items() if k != "how_to_object"})

    filtered = await api_rollback.get(
        f"{API}/public/notices", params={"tier": "little_giant", "uscc": giant.uscc}
    )
    assert [item["uscc"] for item in filtered.json()["items"]] == [giant.uscc]
    nobody = await api_rollback.get(f"{API}/public/notices", params={"uscc": in_review.uscc})
    assert nobody.json() == {"items": [], "next_cursor": None}
    bad = await api_rollback.get(f"{API}/public/notices", params={"status": "in_review"})
    assert bad.status_code == 422  # no other filter is taken


async def test_a_real_review_puts_the_application_on_notice_and_its_certificate_verifies(
    applicant: Applicant, settings: Settings, fast_programs: None
) -> None:
    """Through the review workflow: the transition that opens the notice writes when it ends, the public
    list shows it, the objection path it names takes an objection, and the recognition's certificate links
    to a verification that answers `valid`, then `revoked`."""
    api = applicant.api
    await applicant.register()
    app_id = (await applicant.submit()).json()["id"]
    url = f"{API}/applications/{app_id}"
    await poll(api, url, applicant.headers, lambda b: b["status"] == "in_review")
    await api.post(
        f"{url}/decisions",
        headers=reviewer_headers(settings, "municipal", "500100"),
        json={"decision": "approve", "reason": "ok"},
    )
    state = await api.post(
        f"{url}/decisions",
        headers=reviewer_headers(settings, "provincial", "500000"),
        json={"decision": "approve", "reason": "ok"},
    )
    assert state.json()["status"] == "public_notice", state.text
    notices = (await api.get(f"{API}/public/notices", params={"uscc": applicant.uscc})).json()["items"]
    assert len(notices) == 1
    # The end the workflow's timer waits for.
    assert datetime.fromisoformat(notices[0]["notice_ends_at"]) == datetime.fromisoformat(
        state.json()["notice_ends_at"]
    )
    objection = await api.post(
        notices[0]["how_to_object"]["path"],
        headers=bearer(make_token(settings, "finance", "a-citizen")),
        json={"reason": "the figures look inflated"},
    )
    assert objection.status_code == 201, objection.text
    await api.post(
        f"{API}/objections/{objection.json()['objection_id']}/resolution",
        headers=reviewer_headers(settings, "provincial", "500000"),
        json={"upheld": False, "reason": "verified"},
    )
    await poll(api, url, applicant.headers, lambda b: b["status"] == "recognized")
    assert (await api.get(f"{API}/public/notices", params={"uscc": applicant.uscc})).json()["items"] == []

    held = (await api.get(f"{API}/recognitions", headers=applicant.headers)).json()["items"][0]
    pdf = await api.get(f"{API}/recognitions/{held['id']}/certificate", headers=applicant.headers)
    assert pdf.status_code == 200, pdf.text
    text, links = pdf_text(pdf.content)
    assert held["certificate_no"] in text
    assert applicant.uscc in text
    assert links[0] == f"{settings.public_url}{API}/public/recognitions/{held['certificate_no']}"
    path = links[0].removeprefix(settings.public_url)
    assert (await api.get(path)).json()["status"] == "valid"
    revoked = await api.post(
        f"{API}/recognitions/{held['id']}/revocation", headers=admin(settings), json={"reason": "fraud"}
    )
    assert revoked.status_code == 200, revoked.text
    assert (await api.get(path)).json()["status"] == "revoked"
    gone = await api.get(f"{API}/recognitions/{held['id']}/certificate", headers=applicant.headers)
    assert gone.status_code == 409


# --- the per-address limit ------------------------------------------------------------------------------


def _address() -> str:
    """A client address of this test's own (a /64 in the documentation prefix): the limits' state is the
    database's, shared by the session's apps."""
    bits = uuid.uuid4().int
    return f"2001:db8:{bits & 0xFFFF:x}:{bits >> 16 & 0xFFFF:x}::7"


def _client(app: Any, host: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://testserver"
    )


async def test_public_routes_are_limited_per_client_address(
    api_rollback: httpx.AsyncClient, session: AsyncSession, settings: Settings
) -> None:
    app = api_rollback._transport.app  # type: ignore[attr-defined]
    app.state.public_limiter.limit = 2
    held = await recognition(session)
    verify = f"{API}/public/recognitions/{held.certificate_no}"
    async with _client(app, _address()) as first, _client(app, _address()) as second:
        assert (await first.get(verify)).status_code == 200
        assert (await first.get(f"{API}/public/notices")).status_code == 200  # one window for both routes
        refused = await first.get(verify)
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("/rate-limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Another address has a window of its own ...
        assert (await second.get(verify)).status_code == 200
        # ... and a client cannot claim one: X-Forwarded-For counts only from a trusted proxy (none here).
        spoofed = await first.get(verify, headers={"X-Forwarded-For": _address()})
        assert spoofed.status_code == 429
        # The authenticated routes are not the public limiter's.
        certificate = await first.get(
            f"{API}/recognitions/{held.id}/certificate", headers=owner(settings, held.uscc)
        )
        assert certificate.status_code == 200

    app.state.public_limiter.trusted_proxies = (ip_network("10.0.0.0/8"),)
    client, forged = _address(), _address()
    async with _client(app, "10.1.2.3") as proxy:
        for _ in range(2):
            ok = await proxy.get(verify, headers={"X-Forwarded-For": client})
            assert ok.status_code == 200
        assert (await proxy.get(verify, headers={"X-Forwarded-For": client})).status_code == 429
        # Behind the proxy, each client its own window; what the client itself wrote in front is ignored.
        other = await proxy.get(verify, headers={"X-Forwarded-For": f"{client}, {forged}"})
        assert other.status_code == 200


def _request(peer: str, forwarded: list[str] | None = None) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded or []]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 1)})


def test_client_address_believes_only_trusted_proxies() -> None:
    proxies = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))
    assert client_address(_request("198.51.100.1", ["1.2.3.4"])) == "198.51.100.1"
    assert client_address(_request("198.51.100.1", ["1.2.3.4"]), proxies) == "198.51.100.1"
    assert client_address(_request("10.0.0.1", ["1.2.3.4"]), proxies) == "1.2.3.4"
    # The nearest address that is not a trusted proxy, read from the right; a forged prefix changes nothing.
    chain = ["6.6.6.6, 1.2.3.4", "10.0.0.9"]
    assert client_address(_request("10.0.0.1", chain), proxies) == "1.2.3.4"
    assert client_address(_request("10.0.0.1"), proxies) == "10.0.0.1"
    # An IPv6 client is its /64.
    assert client_address(_request("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert client_address(_request("fd00::1", ["2001:db8:1:2::5"]), proxies) == "2001:db8:1:2::/64"
