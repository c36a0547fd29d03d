"""RFC 9457 problem details: domain exceptions carry status and title; one set of handlers renders them."""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, ClassVar

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from services.methods import MethodsLayer, PathMethods, allow_header, route_path

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://giantflow.dev/problems/"
# FastAPI's HTTPException (400) for a body it could not decode at all.
BODY_PARSE_ERROR = "There was an error parsing the body"
# PostgreSQL class 22 "data exception" (NUL in text, numeric or datetime out of range, ...): a value the
# client sent that the database refuses to store or compare is bad input, never a 500.
DATA_EXCEPTION_CLASS = "22"

log = structlog.get_logger(__name__)


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """The problem document every error answers with."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


class GiantflowError(Exception):
    """Base of every domain error. Subclasses set status, slug and title."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers


class BadRequest(GiantflowError):
    status, slug, title = 400, "bad-request", "Bad request"


class Unauthorized(GiantflowError):
    status, slug, title = 401, "unauthorized", "Authentication required"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="giantflow"'})


class Forbidden(GiantflowError):
    status, slug, title = 403, "forbidden", "Not allowed"


class NotFound(GiantflowError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(GiantflowError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class PayloadTooLarge(GiantflowError):
    status, slug, title = 413, "payload-too-large", "Payload too large"


class UnsupportedMediaType(GiantflowError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class Unprocessable(GiantflowError):
    status, slug, title = 422, "validation-error", "The request is not valid"


class ServiceUnavailable(GiantflowError):
    status, slug, title = 503, "service-unavailable", "A dependency is unavailable"


def problem_response(
    status: int,
    *,
    title: str,
    detail: str,
    slug: str,
    instance: str | None = None,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=PROBLEM_BASE + slug, title=title, status=status, detail=detail, instance=instance, errors=errors
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def validation_errors(raw: Sequence[Any]) -> list[FieldError]:
    return [
        FieldError(field=_field_name(e.get("loc", ())), message=str(e.get("msg", "invalid"))) for e in raw
    ]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each listed status documented as a problem."""
    return {
        s: {
            "model": Problem,
            "description": HTTPStatus(s).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for s in statuses
    }


READ_ERRORS = problem_responses(401, 403, 422)
"""`responses=` of a list (a filter the caller may not use is a 403, a malformed one a 422)."""
READ_ONE_ERRORS = problem_responses(401, 403, 404, 422)
"""`responses=` of a read of one resource by its id or key."""


def internal_error(request: Request) -> JSONResponse:
    """The 500 problem for an exception nothing else handled, logged with its traceback (never the request's
    headers or body). Call it inside the `except` block."""
    log.exception("unhandled_error", method=request.method, path=request.url.path)
    return problem_response(
        500,
        title="Internal server error",
        slug="internal",
        detail="The server could not complete the request; it has been logged.",
        instance=request.url.path,
    )


def temporal_unreachable(exc: BaseException) -> bool:
    """Temporal cannot be reached: an RPC that found no server, or the lazy client failing to connect
    (temporalio raises a plain RuntimeError for that, not an RPCError)."""
    if isinstance(exc, RPCError):
        return exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, RuntimeError) and str(exc).startswith("Failed client connect")


def install_problem_handlers(app: FastAPI) -> None:
    # Every method a path serves, for the 405's `Allow`; HEAD and OPTIONS answered (services/methods.py).
    path_methods = PathMethods(app)
    app.add_middleware(MethodsLayer, methods=path_methods)

    async def domain_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GiantflowError)
        return problem_response(
            exc.status,
            title=exc.title,
            detail=exc.detail,
            slug=exc.slug,
            instance=request.url.path,
            errors=exc.errors,
            headers=exc.headers,
        )

    async def request_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = validation_errors(exc.errors())
        return problem_response(
            422,
            title="The request is not valid",
            slug="validation-error",
            detail="; ".join(f"{e.field}: {e.message}" for e in errors),
            instance=request.url.path,
            errors=errors,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        status = exc.status_code
        if status == 400:
            # The framework's own 400s are all bodies it could not read (not UTF-8, broken multipart);
            # our code raises BadRequest. Bad JSON is a 422 already, so an unreadable body is one too.
            reason = "" if exc.detail in (None, BODY_PARSE_ERROR) else f" ({exc.detail})"
            return problem_response(
                422,
                title="The request is not valid",
                slug="validation-error",
                detail=f"The request body could not be read{reason}: send UTF-8 JSON, multipart for uploads.",
                instance=request.url.path,
                errors=[FieldError(field="body", message="unreadable body")],
            )
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        detail = exc.detail if isinstance(exc.detail, str) else phrase
        if status == 404 and detail == "Not Found":
            detail = f"No resource at {request.url.path}"
        headers = dict(exc.headers) if exc.headers else None
        if status == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
            # The route that raised it names only its own methods; the path may have other routes.
            allowed = path_methods.allowed(route_path(request.scope))
            if allowed:
                headers = {**(headers or {}), "Allow": allow_header(allowed)}
        return problem_response(
            status,
            title=phrase,
            detail=detail,
            slug=phrase.lower().replace(" ", "-"),
            instance=request.url.path,
            headers=headers,
        )

    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database_unavailable", path=request.url.path, error=type(exc).__name__)
        return problem_response(
            503,
            title="A dependency is unavailable",
            slug="service-unavailable",
            detail="The database is unavailable; nothing was changed. Try again shortly.",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    async def database_refused_value(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DBAPIError)
        if database_gone(exc):  # PostgreSQL crashed or restarted under the statement: retry, not a bug
            return await database_unavailable(request, exc)
        if refused_value(exc):
            log.warning("database_refused_value", path=request.url.path, sqlstate=_sqlstate(exc))
            return problem_response(
                422,
                title="The request is not valid",
                slug="validation-error",
                detail="A value in the request cannot be stored or searched for (e.g. a NUL character "
                "or a number out of range).",
                instance=request.url.path,
                errors=[FieldError(field="request", message="a value the database refuses")],
            )
        return await unexpected(request, exc)

    async def database_driver_error(request: Request, exc: Exception) -> JSONResponse:
        # asyncpg's own error, not wrapped by SQLAlchemy: one raised while a new connection was being made
        # (SQLAlchemy wraps only what a statement raises) - "the database system is starting up" (57P03)
        # right after PostgreSQL restarts is a 503 like any other outage, never a 500.
        if unavailable_state(getattr(exc, "sqlstate", None) or ""):
            return await database_unavailable(request, exc)
        return await unexpected(request, exc)

    async def workflow_engine_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not temporal_unreachable(exc):
            return internal_error(request)
        log.warning("temporal_unavailable", path=request.url.path, error=type(exc).__name__)
        return problem_response(
            503,
            title="A dependency is unavailable",
            slug="service-unavailable",
            detail="The workflow engine is unavailable; try again shortly.",
            instance=request.url.path,
            headers={"Retry-After": "5"},
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(request)

    app.add_exception_handler(GiantflowError, domain_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for error in (OperationalError, InterfaceError, ConnectionError, TimeoutError):
        app.add_exception_handler(error, database_unavailable)
    app.add_exception_handler(DBAPIError, database_refused_value)
    app.add_exception_handler(asyncpg.PostgresError, database_driver_error)
    app.add_exception_handler(RPCError, workflow_engine_unavailable)
    app.add_exception_handler(RuntimeError, workflow_engine_unavailable)
    app.add_exception_handler(Exception, unexpected)


def refused_value(exc: BaseException) -> bool:
    """PostgreSQL refused a value itself (SQLSTATE class 22: a NUL byte, a number out of range...):
    asking again with the same value can never succeed."""
    return isinstance(exc, DBAPIError) and _sqlstate(exc).startswith(DATA_EXCEPTION_CLASS)


def database_gone(exc: BaseException) -> bool:
    """The connection died under a statement (the server crashed, restarted or cut it): SQLAlchemy marks the
    error `connection_invalidated` (asyncpg's "connection was closed in the middle of operation" is a plain
    DBAPIError), or PostgreSQL says so itself (SQLSTATE class 08, or 57P: shutting down, starting up)."""
    if not isinstance(exc, DBAPIError):
        return False
    return exc.connection_invalidated or unavailable_state(_sqlstate(exc))


def unavailable_state(sqlstate: str) -> bool:
    """A SQLSTATE that says the server is away for now, not that the request is wrong: class 08 (connection
    exception) or 57P (shutting down, starting up, cannot connect now)."""
    return sqlstate.startswith(("08", "57P"))


def _sqlstate(exc: DBAPIError) -> str:
    """The SQLSTATE of the driver error under a SQLAlchemy DBAPIError ("" when there is none)."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return code if isinstance(code, str) else ""
