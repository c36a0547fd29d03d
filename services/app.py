"""create_app(): the FastAPI application, its lifespan, middleware and health endpoints."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.auth import TokenVerifier
from services.config import Settings, get_settings
from services.deps import ResourcesDep, StrictQuery
from services.errors import FieldError, install_problem_handlers, internal_error, problem_response
from services.logging import configure_logging
from services.ratelimit import WriteLimiter
from services.resources import Resources

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
    factory = resources_factory or Resources.build

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resources = await factory(settings)
        app.state.resources = resources
        app.state.verifier = TokenVerifier(settings, resources.http)
        app.state.write_limiter = WriteLimiter(settings.write_rate_per_minute)
        try:
            yield
        finally:
            await resources.close()

    app = FastAPI(
        title="giantflow",
        version="0.1.0",
        lifespan=lifespan,
        description="Graded SME cultivation: applications, reviews, recognitions and benefits.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    install_problem_handlers(app)

    @app.middleware("http")
    async def request_context(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if len(request_id) > 100 or not request_id.isprintable():
            request_id = uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > _body_limit(request, settings)):
            response: Response = problem_response(
                413,
                title="Payload too large",
                slug="payload-too-large",
                detail=f"The request body is over the limit of {_body_limit(request, settings)} bytes.",
                instance=request.url.path,
            )
        elif unstorable := await _unstorable_text(request):
            response = problem_response(
                422,
                title="The request is not valid",
                slug="validation-error",
                detail=f"The body holds {unstorable}, which no field accepts.",
                instance=request.url.path,
                errors=[FieldError(field="body", message=unstorable)],
            )
        else:
            try:
                response = await call_next(request)
            except Exception:
                # Answered here rather than by Starlette's outermost error middleware, so a 500 carries the
                # request id and the security headers too.
                response = internal_error(request)
        response.headers["X-Request-ID"] = request_id
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path not in DOCS_PATHS:
            response.headers.setdefault("Content-Security-Policy", API_CSP)
        log.info(
            "request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    app.include_router(health_router)
    from services.routes import api_router

    app.include_router(api_router, prefix="/api/v1", dependencies=[StrictQuery])
    return app


def _body_limit(request: Request, settings: Settings) -> int:
    if request.url.path.endswith("/documents"):
        return settings.max_upload_bytes + 64 * 1024
    return MAX_BODY_BYTES


async def _unstorable_text(request: Request) -> str | None:
    """What in a JSON body no field may hold - a NUL character or an unpaired surrogate - or None.

    JSON allows both; PostgreSQL text refuses NUL and UTF-8 cannot encode a lone surrogate, so a value
    carrying one would fail wherever it is stored - in a workflow activity, over and over. Every domain's
    bodies are refused here, before they reach a route."""
    if request.method not in ("POST", "PUT", "PATCH") or "json" not in request.headers.get(
        "content-type", ""
    ):
        return None
    body = await request.body()
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
