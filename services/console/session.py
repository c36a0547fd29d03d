"""The console's signed-in session: a cookie holding the caller's claims (the same ones an API token carries,
so the same ``CurrentUser`` and the same access rules), its CSRF token and its expiry, signed with the
console's key (``Settings.console_signing_key``). HttpOnly, SameSite=Lax, and Secure outside development.

Every form the console renders carries the session's CSRF token (a hidden ``csrf_token`` field; htmx sends it
as ``X-CSRF-Token`` too), and every POST is refused without it (``require_csrf``)."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from pydantic import ValidationError

from services.auth import CurrentUser
from services.config import Environment, Settings

COOKIE = "giantflow_console"
LIFETIME = timedelta(hours=8)
# A session cookie is read back by this service alone; the audience keeps an API token, signed with another
# key anyway, from ever passing for one.
AUDIENCE = "giantflow-console"
ALGORITHM = "HS256"


class SignedOut(Exception):
    """No valid session: the page answers with the sign-in page (or a redirect to it)."""


class CsrfRefused(Exception):
    """A form sent without this session's CSRF token (or from another origin)."""


@dataclass(frozen=True)
class ConsoleSession:
    user: CurrentUser
    csrf: str
    expires: datetime


def encode(
    settings: Settings, user: CurrentUser, *, now: datetime | None = None
) -> tuple[str, ConsoleSession]:
    """A new session for ``user``: the cookie value and what it holds."""
    now = now or datetime.now(UTC)
    session = ConsoleSession(user=user, csrf=secrets.token_urlsafe(32), expires=now + LIFETIME)
    claims: dict[str, Any] = {
        **user.model_dump(mode="json", exclude_none=True),
        "aud": AUDIENCE,
        "iat": now,
        "exp": session.expires,
        "csrf": session.csrf,
    }
    return jwt.encode(claims, signing_key(settings), algorithm=ALGORITHM), session


def decode(settings: Settings, value: str) -> ConsoleSession:
    try:
        claims = jwt.decode(
            value,
            signing_key(settings),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "csrf"]},
        )
        user = CurrentUser.model_validate(claims)
    except (jwt.PyJWTError, ValidationError) as exc:
        raise SignedOut("The session is not valid.") from exc
    return ConsoleSession(
        user=user, csrf=str(claims["csrf"]), expires=datetime.fromtimestamp(int(claims["exp"]), UTC)
    )


# --- what the settings make of a session: its signing key and its cookie ---------------------------------


def signing_key(settings: Settings) -> bytes:
    key = settings.console_signing_key
    if key is None:
        raise SignedOut("The console has no signing key (GIANTFLOW_CONSOLE_SECRET).")
    return key


def secure_cookies(settings: Settings) -> bool:
    return settings.environment is not Environment.development


def cookie_options(settings: Settings) -> dict[str, Any]:
    return {
        "httponly": True,
        "secure": secure_cookies(settings),
        "samesite": "lax",
        "path": "/console",
    }


def current_session(request: Request) -> ConsoleSession:
    """The signed-in session of a console request; SignedOut when there is none."""
    cached = getattr(request.state, "console_session", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    value = request.cookies.get(COOKIE)
    if not value:
        raise SignedOut("Not signed in.")
    session = decode(request.app.state.resources.settings, value)
    request.state.console_session = session
    return session


def optional_session(request: Request) -> ConsoleSession | None:
    try:
        return current_session(request)
    except SignedOut:
        return None


async def _session_dep(request: Request) -> ConsoleSession:
    return current_session(request)


SessionUserDep = Annotated[ConsoleSession, Depends(_session_dep)]


def _same_origin(request: Request) -> bool:
    """A browser names the page a form was sent from in ``Origin`` (or at least ``Referer``); a request that
    names another origin is refused whatever it carries. One that names none (an old client) is judged by its
    token alone."""
    sent_from = request.headers.get("origin") or request.headers.get("referer")
    if not sent_from or sent_from == "null":
        return sent_from is None
    own = f"{request.url.scheme}://{request.url.netloc}"
    return sent_from == own or sent_from.startswith(own + "/")


async def require_csrf(request: Request) -> ConsoleSession:
    """The session of a POST whose form (or ``X-CSRF-Token`` header) carries its CSRF token, sent from a page
    of this origin; CsrfRefused otherwise."""
    session = current_session(request)
    sent = request.headers.get("x-csrf-token")
    if sent is None:
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent, session.csrf) or not _same_origin(request):
        raise CsrfRefused("The form did not carry this session's token.")
    return session


FormSessionDep = Annotated[ConsoleSession, Depends(require_csrf)]
