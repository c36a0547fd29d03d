"""The administrator's pages: the programs (tiers, amounts, durations, batches and which are open now) and the
recognitions (filtered and paged as ``GET /recognitions`` lists them, counted by tier and by province in a
chart, each active one with its revocation form).

Every page calls the service function its API route calls, with the signed-in caller, so the access rules are
the API's: the programs are anyone's to read, the recognitions their enterprise's, finance's and admins' (a
reviewer gets the 403 page), and only an admin may revoke (``service.revocable_recognition``); the revocation
goes through ``reviews.Actions.revoke`` exactly as ``POST /recognitions/{id}/revocation`` does, once per
form (its idempotency key)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.applications import reviews, service
from services.applications.schemas import NO_NUL, USCC_PATTERN, RecognitionRead, RevocationCreate
from services.auth import CurrentUser, Role
from services.console.session import ConsoleSession, SessionUserDep
from services.console.web import (
    ConsoleRoute,
    WriteFields,
    WriteForm,
    WriteFormDep,
    gettext_for,
    refused_fields,
    render,
    safe_next,
)
from services.deps import ResourcesDep, SessionDep, TemporalDep
from services.pagination import CursorQuery, LimitQuery
from services.vocabulary import TIERS, Tier

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

RECOGNITIONS = "/console/recognitions"
STATUSES = ("active", "expired", "revoked")
CHART_WIDTH = 320  # the longest bar, in SVG units
DoneQuery = Annotated[str | None, Query(max_length=20)]


# --- programs ----------------------------------------------------------------------------------------------


@router.get("/console/programs")
async def programs_page(request: Request, session: SessionUserDep, resources: ResourcesDep) -> Response:
    """Every program as ``GET /programs`` lists it, with all its batches from the program file and which of
    them are open today (the ones ``open_batches`` names)."""
    programs = []
    for program in service.list_programs(resources.programs):
        open_now = {batch.key for batch in program.open_batches}
        configured = resources.programs.get(program.key)
        batches = [
            {"key": b.key, "opens_on": b.opens_on, "closes_on": b.closes_on, "open": b.key in open_now}
            for b in (configured.batches if configured is not None else program.open_batches)
        ]
        programs.append({"program": program, "batches": batches})
    return render(request, "admin/programs.html", {"programs": programs}, session=session)


# --- recognitions ------------------------------------------------------------------------------------------


class RecognitionFilters(BaseModel):
    """The filters of ``GET /recognitions`` the page's form offers (an empty field: no filter)."""

    model_config = ConfigDict(extra="forbid")

    uscc: str | None = Field(default=None, pattern=USCC_PATTERN)
    tier: Tier | None = None
    certificate_no: str | None = Field(default=None, max_length=80, pattern=NO_NUL)
    status: str | None = Field(default=None, pattern="^(active|expired|revoked)$")

    def service_filters(self) -> dict[str, Any]:
        return {**self.model_dump(), "valid_on": None}

    def query(self) -> dict[str, str]:
        return {name: value for name, value in self.model_dump().items() if value}


def _bars(rows: Sequence[tuple[str, int]], label: Callable[[str], str]) -> list[dict[str, Any]]:
    """A bar per row: its label, count and length (the largest count is CHART_WIDTH long)."""
    top = max((count for _, count in rows), default=0)
    return [
        {
            "key": key,
            "label": label(key),
            "count": count,
            "width": round(CHART_WIDTH * count / top, 1) if top else 0,
        }
        for key, count in rows
    ]


def may_revoke(user: CurrentUser, recognition: RecognitionRead) -> bool:
    """Whether the revocation form is shown: ``service.revocable_recognition``'s own check (an admin, an
    active recognition); the service still decides when the form is posted."""
    return user.role is Role.admin and recognition.status == "active"


@router.get("/console/recognitions")
async def recognitions_page(
    request: Request,
    session: SessionUserDep,
    db: SessionDep,
    uscc: Annotated[str, Query(max_length=18)] = "",
    tier: Annotated[str, Query(max_length=32)] = "",
    certificate_no: Annotated[str, Query(max_length=80)] = "",
    status: Annotated[str, Query(max_length=10)] = "",
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
    done: DoneQuery = None,
) -> Response:
    gettext = gettext_for(request)
    raw = {"uscc": uscc, "tier": tier, "certificate_no": certificate_no, "status": status}
    try:
        filters = RecognitionFilters.model_validate(
            {name: value.strip() or None for name, value in raw.items()}
        )
    except ValidationError as exc:
        errors = {str(e["loc"][0]): gettext("This value is not valid.") for e in exc.errors() if e["loc"]}
        return _recognitions(request, session, raw, errors=errors, status=422)
    user = session.user
    page = await service.list_recognitions(
        db, user=user, filters=filters.service_filters(), cursor=cursor, limit=limit
    )
    counts = await service.recognition_counts(db, user=user, filters=filters.service_filters())
    query = filters.query()
    next_page = None
    if page.next_cursor:
        next_page = RECOGNITIONS + "?" + urlencode({**query, "cursor": page.next_cursor, "limit": limit})
    here = RECOGNITIONS + ("?" + urlencode(query) if query else "")
    if cursor:
        here = RECOGNITIONS + "?" + urlencode({**query, "cursor": cursor, "limit": limit})
    return _recognitions(
        request,
        session,
        raw,
        context={
            "items": [
                {"item": item, "revocable": may_revoke(user, item), "key": str(uuid.uuid4())}
                for item in page.items
            ],
            "tier_bars": _bars(counts.by_tier, gettext),
            "region_bars": _bars(counts.by_province, str),
            "total": counts.total,
            "next_page": next_page,
            "first_page": RECOGNITIONS + ("?" + urlencode(query) if query else "") if cursor else None,
            "back": here,
            "notice": gettext("The recognition is revoked.") if done == "revoked" else None,
        },
    )


def _recognitions(
    request: Request,
    session: ConsoleSession,
    raw: dict[str, str],
    *,
    context: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    gettext = gettext_for(request)
    return render(
        request,
        "admin/recognitions.html",
        {
            "filters": raw,
            "errors": errors or {},
            "tier_options": [(t, gettext(t)) for t in TIERS],
            "status_options": [(s, gettext(s)) for s in STATUSES],
            "items": [],
            "tier_bars": [],
            "region_bars": [],
            "total": 0,
            "chart_width": CHART_WIDTH,
            **(context or {}),
        },
        status=status,
        session=session,
    )


class RevocationFields(WriteFields):
    """The revocation form of a recognition (on the list, or again on its own page when refused)."""

    reason: str = Field("", max_length=10_000)
    back: str = Field("", max_length=2000)


def _done(back: str) -> str:
    """The list the form was posted from (inside the console only), saying what was done."""
    target = safe_next(back, RECOGNITIONS)
    parts = urlsplit(target)
    if parts.path != RECOGNITIONS:
        parts = urlsplit(RECOGNITIONS)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "done"] + [("done", "revoked")]
    return parts.path + "?" + urlencode(query)


@router.post("/console/recognitions/{recognition_id}/revocation")
async def revoke(
    request: Request,
    recognition_id: uuid.UUID,
    form: WriteFormDep,
    temporal: TemporalDep,
    fields: Annotated[RevocationFields, Form()],
) -> Response:
    """``POST /recognitions/{id}/revocation`` from a form: the same write limit, body and action (an admin,
    an active recognition, once per idempotency key); 303 back to the list, or the form again with what is
    wrong next to the field."""
    gettext = gettext_for(request)
    reason = fields.reason
    try:
        data = RevocationCreate(reason=reason)
    except ValidationError as exc:
        errors = {
            "reason": gettext("Give the reason for revoking this recognition.")
            if not reason.strip()
            else str(exc.errors()[0]["msg"])
        }
        return await _revoke_form(request, form, recognition_id, fields, errors, 422)
    actions = reviews.Actions(form.db, temporal, form.user, fields.key)
    refused = await form.refusal(actions.revoke(recognition_id, data))
    if refused is not None:
        errors = refused_fields(refused, "reason")
        return await _revoke_form(request, form, recognition_id, fields, errors, refused.status)
    return RedirectResponse(_done(fields.back), status_code=303)


async def _revoke_form(
    request: Request,
    form: WriteForm,
    recognition_id: uuid.UUID,
    fields: RevocationFields,
    errors: dict[str, str],
    status: int,
) -> Response:
    """The revocation form of one recognition again (read as ``GET /recognitions/{id}`` reads it, so a
    caller who may not see it gets the service's refusal instead), with what is wrong next to its field."""
    session = form.session
    recognition = await service.read_recognition(form.db, user=session.user, recognition_id=recognition_id)
    return render(
        request,
        "admin/revoke.html",
        {
            "recognition": recognition,
            "revocable": may_revoke(session.user, recognition),
            "reason": fields.reason,
            "key": fields.key or str(uuid.uuid4()),
            "back": safe_next(fields.back, RECOGNITIONS),
            "errors": errors,
        },
        status=status,
        session=session,
    )
