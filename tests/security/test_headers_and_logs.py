"""Every response carries the security headers, problems included; tokens and secrets never reach the logs;
hostile input is refused as a problem, never a 500."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI

from services.app import API_CSP, SECURITY_HEADERS
from services.config import Settings
from tests.conftest import bearer, make_token
from tests.support.factories import random_uscc, strong_metrics

PROBLEM = "application/problem+json"


def _app(api: httpx.AsyncClient) -> FastAPI:
    app: FastAPI = api._transport.app  # type: ignore[attr-defined]
    return app


def _boom_route(app: FastAPI) -> str:
    async def boom() -> None:
        raise RuntimeError("an unexpected failure")

    app.add_api_route("/api/v1/test-boom", boom, methods=["GET"])
    return "/api/v1/test-boom"


async def test_every_response_carries_the_security_headers(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    app = _app(api_rollback)
    boom = _boom_route(app)
    admin = bearer(make_token(settings, "admin", "admin-headers"))
    finance = bearer(make_token(settings, "finance", "finance-headers"))
    forged = bearer(make_token(settings.model_copy(update={"jwt_secret": _secret("x" * 40)}), "admin"))
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/healthz", {}, 200),
        ("GET", "/openapi.json", {}, 200),
        ("GET", "/api/v1/programs", {}, 200),
        ("GET", "/api/v1/applications", {}, 401),
        ("GET", "/api/v1/applications", {"headers": forged}, 401),
        ("GET", "/api/v1/applications", {"headers": finance}, 403),
        ("GET", f"/api/v1/enterprises/{random_uscc()}", {"headers": admin}, 404),
        ("GET", "/api/v1/no-such-thing", {}, 404),
        ("DELETE", "/healthz", {}, 405),
        ("POST", "/api/v1/enterprises", {"headers": admin, "json": {"uscc": "bad"}}, 422),
        ("GET", "/api/v1/applications", {"headers": admin, "params": {"stauts": "x"}}, 422),
        (
            "POST",
            "/api/v1/enterprises",
            {"headers": {**admin, "Content-Type": "application/json"}, "content": b"x" * (1024 * 1024 + 1)},
            413,
        ),
        ("GET", boom, {"headers": admin}, 500),
        ("GET", "/readyz", {}, 503),  # no Temporal reachable in this fixture
    ]
    for method, url, kwargs, status in cases:
        resp = await api_rollback.request(method, url, **kwargs)
        where = f"{method} {url}"
        assert resp.status_code == status, f"{where}: {resp.status_code} {resp.text[:200]}"
        for name, value in {**SECURITY_HEADERS, "Content-Security-Policy": API_CSP}.items():
            assert resp.headers.get(name) == value, f"{where} ({status}) lacks {name}"
        assert resp.headers.get("x-request-id"), f"{where} ({status}) has no X-Request-ID"
        # How long the service took to start answering (what the console benchmarks read).
        assert re.fullmatch(r"app;dur=\d+\.\d", resp.headers.get("server-timing", "")), where
        if status >= 400 and url != "/readyz":
            assert resp.headers["content-type"] == PROBLEM, f"{where} ({status}) is not a problem"
            body = resp.json()
            assert body["status"] == status
            assert "Traceback" not in resp.text
            assert "sqlalchemy" not in resp.text.lower()
    docs = await api_rollback.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["x-frame-options"] == "DENY"
    assert "content-security-policy" not in docs.headers  # the Swagger UI loads its script from a CDN


def _secret(value: str) -> Any:
    from pydantic import SecretStr

    return SecretStr(value)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """structlog's real processors (redaction, JSON) at DEBUG, rendered into a buffer for the test."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    structlog.configure(
        processors=saved["processors"],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(buffer),
        cache_logger_on_first_use=False,
    )
    try:
        yield buffer
    finally:
        structlog.configure(**saved)


async def test_tokens_and_secrets_never_reach_the_logs(
    api_rollback: httpx.AsyncClient,
    settings: Settings,
    log_output: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    boom = _boom_route(_app(api_rollback))
    token = make_token(settings, "admin", "admin-logs")
    expired = make_token(settings, "admin", "admin-logs", ttl=timedelta(seconds=-60))
    forged = make_token(settings.model_copy(update={"jwt_secret": _secret("y" * 40)}), "admin", "forger")
    requests = [
        ("GET", "/api/v1/applications", token),
        ("GET", "/api/v1/applications", expired),
        ("GET", "/api/v1/applications", forged),
        ("GET", "/api/v1/applications", token + "tampered"),
        ("POST", "/api/v1/enterprises", token),
        ("GET", boom, token),
    ]
    for method, url, bearer_token in requests:
        resp = await api_rollback.request(
            method, url, headers={"Authorization": f"Bearer {bearer_token}", "X-Request-ID": "logs-test"}
        )
        assert bearer_token not in resp.text
    logged = log_output.getvalue() + caplog.text
    lines = [json.loads(line) for line in log_output.getvalue().splitlines() if line.strip()]
    assert any(line.get("event") == "request" and line.get("status") == 500 for line in lines)
    assert any(line.get("event") == "unhandled_error" for line in lines)
    for _, _, bearer_token in requests:
        for part in bearer_token.split("."):  # nor any part of it (the signature, the claims)
            assert part not in logged
    assert settings.jwt_secret.get_secret_value() not in logged


async def test_redaction_covers_secret_named_fields(log_output: io.StringIO) -> None:
    structlog.get_logger("giantflow.test").warning(
        "leaky", authorization="Bearer abc.def.ghi", jwt_secret="s3cret", password="pw"
    )
    line = json.loads(log_output.getvalue().splitlines()[-1])
    assert line["authorization"] == line["jwt_secret"] == line["password"] == "[redacted]"


def _enterprise(**changes: Any) -> dict[str, Any]:
    body = {
        "uscc": random_uscc(),
        "name": "x",
        "region_code": "500103",
        "industry": "x",
        "founded_on": "2012-01-01",
    }
    return {**body, **changes}


def _application(**year_changes: Any) -> dict[str, Any]:
    metrics = strong_metrics()
    metrics["years"][0].update(year_changes)
    return {"uscc": random_uscc(), "program": "demo", "tier": "specialized_new", "metrics": metrics}


# An objection to an application that does not exist: the route would answer 404, so a 422 proves the body
# was refused before any route read it.
NOBODY_OBJECTS = "/api/v1/applications/00000000-0000-4000-8000-000000000000/objections"


def _nul_objection(encoding: str = "utf-8") -> bytes:
    return json.dumps({"reason": "a\x00b"}).encode(encoding)


JSON = {"Content-Type": "application/json"}
HOSTILE: list[tuple[str, str, str, dict[str, Any]]] = [
    ("NUL in a JSON string", "POST", "/api/v1/enterprises", {"json": _enterprise(name="a\x00b")}),
    ("NUL in a nested list", "POST", "/api/v1/applications", {"json": _application()}),
    (
        "unpaired surrogate in JSON",
        "POST",
        "/api/v1/applications/00000000-0000-4000-8000-000000000000/objections",
        {"content": b'{"reason": "x\\udc00y"}', "headers": JSON},
    ),
    ("NUL in a query filter", "GET", "/api/v1/applications?program=a%00b", {}),
    ("NUL in a path parameter", "GET", "/api/v1/enterprises/a%00b", {}),
    ("not a UUID", "GET", "/api/v1/applications/not-a-uuid", {}),
    ("huge page size", "GET", "/api/v1/applications?limit=99999999999999999999999", {}),
    (
        "huge integer in JSON",
        "POST",
        "/api/v1/enterprises",
        {"content": b'{"uscc": 1' + b"0" * 5000 + b"}", "headers": JSON},
    ),
    ("body not UTF-8", "POST", "/api/v1/enterprises", {"content": b"\xff\xfe{", "headers": JSON}),
    ("body not JSON", "POST", "/api/v1/enterprises", {"content": b"{not json", "headers": JSON}),
    (
        "broken multipart",
        "POST",
        "/api/v1/documents",
        {"content": b"--x\r\nTrue--x--\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
    ),
    ("unknown query parameter", "GET", "/api/v1/applications?stauts=failed", {}),
    ("repeated scalar parameter", "GET", "/api/v1/applications?status=rejected&status=in_review", {}),
    ("a float for money", "POST", "/api/v1/applications", {"json": _application(revenue=80000000.5)}),
    ("money past 16 digits", "POST", "/api/v1/applications", {"json": _application(revenue="1" * 17)}),
    ("blank required text", "POST", "/api/v1/enterprises", {"json": _enterprise(name="   ")}),
    (
        "deeply nested JSON",
        "POST",
        "/api/v1/enterprises",
        {"content": b"[" * 100_000 + b"]" * 100_000, "headers": JSON},
    ),
    (
        "NUL in a credit body",
        "POST",
        "/api/v1/drawdowns/00000000-0000-4000-8000-000000000000/approvals",
        {"json": {"decision": "reject", "reason": "a\x00b"}},
    ),
    ("NUL in an object key", "POST", "/api/v1/enterprises", {"json": {"a\x00": 1}}),
    # The media type is matched as RFC 9110 says (case-insensitive, with parameters), and only UTF-8 JSON
    # text is read: a NUL must not slip past the check under another spelling or encoding.
    (
        "NUL under an upper-case media type",
        "POST",
        NOBODY_OBJECTS,
        {"content": _nul_objection(), "headers": {"Content-Type": "Application/JSON"}},
    ),
    (
        "NUL under a charset parameter",
        "POST",
        NOBODY_OBJECTS,
        {"content": _nul_objection(), "headers": {"Content-Type": 'application/json; Charset="UTF-8"'}},
    ),
    (
        "NUL under a +json media type",
        "POST",
        NOBODY_OBJECTS,
        {"content": _nul_objection(), "headers": {"Content-Type": "application/merge-patch+json"}},
    ),
    ("NUL without a media type", "POST", NOBODY_OBJECTS, {"content": _nul_objection()}),
    (
        "UTF-16 body with a byte-order mark",
        "POST",
        NOBODY_OBJECTS,
        {"content": _nul_objection("utf-16"), "headers": JSON},
    ),
    (
        "UTF-16 body without a byte-order mark",
        "POST",
        NOBODY_OBJECTS,
        {"content": _nul_objection("utf-16-le"), "headers": {"Content-Type": "APPLICATION/JSON"}},
    ),
    (
        "UTF-32 body",
        "POST",
        NOBODY_OBJECTS,
        {"content": json.dumps({"reason": "x\x00y"}).encode("utf-32"), "headers": JSON},
    ),
]
HOSTILE[1][3]["json"]["metrics"]["certifications"] = ["ISO\x009001"]


@pytest.mark.parametrize(("what", "method", "url", "kwargs"), HOSTILE, ids=[case[0] for case in HOSTILE])
async def test_hostile_input_is_a_422_problem(
    api_rollback: httpx.AsyncClient,
    settings: Settings,
    what: str,
    method: str,
    url: str,
    kwargs: dict[str, Any],
) -> None:
    headers = {**bearer(make_token(settings, "admin", "admin-hostile")), **kwargs.get("headers", {})}
    sent = {k: v for k, v in kwargs.items() if k != "headers"}
    resp = await api_rollback.request(method, url, headers=headers, **sent)
    assert resp.status_code == 422, f"{what}: {resp.status_code} {resp.text[:300]}"
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["errors"], what


async def test_an_unreachable_workflow_engine_is_a_503_not_a_500(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    """The lazy Temporal client fails its first connection with a RuntimeError, not an RPCError."""
    uscc = random_uscc()
    owner = bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc))
    registered = await api_rollback.post("/api/v1/enterprises", headers=owner, json=_enterprise(uscc=uscc))
    assert registered.status_code == 201, registered.text
    evidence = []
    for kind in ("business_licence", "financial_statements_3y"):
        doc = await api_rollback.post(
            "/api/v1/documents",
            headers=owner,
            data={"kind": kind},
            files={"file": (f"{kind}.pdf", b"%PDF-1.4 " + kind.encode(), "application/pdf")},
        )
        evidence.append(doc.json()["id"])
    body = {**_application(), "uscc": uscc, "evidence": evidence}
    submitted = await api_rollback.post("/api/v1/applications", headers=owner, json=body)
    assert submitted.status_code == 503, submitted.text
    assert submitted.headers["content-type"] == PROBLEM
    listed = await api_rollback.get("/api/v1/applications", headers=owner)
    [application] = listed.json()["items"]  # saved: the worker's reconciler starts its review later
    withdrawn = await api_rollback.post(f"/api/v1/applications/{application['id']}/withdraw", headers=owner)
    assert withdrawn.status_code == 503, withdrawn.text


async def test_escaped_text_that_is_storable_passes(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    """The body check refuses only what cannot be stored: a surrogate pair (an emoji) and an escaped
    backslash before `u0000` are ordinary text."""
    admin = bearer(make_token(settings, "admin", "admin-escapes"))
    body = json.dumps(_enterprise(name="Smile \U0001f600 \\u0000 Co"), ensure_ascii=True).encode()
    assert b"\\ud83d\\ude00" in body
    resp = await api_rollback.post("/api/v1/enterprises", headers={**admin, **JSON}, content=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "Smile \U0001f600 \\u0000 Co"


async def test_a_value_the_database_refuses_is_a_422(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    """A NUL that no schema rule catches (here in an upload's file name) is refused by PostgreSQL (SQLSTATE
    class 22): that is bad input, answered as a 422 problem, not a 500."""
    uscc = random_uscc()
    owner = bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc))
    registered = await api_rollback.post("/api/v1/enterprises", headers=owner, json=_enterprise(uscc=uscc))
    assert registered.status_code == 201, registered.text
    body = (
        b'--b\r\nContent-Disposition: form-data; name="kind"\r\n\r\nbusiness_licence\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="licence\x00.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n%PDF-1.4 nul\r\n--b--\r\n"
    )
    resp = await api_rollback.post(
        "/api/v1/documents",
        headers={**owner, "Content-Type": "multipart/form-data; boundary=b"},
        content=body,
    )
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["errors"] == [{"field": "request", "message": "a value the database refuses"}]
    assert "sql" not in resp.text.lower()


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-16",
        "application/json;charset=ISO-8859-1",
        "Application/Json; charset=x",
    ],
)
async def test_json_in_another_charset_is_a_415_and_changes_nothing(
    api_rollback: httpx.AsyncClient, settings: Settings, content_type: str
) -> None:
    """RFC 8259 section 8.1: JSON between systems is UTF-8; a body labelled otherwise is not read at all."""
    uscc = random_uscc()
    owner = bearer(make_token(settings, "enterprise", f"enterprise-{uscc}", uscc=uscc))
    body = json.dumps(_enterprise(uscc=uscc)).encode()
    resp = await api_rollback.post(
        "/api/v1/enterprises", headers={**owner, "Content-Type": content_type}, content=body
    )
    assert resp.status_code == 415, resp.text
    assert resp.headers["content-type"] == PROBLEM
    assert "UTF-8" in resp.json()["detail"]
    missing = await api_rollback.get(f"/api/v1/enterprises/{uscc}", headers=owner)
    assert missing.status_code == 404
