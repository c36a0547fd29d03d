"""Signing in and out of the console, and the language switch.

In production: OpenID Connect, authorization code with PKCE (Authlib's client) against the configured issuer;
the access token it returns is verified exactly as an API bearer token is (``TokenVerifier``), so a staff
member's role and scope claims mean in the console what they mean on the API. In development only,
``/console/login`` also offers a form to sign in as any role and scope; elsewhere that form is a 404."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from services.auth import CurrentUser, TokenVerifier
from services.config import Environment, Settings
from services.console import session as sessions
from services.console.web import (
    LANG_COOKIE,
    LOCALES,
    STAFF,
    ConsoleRoute,
    error_page,
    gettext_for,
    home_for,
    render,
    safe_next,
)
from services.errors import NotFound, Unauthorized
from services.resources import Resources

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
LOGIN_CSRF_COOKIE = "giantflow_login_csrf"
OIDC_COOKIE = "giantflow_oidc"
OIDC_LIFETIME = timedelta(minutes=10)
NextQuery = Annotated[str | None, Query(alias="next", max_length=2000)]


def _resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


def _development(settings: Settings) -> bool:
    return settings.environment is Environment.development


def _signed_in(request: Request, user: CurrentUser, target: str) -> Response:
    settings = _resources(request).settings
    if user.role not in STAFF:
        gettext = gettext_for(request)
        return error_page(
            request, 403, gettext("The console is for reviewers, finance staff and administrators.")
        )
    value, _ = sessions.encode(settings, user)
    response = RedirectResponse(safe_next(target, home_for(user.role)), status_code=303)
    response.set_cookie(
        sessions.COOKIE,
        value,
        max_age=int(sessions.LIFETIME.total_seconds()),
        **sessions.cookie_options(settings),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return response


@router.get("/console/", name="console_home", response_class=RedirectResponse)
async def home(request: Request) -> Response:
    found = sessions.optional_session(request)
    if found is None:
        return RedirectResponse("/console/login", status_code=303)
    return RedirectResponse(home_for(found.user.role), status_code=303)


@router.get("/console", include_in_schema=False, response_class=RedirectResponse)
async def home_without_slash() -> Response:
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/login")
async def login_page(request: Request, next_: NextQuery = None) -> Response:
    settings = _resources(request).settings
    if not _development(settings):
        if settings.oidc_client_id and settings.oidc_issuer and settings.console_secret:
            return await _oidc_start(request, next_)
        gettext = gettext_for(request)
        return error_page(request, 503, gettext("Sign-in is not configured for this console."))
    return _login_form(request, next_ or "", {}, {})


def _login_form(
    request: Request, next_: str, values: dict[str, str], errors: dict[str, str], status: int = 200
) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        {
            "next": next_,
            "values": values,
            "errors": errors,
            "login_csrf": token,
            "roles": [r.value for r in STAFF],
        },
        status=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=3600, **sessions.cookie_options(_resources(request).settings)
    )
    return response


@router.post("/console/login")
async def login(
    request: Request,
    role: Annotated[str, Form(max_length=20)] = "",
    user_id: Annotated[str, Form(max_length=200)] = "",
    level: Annotated[str, Form(max_length=20)] = "",
    region: Annotated[str, Form(max_length=6)] = "",
    uscc: Annotated[str, Form(max_length=18)] = "",
    groups: Annotated[str, Form(max_length=2000)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next_: Annotated[str, Form(alias="next", max_length=2000)] = "",
) -> Response:
    """Development only: sign in as any role and scope (404 in any other environment)."""
    settings = _resources(request).settings
    if not _development(settings):
        raise NotFound("No such page.")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not expected or not secrets.compare_digest(csrf_token, expected):
        raise sessions.CsrfRefused("The sign-in form did not carry its token.")
    values = {
        "role": role,
        "user_id": user_id,
        "level": level,
        "region": region,
        "uscc": uscc,
        "groups": groups,
    }
    claims: dict[str, Any] = {
        "sub": user_id.strip(),
        "role": role,
        "level": level or None,
        "region": region.strip() or None,
        "uscc": uscc.strip() or None,
        "groups": tuple(g.strip() for g in groups.split(",") if g.strip()),
    }
    try:
        user = CurrentUser.model_validate(claims)
    except ValidationError as exc:
        return _login_form(request, next_, values, _claim_errors(exc), status=422)
    return _signed_in(request, user, next_)


def _claim_errors(exc: ValidationError) -> dict[str, str]:
    """The form's fields with what is wrong with each (a claim the role needs is reported on its field)."""
    fields = {
        "sub": "user_id",
        "role": "role",
        "level": "level",
        "region": "region",
        "uscc": "uscc",
        "groups": "groups",
    }
    errors: dict[str, str] = {}
    for error in exc.errors():
        where = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        if where in fields:
            errors[fields[where]] = message
        elif "level" in message and "region" in message:
            errors["level"] = errors["region"] = message
        elif "uscc" in message:
            errors["uscc"] = message
        else:
            errors["role"] = message
    return errors


@router.post("/console/logout")
async def logout(request: Request, _: sessions.FormSessionDep) -> Response:
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, **sessions.cookie_options(_resources(request).settings))
    return response


@router.get("/console/lang", response_class=RedirectResponse)
async def switch_language(
    request: Request, to: Annotated[str, Query(max_length=10)], next_: NextQuery = None
) -> Response:
    """The language switch on every page: remembered in a cookie for a year."""
    response = RedirectResponse(safe_next(next_, "/console/"), status_code=303)
    if to in LOCALES:
        settings = _resources(request).settings
        response.set_cookie(LANG_COOKIE, to, max_age=365 * 24 * 3600, **sessions.cookie_options(settings))
    return response


# --- OpenID Connect --------------------------------------------------------------------------------------


_PROVIDERS: dict[str, dict[str, Any]] = {}


async def _provider(resources: Resources) -> dict[str, Any]:
    """The issuer's OpenID configuration (its endpoints), fetched once per process."""
    issuer = str(resources.settings.oidc_issuer).rstrip("/")
    if issuer not in _PROVIDERS:
        reply = await resources.http.get(f"{issuer}/.well-known/openid-configuration", timeout=5.0)
        reply.raise_for_status()
        _PROVIDERS[issuer] = dict(reply.json())
    return _PROVIDERS[issuer]


def _callback_url(settings: Settings) -> str:
    return f"{settings.public_url}/console/auth/callback"


async def _oidc_start(request: Request, next_: str | None) -> Response:
    resources = _resources(request)
    settings = resources.settings
    provider = await _provider(resources)
    verifier, state = generate_token(64), generate_token(32)
    url = add_params_to_uri(
        provider["authorization_endpoint"],
        [
            ("response_type", "code"),
            ("client_id", str(settings.oidc_client_id)),
            ("redirect_uri", _callback_url(settings)),
            ("scope", "openid profile"),
            ("state", state),
            ("code_challenge", create_s256_code_challenge(verifier)),
            ("code_challenge_method", "S256"),
        ],
    )
    pending = jwt.encode(
        {
            "state": state,
            "verifier": verifier,
            "next": safe_next(next_, ""),
            "exp": datetime.now(UTC) + OIDC_LIFETIME,
            "aud": "giantflow-console-oidc",
        },
        sessions.signing_key(settings),
        algorithm=sessions.ALGORITHM,
    )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE, pending, max_age=int(OIDC_LIFETIME.total_seconds()), **sessions.cookie_options(settings)
    )
    return response


@router.get("/console/auth/callback")
async def oidc_callback(
    request: Request,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    state: Annotated[str | None, Query(max_length=500)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    resources = _resources(request)
    settings = resources.settings
    gettext = gettext_for(request)
    if not (settings.oidc_client_id and settings.oidc_issuer and settings.console_secret):
        raise NotFound("No such page.")
    try:
        pending = jwt.decode(
            request.cookies.get(OIDC_COOKIE, ""),
            sessions.signing_key(settings),
            algorithms=[sessions.ALGORITHM],
            audience="giantflow-console-oidc",
        )
    except jwt.PyJWTError:
        pending = None
    if (
        error
        or not code
        or pending is None
        or not state
        or not secrets.compare_digest(state, pending["state"])
    ):
        return error_page(
            request, 400, gettext("Sign-in did not complete. Start again from the sign-in page.")
        )
    provider = await _provider(resources)
    secret = settings.oidc_client_secret
    reply = await resources.http.post(
        provider["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": _callback_url(settings),
            "client_id": str(settings.oidc_client_id),
            "code_verifier": pending["verifier"],
        },
        auth=httpx.BasicAuth(str(settings.oidc_client_id), secret.get_secret_value())
        if secret
        else httpx.USE_CLIENT_DEFAULT,
        timeout=10.0,
    )
    access_token = reply.json().get("access_token") if reply.status_code == 200 else None
    if not isinstance(access_token, str):
        return error_page(request, 401, gettext("The identity provider did not accept this sign-in."))
    verifier: TokenVerifier = request.app.state.verifier
    try:
        user = await verifier.verify(access_token)
    except Unauthorized as exc:
        return error_page(request, 401, exc.detail)
    response = _signed_in(request, user, pending.get("next") or "")
    response.delete_cookie(OIDC_COOKIE, **sessions.cookie_options(settings))
    return response
