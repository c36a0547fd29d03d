"""FastAPI dependencies, as Annotated aliases: the request's session, Temporal, the current user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Depends, Request, Response, params
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from services.auth import CurrentUser, Role, TokenVerifier
from services.config import Settings
from services.errors import FieldError, Forbidden, Unauthorized, Unprocessable
from services.pagination import CursorQuery, LimitQuery
from services.resources import Resources


async def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings_dep(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """One session per request, committed once when the route returns, before the response is sent."""
    async with resources.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


# scope="function": the commit runs when the route returns and BEFORE the response is sent, so a client
# never holds an answer for something that was not committed (FastAPI's default for `yield` dependencies
# closes them after the response).
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """A read-only session that stays open while a streamed response is sent; it never commits."""
    async with resources.sessionmaker() as session:
        try:
            yield session
        finally:
            await session.rollback()


StreamingReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="request")]


async def get_temporal(resources: ResourcesDep) -> Client:
    return resources.temporal


TemporalDep = Annotated[Client, Depends(get_temporal)]


EXPERT_PATHS = ("/api/v1/panel-assignments", "/api/v1/experts")


class BearerUser(HTTPBearer):
    """The caller, from the bearer token: one dependency that is also the OpenAPI security scheme (rather than
    an HTTPBearer dependency feeding another one - every request resolves it)."""

    async def __call__(self, request: Request) -> CurrentUser:  # type: ignore[override]
        credentials: HTTPAuthorizationCredentials | None = await super().__call__(request)
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise Unauthorized("A bearer token is required.")
        verifier: TokenVerifier = request.app.state.verifier
        user = await verifier.verify(credentials.credentials)
        if user.role is Role.expert and not request.url.path.startswith(EXPERT_PATHS):
            # An expert judges files blind: its token opens the panel endpoints and nothing else (no
            # enterprise, application, document or feed that could name the enterprises it scores).
            raise Forbidden("An expert's token is good for the expert panel endpoints only.")
        return user


get_current_user = BearerUser(
    scheme_name="HTTPBearer",
    auto_error=False,
    description="A JWT: HS256 in development, RS256 from OIDC in production",
)
CurrentUserDep = Annotated[CurrentUser, Depends(get_current_user)]


def remembered_user(request: Request) -> CurrentUser | None:
    """The caller of a request whose bearer token this API has verified and still remembers; None otherwise
    (the ordinary dependencies then authenticate it). For the read shortcuts that answer before them."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.remembered(token)


class Listing:
    """What every list route takes besides its filters: the request's session, the caller and the page asked
    for (``page``: ``cursor`` and ``limit``)."""

    def __init__(
        self, user: CurrentUserDep, session: SessionDep, cursor: CursorQuery = None, limit: LimitQuery = 50
    ) -> None:
        self.session, self.user = session, user
        self.page: dict[str, Any] = {"cursor": cursor, "limit": limit}


ListingDep = Annotated[Listing, Depends()]


def _repeatable(annotation: Any) -> bool:
    """Whether a query parameter of this type may be given more than once (a list, or an optional list)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return any(_repeatable(arg) for arg in get_args(annotation) if arg is not type(None))
    return origin in (list, set, tuple, frozenset) or annotation in (list, set, tuple, frozenset)


def _declared_query(route: APIRoute) -> dict[str, bool]:
    """The route's query parameters by name (alias): name -> may repeat."""
    return {
        param.alias: _repeatable(param.field_info.annotation)
        for param in get_flat_params(route.dependant)
        if isinstance(param.field_info, params.Query)
    }


def reject_unknown_query(request: Request, declared: dict[str, bool]) -> None:
    """Query parameters are exactly those documented: a misspelled filter is a 422, never silently ignored
    (an export that drops `?stauts=failed` would hand out every row), and a scalar is given at most once."""
    errors = []
    for name in dict.fromkeys(request.query_params.keys()):
        if name not in declared:
            errors.append(FieldError(field=name[:100], message="unknown query parameter"))
        elif not declared[name] and len(request.query_params.getlist(name)) > 1:
            errors.append(FieldError(field=name, message="given more than once"))
    if errors:
        raise Unprocessable(
            "The query has parameters this operation does not take: "
            + ", ".join(f"{e.field} ({e.message})" for e in errors),
            errors=errors,
        )


class StrictQueryRoute(APIRoute):
    """The route class of every API router: the query is checked (``reject_unknown_query``) before anything
    else - authentication included - against the parameters the route declares, worked out once."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        declared: dict[str, bool] | None = None

        async def strict(request: Request) -> Response:
            nonlocal declared
            if request.scope.get("query_string"):
                if declared is None:
                    declared = _declared_query(self)
                reject_unknown_query(request, declared)
            return await handler(request)

        return strict
