"""create_app(): the FastAPI application, its lifespan, middleware and health endpoints."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.auth import TokenVerifier
from services.config import Settings, get_settings
from services.deps import ResourcesDep
from services.errors import FieldError, install_problem_handlers, internal_error, problem_response
from services.logging import configure_logging
from services.metrics import RequestMetrics, exposition, serve_metrics, serves_on_api_port
from services.ratelimit import PublicLimiter, SharedLimits, WriteLimiter
from services.resources import Resources
from services.shortcuts import Shortcuts
from services.telemetry import API, instrument_engine, setup_tracing, shutdown_tracing, traced

log = structlog.get_logger("giantflow.api")

ResourcesFactory = Callable[[Settings], Awaitable[Resources]]

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
}
# Every answer is data, never a page to render or frame (OWASP REST Security); the Swagger UI pages at
# /docs load their script and styles from a CDN, so they go without it.
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
MAX_BODY_BYTES = 1024 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# JSON escapes for NUL and for UTF-16 surrogates: a body holding none of them needs no closer look.
_SUSPECT_ESCAPES = (b"\\u0000", *(b"\\ud" + bytes([c]) for c in b"89abcdef"))


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


health_router = APIRouter(tags=["health"])


@health_router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@health_router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(resources: ResourcesDep) -> Any:
    db, temporal = await resources.database_ready(), await resources.temporal_ready()
    checks = {"database": db or "ok", "temporal": temporal or "ok"}
    if db or temporal:
        return JSONResponse(Health(status="unavailable", checks=checks).model_dump(), status_code=503)
    return Health(status="ready", checks=checks)


def create_app(
    settings: Settings | None = None, *, resources_factory: ResourcesFactory | None = None
) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    tracing = setup_tracing(settings, API)
    factory = resources_factory or Resources.build

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = await factory(settings)
        app.state.resources = resources
        await resources.program_registry.start()  # seeds from the files; new versions read within a second
        instrument_engine(resources.engine)
        metrics = serve_metrics(settings)  # /metrics on a port of its own, when one is set
        app.state.verifier = TokenVerifier(settings, resources.http)
        # The limits hold across every API process: their state is in the database (services/ratelimit.py).
        limits = SharedLimits(settings.effective_database_url)
        app.state.write_limiter = WriteLimiter(limits, settings.write_rate_per_minute)
        app.state.public_limiter = PublicLimiter(
            limits, settings.public_rate_per_minute, trusted_proxies=settings.trusted_proxies
        )
        try:
            yield
        finally:
            await resources.program_registry.close()
            await limits.close()
            await resources.close()
            if metrics is not None:
                metrics.close()
            if tracing is not None:
                shutdown_tracing()

    app = FastAPI(
        # FastAPI's own OpenTelemetry hooks stay off: the service makes its server spans (ServerSpans) and
        # request metrics (RequestMetrics) itself. Left on, FastAPI asks for the global tracer, meter and
        # logger providers on every request, and would add spans of its own if one were ever set.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        title="giantflow",
        version="0.1.0",
        lifespan=lifespan,
        description="Graded SME cultivation: applications, reviews, recognitions and benefits.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    install_problem_handlers(app)

    # The cached reads asked before the framework, inside the request context (services/shortcuts.py).
    app.add_middleware(Shortcuts, routes_of=app)
    app.add_middleware(RequestContext, settings=settings, serve_metrics=serves_on_api_port(settings))
    if tracing is not None:  # the server span outermost: the request's log line is logged inside it
        app.add_middleware(traced)
    from services.routes import API_PREFIX, DOMAIN_ROUTERS, document_webhooks

    for router in DOMAIN_ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    document_webhooks(app.webhooks)
    from services.idempotency import document_required_keys

    build_openapi = app.openapi
    app.openapi = lambda: document_required_keys(build_openapi())  # type: ignore[method-assign]
    app.include_router(health_router)
    from services.console.routes import mount_console

    mount_console(app)
    return app


class RequestContext:
    """Pure ASGI middleware around every request: a request id (bound to the logs and echoed back), the body
    limit (413), the refusal of text no field may store (422), the security headers on every answer - a 500
    included - one log line, and the request counted and timed (``RequestMetrics``). Pure ASGI rather than
    ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every request through an extra task and
    memory streams, which cost the hot read paths a measurable share of their time (docs/performance.md).
    The metrics are here rather than in a layer of their own for the same reason."""

    def __init__(self, app: ASGIApp, settings: Settings, *, serve_metrics: bool = False) -> None:
        self.app = app
        self.settings = settings
        self.metrics = RequestMetrics()
        self.serve_metrics = serve_metrics  # GET /metrics on this port (services/metrics.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.serve_metrics and scope["path"] == "/metrics":
            await exposition(send)
            return
        headers = Headers(scope=scope)
        request_id = headers.get("x-request-id") or os.urandom(16).hex()
        if len(request_id) > 100 or not request_id.isprintable():
            request_id = os.urandom(16).hex()
        # Each request runs in a task of its own, whose context starts without any request's bindings.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        path: str = scope["path"]
        status = 500
        started_response = False
        try:
            extra = [(b"x-request-id", request_id.encode("latin-1")), *_SECURITY_RAW]
            if path not in DOCS_PATHS:
                extra.append((b"content-security-policy", API_CSP.encode()))

            async def send_with_headers(message: Message) -> None:
                nonlocal status, started_response
                if message["type"] == "http.response.start":
                    status, started_response = message["status"], True
                    present = {name.lower() for name, _ in message.get("headers", [])}
                    # The time the service took to start answering (W3C Server Timing): what a browser's
                    # developer tools show beside the network time, and what the console benchmarks read.
                    took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                    message["headers"] = [
                        *message.get("headers", []),
                        *((name, value) for name, value in extra if name not in present),
                        (b"server-timing", took),
                    ]
                await send(message)

            async def send_limited(message: Message) -> None:
                if not body.over:
                    await send_with_headers(message)

            body = _CountedBody(receive, _body_limit(path, self.settings))
            receive = body
            refusal: Response | None = None
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > body.limit):
                refusal = _too_large(body.limit, path)
            elif scope["method"] in BODY_METHODS and _json_or_unlabelled(headers.get("content-type")):
                content, receive = await _buffered(body)
                if body.over:
                    refusal = _too_large(body.limit, path)
                else:
                    refusal = _refused_json(headers.get("content-type"), content, path)
            try:
                if refusal is not None:
                    await refusal(scope, receive, send_with_headers)
                else:
                    await self.app(scope, receive, send_limited)
            except Exception:
                if started_response:
                    raise
                if not body.over:
                    # Answered here rather than by Starlette's outermost error middleware, so a 500 carries
                    # the request id and the security headers too.
                    await internal_error(Request(scope))(scope, receive, send_with_headers)
            if body.over and not started_response:
                # The app met the end of what it was allowed to read (a "disconnect"), and whatever it made of
                # that was dropped: the answer is that the body is too large.
                await _too_large(body.limit, path)(scope, receive, send_with_headers)
            log.info(
                "request",
                method=scope["method"],
                path=path,
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
        finally:  # counted whatever happened, with the status the client was sent (500 if none)
            self.metrics.observe(scope, status, time.perf_counter() - started)


_SECURITY_RAW = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


class _CountedBody:
    """The request's `receive`, counting body bytes as they stream in, whatever the framing (Content-Length
    or chunked) and media type (JSON or multipart). Past the limit it reads no further and tells the app the
    client has gone (`http.disconnect`), so nothing beyond the limit is ever held in memory; the middleware
    then answers 413 instead of whatever the app made of the disconnect."""

    __slots__ = ("limit", "over", "read", "receive")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive, self.limit, self.read, self.over = receive, limit, 0, False

    async def __call__(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self.limit:
                self.over = True
                return {"type": "http.disconnect"}
        return message


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that hands it to the app again."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def _too_large(limit: int, path: str) -> Response:
    return problem_response(
        413,
        title="Payload too large",
        slug="payload-too-large",
        detail=f"The request body is over the limit of {limit} bytes.",
        instance=path,
    )


def _media_type(content_type: str) -> tuple[str, dict[str, str]]:
    """`type/subtype` (lower case) and the parameters (names lower case, values unquoted) of a media type
    (RFC 9110 section 8.3.1)."""
    kind, *rest = content_type.split(";")
    params = {}
    for param in rest:
        name, _, value = param.partition("=")
        params[name.strip().lower()] = value.strip().strip('"')
    return kind.strip().lower(), params


def _json_or_unlabelled(content_type: str | None) -> bool:
    """Whether a body would be read as JSON: labelled `application/json` or `application/*+json` in any case,
    or not labelled at all (which FastAPI may parse as JSON too)."""
    if content_type is None:
        return True
    kind, _ = _media_type(content_type)
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


# A UTF-8 JSON text never holds a raw C0 control byte but tab, line feed and carriage return (RFC 8259
# section 7: control characters in strings are escaped); UTF-16 and UTF-32 put a NUL beside every ASCII one.
_RAW_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _refused_json(content_type: str | None, body: bytes, path: str) -> Response | None:
    """The refusal of a JSON body labelled with another charset than UTF-8 (415: RFC 8259 section 8.1 makes
    UTF-8 the only encoding between systems), one whose bytes are not UTF-8 JSON text (422, like any other
    malformed JSON) or one holding text no field may store (422); None for a body the routes may read."""
    charset = _media_type(content_type)[1].get("charset", "utf-8").lower() if content_type else "utf-8"
    if charset not in ("utf-8", "utf8"):
        return problem_response(
            415,
            title="Unsupported media type",
            slug="unsupported-media-type",
            detail=f"JSON is accepted in UTF-8 only (RFC 8259), not {charset[:40]}.",
            instance=path,
        )
    if body and (_RAW_CONTROL.search(body) or not _is_utf8(body)):
        return problem_response(
            422,
            title="The request is not valid",
            slug="validation-error",
            detail="The body is not UTF-8 JSON text: JSON is accepted in UTF-8 only (RFC 8259).",
            instance=path,
            errors=[FieldError(field="body", message="not UTF-8 JSON text")],
        )
    if unstorable := _unstorable_text(body):
        return problem_response(
            422,
            title="The request is not valid",
            slug="validation-error",
            detail=f"The body holds {unstorable}, which no field accepts.",
            instance=path,
            errors=[FieldError(field="body", message=unstorable)],
        )
    return None


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _body_limit(path: str, settings: Settings) -> int:
    if path.endswith(("/documents", "/pool-imports")):  # uploads: evidence, pool files
        return settings.max_upload_bytes + 64 * 1024
    return MAX_BODY_BYTES


def _unstorable_text(body: bytes) -> str | None:
    """What in a JSON body no field may hold - a NUL character or an unpaired surrogate - or None.

    JSON allows both; PostgreSQL text refuses NUL and UTF-8 cannot encode a lone surrogate, so a value
    carrying one would fail wherever it is stored - in a workflow activity, over and over. Every domain's
    bodies are refused here, before they reach a route."""
    if not any(escape in body.lower() for escape in _SUSPECT_ESCAPES):
        return None
    try:
        pending: list[Any] = [json.loads(body)]
    except (ValueError, RecursionError):
        return None  # not JSON: the route answers that itself
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            if "\x00" in value:
                return "a NUL character"
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "an unpaired UTF-16 surrogate"
    return None
