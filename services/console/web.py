"""What every console page shares: the Jinja2 templates, the language (zh-CN or English, from a cookie the
switch sets, else ``Accept-Language``) with its gettext catalogue, money and time formats, the navigation a
role sees (with the caller's unread notifications), and the route class that turns what a service refuses
into a page in words."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from babel import Locale
from babel.support import NullTranslations
from fastapi import Depends, Request, Response
from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from services.auth import Role
from services.console.session import (
    ConsoleSession,
    CsrfRefused,
    FormSessionDep,
    SignedOut,
    optional_session,
)
from services.deps import SessionDep
from services.errors import Conflict, FieldError, GiantflowError, Unprocessable, validation_errors
from services.i18n import catalogue
from services.notifications import service as notifications
from services.ratelimit import WriteLimiter

HERE = Path(__file__).resolve().parent
LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"
LANG_COOKIE = "giantflow_lang"
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Pages may be framed by the console itself (evidence shown inline) and load nothing from anywhere else.
CONSOLE_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'self'; "
    "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'"
)
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP, "X-Frame-Options": "SAMEORIGIN"}


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str  # an English msgid, translated when shown
    roles: frozenset[Role]
    counts_unread: bool = False  # shows the caller's unread notifications beside the label


STAFF = frozenset({Role.reviewer, Role.finance, Role.admin})
# The top navigation: each page once, shown to the roles its services serve.
NAV: Sequence[NavItem] = (
    NavItem("/console/reviews", "Review queue", frozenset({Role.reviewer, Role.admin})),
    NavItem("/console/notices", "Public notice", frozenset({Role.reviewer, Role.admin})),
    NavItem("/console/payouts", "Payouts", frozenset({Role.finance, Role.admin})),
    NavItem("/console/disbursements", "Disbursements", frozenset({Role.finance, Role.admin})),
    NavItem("/console/credit", "Credit and funds", frozenset({Role.finance, Role.admin})),
    NavItem("/console/programs", "Programs", frozenset({Role.admin})),
    NavItem("/console/recognitions", "Recognitions", frozenset({Role.admin})),
    NavItem("/console/reports", "Reports", frozenset({Role.admin})),
    NavItem("/console/notifications", "Notifications", STAFF, counts_unread=True),
)


def home_for(role: Role) -> str:
    """The first page a role lands on after signing in."""
    return next(item.path for item in NAV if role in item.roles)


async def count_unread(request: Request, db: SessionDep) -> None:
    """The navigation's badge: how many of the signed-in staff member's notifications are unread, as the feed
    counts them (up to ``UNREAD_COUNTED``), read in the request's database session before the page is built.
    Every console page depends on it (``ConsoleRoute``); without a staff session it reads nothing."""
    console = optional_session(request)
    if console is None or console.user.role not in STAFF:
        return
    request.state.unread_notifications = await notifications.unread_count(db, user=console.user)


def unread_badge(request: Request) -> str | None:
    """The badge's words (``3``, ``1000+``); None when nothing is unread or nothing was counted."""
    count: int = getattr(request.state, "unread_notifications", 0)
    if count >= notifications.UNREAD_COUNTED:
        return f"{notifications.UNREAD_COUNTED}+"
    return str(count) if count else None


# --- language --------------------------------------------------------------------------------------------


@cache
def translations(locale: str) -> NullTranslations:
    """The gettext catalogue of a locale, compiled in memory from the ``.po`` files of its folder (one per
    area of the console; no build step)."""
    language = locale.replace("-", "_")
    return catalogue(HERE / "locale" / language / "LC_MESSAGES", language)


def negotiate(request: Request) -> str:
    chosen = request.cookies.get(LANG_COOKIE)
    if chosen in LOCALES:
        return chosen
    wanted = [
        part.split(";")[0].strip().replace("_", "-")
        for part in request.headers.get("accept-language", "").split(",")
        if part.strip()
    ]
    found = Locale.negotiate(wanted, [tag.replace("-", "_") for tag in LOCALES], sep="-")
    if found is None:
        return DEFAULT_LOCALE
    return "zh-CN" if found.language == "zh" else "en"


def gettext_for(request: Request) -> Callable[[str], str]:
    locale = getattr(request.state, "locale", None) or negotiate(request)
    request.state.locale = locale
    return translations(locale).gettext


# --- formats ---------------------------------------------------------------------------------------------


def money(value: Decimal | str | None) -> str:
    """``¥3,000,000.00`` in both languages: the amount exactly as stored, grouped by thousands."""
    if value is None or value == "":
        return ""
    amount = Decimal(value)
    sign = "-" if amount < 0 else ""
    return f"{sign}¥{abs(amount):,.2f}"


def when(value: datetime | date | str | None, *, with_time: bool = True) -> str:
    """A time in Asia/Shanghai (``2026-12-01 18:30``), a date as it is."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        local = value.astimezone(SHANGHAI)
        return local.strftime("%Y-%m-%d %H:%M") if with_time else local.strftime("%Y-%m-%d")
    return value.isoformat()


def full_path(request: Request) -> str:
    """The path a request asked for with its query (``/console/payouts?kind=drawdown``)."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def safe_next(target: str | None, fallback: str) -> str:
    """A redirect target inside the console only (never another host)."""
    if not target:
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or "\\" in target:
        return fallback
    return target


# --- templates -------------------------------------------------------------------------------------------


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money
    env.filters["when"] = when
    env.filters["day"] = lambda value: when(value, with_time=False)
    env.filters["urlquote"] = lambda value: quote(str(value), safe="")
    return env


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    session: ConsoleSession | None = None,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page: the template with what every page shows (navigation for the role, language switch, the
    CSRF token forms carry) around ``context``."""
    gettext = gettext_for(request)
    session = session or optional_session(request)
    role = session.user.role if session else None
    page = (
        environment()
        .get_template(template)
        .render(
            {
                "_": gettext,
                "request": request,
                "locale": request.state.locale,
                "locales": LOCALES,
                "session": session,
                "user": session.user if session else None,
                "csrf": session.csrf if session else "",
                "nav": [item for item in NAV if role in item.roles],
                "unread": unread_badge(request),
                "here": request.url.path,
                "here_full": full_path(request),
                **(context or {}),
            }
        )
    )
    return HTMLResponse(page, status_code=status, headers={**CONSOLE_HEADERS, **(headers or {})})


def error_page(
    request: Request,
    status: int,
    message: str,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    context = {"status": status, "message": message, "errors": errors}
    return render(request, "error.html", context, status=status, headers=headers)


def field_errors(errors: Sequence[FieldError]) -> dict[str, str]:
    """A refusal's errors by field, to show next to each (the field's last path part: ``body.reason`` is
    the form's ``reason``)."""
    return {error.field.rsplit(".", 1)[-1]: error.message for error in errors}


def sign_in_redirect(request: Request) -> Response:
    target = full_path(request)
    if request.method != "GET":
        target = request.headers.get("referer") or "/console/"
    location = "/console/login?next=" + quote(safe_next(target, "/console/"), safe="")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


# --- forms that write -------------------------------------------------------------------------------------


class WriteFields(BaseModel):
    """The field every console form that writes carries besides its own (``Annotated[..., Form()]``): the
    idempotency key made when the page was rendered, so that a form sent twice acts once."""

    idempotency_key: str = Field("", max_length=255)

    @property
    def key(self) -> str | None:
        """The form's idempotency key; None when it sent none."""
        return self.idempotency_key.strip() or None


class ReturningFields(WriteFields):
    """A form that goes back where it came from afterwards (``next``, not checked yet: ``safe_next`` it)."""

    next_: str = Field("", alias="next", max_length=2000)


async def limited_form_session(request: Request, session: FormSessionDep) -> ConsoleSession:
    """The form's session, its caller counted against the API's write rate limit."""
    limiter: WriteLimiter = request.app.state.write_limiter
    await limiter.hit(session.user.sub)
    return session


class WriteForm:
    """What every console form that writes takes besides its fields, as the API's write routes take it: the
    signed-in session (the form carried its CSRF token), the request's database session, and the caller
    counted against the API's write rate limit."""

    def __init__(
        self, session: Annotated[ConsoleSession, Depends(limited_form_session)], db: SessionDep
    ) -> None:
        self.session, self.user, self.db = session, session.user, db

    async def refusal(self, action: Awaitable[object]) -> Unprocessable | Conflict | None:
        """Runs the form's action; what the service refuses in a way the form can show next to its fields
        (not valid, a conflict) is rolled back and returned, anything else raised. None: done."""
        try:
            await action
        except (Unprocessable, Conflict) as exc:
            await self.db.rollback()  # nothing half-written is committed
            return exc
        return None


def refused_fields(exc: GiantflowError, field: str) -> dict[str, str]:
    """A refusal's errors by field, or its words on ``field`` when it names none."""
    return field_errors(exc.errors or ()) or {field: exc.detail}


WriteFormDep = Annotated[WriteForm, Depends()]


UNREAD_BADGE = Depends(count_unread)


class ConsoleRoute(APIRoute):
    """Every console route: a request without a session goes to the sign-in page, a form without its CSRF
    token is refused (403), and what a service refuses (not found, not allowed, not valid, a conflict) is a
    page saying so in words, with the status the API would give - never a problem document.

    A page (a GET route that leaves its response class alone: a download, a bare redirect and the
    notifications page, which counts them itself, name theirs) counts the caller's unread notifications for
    the navigation first (``count_unread``)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        dependencies = list(kwargs.pop("dependencies", None) or ())
        page = "GET" in (kwargs.get("methods") or ()) and isinstance(
            kwargs.get("response_class"), DefaultPlaceholder | None
        )
        if page and UNREAD_BADGE not in dependencies:  # (an included router's routes are made again)
            dependencies.append(UNREAD_BADGE)
        super().__init__(path, endpoint, dependencies=dependencies, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignedOut:
                return sign_in_redirect(request)
            except CsrfRefused:
                gettext = gettext_for(request)
                return error_page(
                    request,
                    403,
                    gettext(
                        "This form has expired or did not come from this console. "
                        "Reload the page and try again."
                    ),
                )
            except RequestValidationError as exc:
                gettext = gettext_for(request)
                return error_page(
                    request, 422, gettext("The request is not valid."), validation_errors(exc.errors())
                )
            except GiantflowError as exc:
                # A 429 or 503 says when to come back, as the API's problem does (Retry-After).
                retry = {k: v for k, v in (exc.headers or {}).items() if k == "Retry-After"}
                return error_page(request, exc.status, describe(request, exc), exc.errors or (), retry)

        return guarded


def describe(request: Request, exc: GiantflowError) -> str:
    """What a refusal says on a page: a 404 says only that there is nothing here (the same words whether
    the object does not exist or is not the caller's to see); the others say what the service said."""
    gettext = gettext_for(request)
    if exc.status == 404:
        return gettext("Not found: there is nothing here that you may see.")
    if exc.status == 403:
        return gettext("Your role may not do this.") + " " + exc.detail
    if exc.status == 429:
        message = gettext("Too many changes at once: nothing was changed. Try again in %(seconds)s s.")
        return message % {"seconds": (exc.headers or {}).get("Retry-After", "60")}
    return exc.detail
