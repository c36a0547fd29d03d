"""The reviewer's pages: the review queue with its filters and claims, an application with its figures,
screening, evidence, history and the decision form, an evidence document's content, and the applications on
public notice with their objections.

Every page and form calls the service function the API route of the same data calls, with the signed-in
caller (``session.user``), so who may see and do what is exactly the API's: the queue is
``service.review_queue`` (``GET /review-tasks``), claims and releases are ``service.hold``, as
``POST /review-tasks/{id}/claim`` and ``/release`` do, decisions and resolutions through ``reviews.Actions``
as ``POST /applications/{id}/decisions`` and ``POST /objections/{id}/resolution`` do, with the same write
rate limit. Each form carries an idempotency key made when the page was rendered, so a form sent twice acts
once."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Form, Header, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.applications import reviews, service
from services.applications.schemas import (
    ApplicationRead,
    DecisionCreate,
    ListFilters,
    QueueFilters,
    ResolutionCreate,
)
from services.applications.views import READERS
from services.auth import CurrentUser, Role
from services.console.session import ConsoleSession, SessionUserDep
from services.console.web import (
    CONSOLE_HEADERS,
    SHANGHAI,
    ConsoleRoute,
    ReturningFields,
    WriteFields,
    WriteFormDep,
    full_path,
    gettext_for,
    refused_fields,
    render,
    safe_next,
    when,
)
from services.deps import ResourcesDep, SessionDep, TemporalDep
from services.errors import Conflict, FieldError, NotFound, Unprocessable, validation_errors
from services.files import RangeNotSatisfiable
from services.resources import Resources
from services.vocabulary import LEVELS, TIERS

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

QUEUE_PAGE = 50
NOTICE_PAGE = 50
QUEUE = "/console/reviews"
NOTICES = "/console/notices"

FilterQuery = Annotated[str, Query(max_length=64)]
SearchQuery = Annotated[str, Query(max_length=200)]
CursorQuery = Annotated[str, Query(max_length=200)]

# What a ``?done=`` after a form says (English msgids, translated when shown).
DONE = {
    "claimed": "You hold this review task now.",
    "released": "The review task is released.",
    "decided": "Your decision is recorded.",
    "resolved": "The objection is resolved.",
}

# The declared figures' names (services/applications/metrics.py) as the page labels them.
YEAR_FIGURES = {
    "revenue": "Revenue",
    "main_business_revenue": "Main-business revenue",
    "rd_expense": "R&D expense",
    "net_profit": "Net profit",
    "assets": "Assets",
    "liabilities": "Liabilities",
}
OTHER_FIGURES = {
    "niche_years": "Years in the niche market",
    "market_share_pct": "Market share (%)",
    "market_rank": "National market rank",
    "global_market_rank": "Global market rank",
    "ip_class1_count": "Class-I IP items",
    "ip_class2_count": "Class-II IP items",
    "ip_high_value_class1": "High-value Class-I IP",
    "ip_self_developed_class1": "Self-developed Class-I IP",
    "rd_staff_share_pct": "R&D staff share (%)",
    "rd_institution": "R&D institution",
    "own_brand": "Own brand",
    "management_certification": "Management certification",
    "core_business_on_information_systems": "Core business on information systems",
    "strategic_emerging_industry": "Strategic emerging industry",
    "fills_chain_gap_or_six_foundations": "Fills a supply-chain gap or the six foundations",
    "certifications": "Certifications",
    "awards": "Awards",
    "maker_china_rank": "Maker China rank",
    "high_tech_enterprise": "High-tech enterprise",
    "new_equity_2y": "New equity, last 2 years",
    "new_equity_3y": "New equity, last 3 years",
}
MONEY_FIGURES = frozenset({"new_equity_2y", "new_equity_3y"})
COMPLIANCE = {
    "no_abnormal_operations": "No abnormal operations",
    "no_serious_dishonesty": "No serious dishonesty",
    "no_prohibited_products": "No prohibited products",
    "no_major_incident": "No major incident",
    "no_tax_evasion": "No tax evasion",
}


def _new_key() -> str:
    return str(uuid.uuid4())


def _with_query(target: str, **params: str) -> str:
    """``target`` with ``params`` set in its query (others kept)."""
    parts = urlsplit(target)
    query = {k: v for k, v in parse_qs(parts.query, keep_blank_values=True).items() if k not in params}
    pairs = [(k, v) for k, values in query.items() for v in values] + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _without(target: str, name: str) -> str:
    """``target`` without the parameter ``name`` in its query."""
    parts = urlsplit(target)
    pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _done(request: Request, done: str) -> str | None:
    message = DONE.get(done)
    return gettext_for(request)(message) if message else None


def _blank_to_none(values: Mapping[str, str]) -> dict[str, str | None]:
    return {name: (value.strip() or None) for name, value in values.items()}


# --- the review queue ------------------------------------------------------------------------------------


def _queue_filters(request: Request, raw: Mapping[str, str]) -> QueueFilters:
    """The filter form's values as the API's ``QueueFilters`` (blank: any); a value the API would refuse is
    a 422 page naming the field."""
    values: dict[str, Any] = _blank_to_none(raw)
    overdue = values["overdue"]
    if overdue is not None:
        values["overdue"] = {"true": True, "false": False}.get(overdue, overdue)
    if any("\x00" in (v or "") for v in raw.values()):
        raise Unprocessable(
            gettext_for(request)("The request is not valid."),
            errors=[FieldError(field="q", message="NUL characters are not allowed")],
        )
    try:
        return QueueFilters.model_validate(values)
    except ValidationError as exc:
        raise Unprocessable(
            gettext_for(request)("The request is not valid."), errors=validation_errors(exc.errors())
        ) from None


@router.get(QUEUE)
async def queue_page(
    request: Request,
    session: SessionUserDep,
    db: SessionDep,
    resources: ResourcesDep,
    program: FilterQuery = "",
    tier: FilterQuery = "",
    stage: FilterQuery = "",
    overdue: FilterQuery = "",
    assignee: FilterQuery = "",
    q: SearchQuery = "",
    cursor: CursorQuery = "",
    done: FilterQuery = "",
) -> Response:
    """The caller's review queue (``service.review_queue``, as ``GET /review-tasks``): by due date, the
    oldest first (so the overdue ones lead), the counts of the whole queue beside the filters."""
    raw = {
        "program": program,
        "tier": tier,
        "stage": stage,
        "overdue": overdue,
        "assignee": assignee,
        "q": q,
    }
    filters = _queue_filters(request, raw)
    page = await service.review_queue(
        db, user=session.user, filters=filters, cursor=cursor or None, limit=QUEUE_PAGE
    )
    here = _without(full_path(request), "done")
    programs = sorted(set(resources.programs) | set(page.counts.program))
    return render(
        request,
        "reviews/queue.html",
        {
            "page": page,
            "counts": page.counts,
            "filters": raw,
            "programs": programs,
            "tiers": TIERS,
            "levels": LEVELS,
            "me": session.user.sub,
            "keys": {task.id: _new_key() for task in page.items},
            "next_url": _with_query(here, cursor=page.next_cursor) if page.next_cursor else None,
            "first_url": _with_query(here, cursor="") if cursor else None,
            "notice": _done(request, done),
        },
        session=session,
    )


async def _claim_refused(
    request: Request, db: AsyncSession, user: CurrentUser, task_id: uuid.UUID, exc: Conflict, back: str
) -> Response:
    """A claim or release the service refused (409): who holds the task and until when, in words."""
    await db.rollback()
    gettext = gettext_for(request)
    task = await service.task_hold(db, user=user, task_id=task_id, now=datetime.now(UTC))
    message = exc.detail
    if task is not None and task.status != "open":
        message = gettext("This review task is closed: the application has moved on.")
    elif task is not None and task.holder not in (None, user.sub):
        message = gettext("Another reviewer (%(who)s) holds this review task until %(until)s.") % {
            "who": task.holder,
            "until": when(task.until),
        }
    return render(request, "reviews/refused.html", {"message": message, "back": back}, status=409)


@router.post("/console/review-tasks/{task_id}/{verb}")
async def hold(
    request: Request,
    task_id: uuid.UUID,
    verb: Literal["claim", "release"],
    form: WriteFormDep,
    resources: ResourcesDep,
    fields: Annotated[ReturningFields, Form()],
) -> Response:
    """Claim or release a task, as ``POST /review-tasks/{id}/claim`` and ``/release`` do: the write limit,
    once per the form's key (under the API's endpoint name), back where the form came from; a 409 is a page
    saying who holds it."""
    user, db = form.user, form.db
    back = safe_next(fields.next_, QUEUE)
    now = datetime.now(UTC)
    try:
        await service.hold(
            db, user, fields.key, task_id=task_id, verb=verb, programs=resources.programs, now=now
        )
    except Conflict as exc:
        return await _claim_refused(request, db, user, task_id, exc, back)
    return RedirectResponse(_with_query(back, done=f"{verb.removesuffix('e')}ed"), status_code=303)


# --- an application --------------------------------------------------------------------------------------


def _may_decide(user: CurrentUser, view: ApplicationRead, task: service.TaskHold | None) -> bool:
    """Whether the review workflow would take this caller's decision now (its validator's rules): a
    reviewer, the application in review, and the caller's level the current stage in its region - or the
    task escalated to one of the caller's groups."""
    if user.role is not Role.reviewer or view.status != "in_review" or view.stage is None:
        return False
    if task is not None and task.escalated_to is not None and task.escalated_to in user.groups:
        return True
    return user.level == view.stage and user.covers_region(view.region_code)


def _figures(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    """The declared figures for the page: the years as columns, the rest as label and value."""
    if not metrics:
        return {"years": [], "rows": [], "other": [], "compliance": []}
    years = sorted(metrics.get("years", []), key=lambda y: y.get("year", 0))
    rows = [(label, [y.get(name) for y in years]) for name, label in YEAR_FIGURES.items()]
    other = [
        (OTHER_FIGURES.get(name, name), value, name in MONEY_FIGURES)
        for name, value in metrics.items()
        if name not in ("years", "compliance")
    ]
    compliance = [
        (COMPLIANCE.get(name, name), value) for name, value in (metrics.get("compliance") or {}).items()
    ]
    return {"years": [y.get("year") for y in years], "rows": rows, "other": other, "compliance": compliance}


async def _application_page(
    request: Request,
    db: AsyncSession,
    resources: Resources,
    session: ConsoleSession,
    application_id: uuid.UUID,
    *,
    notice: str | None = None,
    errors: Mapping[str, str] | None = None,
    values: Mapping[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The application as ``GET /applications/{id}`` reads it for the caller (``service.get_application``
    and ``application_read``: 404 for an application the caller may not see), with the forms it may use."""
    user = session.user
    user.require(*READERS)  # before the lookup, as the API: says nothing about ids
    application = await service.get_application(db, user=user, application_id=application_id)
    view = await service.application_read(db, user=user, application=application)
    try:
        enterprise_name = (await service.get_enterprise(db, user=user, uscc=application.uscc)).name
    except NotFound:
        enterprise_name = application.uscc
    task = await service.open_task_hold(db, user=user, application_id=application.id, now=datetime.now(UTC))
    held_by = task.holder if task is not None else None
    in_queue = task is not None and task.in_queue
    held_by_other = in_queue and held_by not in (None, user.sub)
    program = resources.programs.get(application.program)
    tier_policy = program.tiers.get(application.tier) if program else None  # type: ignore[call-overload]
    return render(
        request,
        "reviews/application.html",
        {
            "app": view,
            "enterprise_name": enterprise_name,
            "program": program,
            "tier_name": tier_policy.name if tier_policy else application.tier,
            "figures": _figures(application.metrics),
            "screening": view.screening or {},
            "task": task,
            "held_by": held_by,
            "claim_expires_at": task.until if task is not None else None,
            "may_claim": in_queue and user.role is Role.reviewer and held_by is None,
            "may_release": in_queue
            and held_by is not None
            and (held_by == user.sub or user.role is Role.admin),
            "held_by_other": held_by_other,
            "may_decide": _may_decide(user, view, task) and not held_by_other,
            "supplement_deadline": str(program.durations.supplement_deadline) if program else "",
            "errors": errors or {},
            "values": values or {},
            "keys": {"decision": _new_key(), "claim": _new_key()},
            "notice": notice,
        },
        status=status,
        session=session,
    )


@router.get("/console/applications/{application_id}")
async def application_page(
    request: Request,
    application_id: uuid.UUID,
    session: SessionUserDep,
    db: SessionDep,
    resources: ResourcesDep,
    done: FilterQuery = "",
) -> Response:
    return await _application_page(
        request, db, resources, session, application_id, notice=_done(request, done)
    )


def _form_errors(
    gettext: Callable[[str], str], exc: ValidationError, messages: Mapping[str, str]
) -> dict[str, str]:
    """A form's refused fields with what is wrong, in the page's language where the form says it."""
    errors: dict[str, str] = {}
    for error in validation_errors(exc.errors()):
        name = error.field.rsplit(".", 1)[-1]
        errors.setdefault(name, gettext(messages[name]) if name in messages else error.message)
    return errors


DECISION_MESSAGES = {
    "reason": "Give the reason for your decision (at most 2,000 characters).",
    "decision": "Choose Approve, Return or Reject.",
    "internal_note": "The internal note is at most 4,000 characters.",
    "stage": "The stage is not one of the review's.",
    "supplement_due_at": "Give a date and time in the future, with Return only.",
}


class DecisionFields(WriteFields):
    """The decision form of an application, its fields as typed (shown again when it is refused)."""

    decision: str = Field("", max_length=20)
    reason: str = Field("", max_length=4000)
    internal_note: str = Field("", max_length=8000)
    stage: str = Field("", max_length=20)
    supplement_due_at: str = Field("", max_length=40)

    def body(self, due: datetime | None) -> DecisionCreate:
        """The API's body of this decision, due ``due`` (the supplement's time, read from its field)."""
        return DecisionCreate.model_validate(
            {
                "decision": self.decision,
                "reason": self.reason,
                "stage": self.stage or None,
                "internal_note": self.internal_note.strip() or None,
                "supplement_due_at": due,
            }
        )


def _shanghai_time(value: str) -> datetime | None:
    """A ``datetime-local`` field's value (``2026-12-15T17:00``) as the Asia/Shanghai time it names; None
    when empty or not a time."""
    try:
        local = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return local.replace(tzinfo=SHANGHAI) if local.tzinfo is None else local


@router.post("/console/applications/{application_id}/decisions")
async def decide(
    request: Request,
    application_id: uuid.UUID,
    form: WriteFormDep,
    resources: ResourcesDep,
    temporal: TemporalDep,
    fields: Annotated[DecisionFields, Form()],
) -> Response:
    """Decide the current stage, as ``POST /applications/{id}/decisions`` does (``reviews.Actions.decide``,
    the same write limit, once per the form's key). A refused form comes back with what is wrong next to
    its fields; nothing is decided."""
    user, db, session = form.user, form.db, form.session
    values = fields.model_dump(include={"reason", "internal_note", "supplement_due_at"})
    gettext = gettext_for(request)

    async def again(errors: Mapping[str, str], status: int) -> Response:
        return await _application_page(
            request, db, resources, session, application_id, errors=errors, values=values, status=status
        )

    due = _shanghai_time(fields.supplement_due_at)
    if fields.supplement_due_at.strip() and (due is None or fields.decision != "return"):
        return await again({"supplement_due_at": gettext(DECISION_MESSAGES["supplement_due_at"])}, 422)
    try:
        data = fields.body(due)
    except ValidationError as exc:
        return await again(_form_errors(gettext, exc, DECISION_MESSAGES), 422)
    actions = reviews.Actions(db, temporal, user, fields.key)
    refused = await form.refusal(actions.decide(application_id, data))
    if refused is not None:
        where = "supplement_due_at" if due is not None and isinstance(refused, Unprocessable) else "decision"
        return await again(refused_fields(refused, where), refused.status)
    target = f"/console/applications/{application_id}"
    return RedirectResponse(_with_query(target, done="decided"), status_code=303)


# --- evidence --------------------------------------------------------------------------------------------


@router.get("/console/documents/{document_id}/content", response_class=Response)
async def document_content(
    document_id: uuid.UUID,
    session: SessionUserDep,
    db: SessionDep,
    resources: ResourcesDep,
    inline: Annotated[str, Query(max_length=5)] = "",
    range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match", max_length=2000)] = None,
    if_range: Annotated[str | None, Header(alias="If-Range", max_length=200)] = None,
) -> Response:
    """An evidence document's content for the signed-in caller, as ``GET /documents/{id}/content`` serves it
    (``service.document_file``, ``serve_file``: ETag, one range), shown in the page (``inline=1``) or
    downloaded; framed only by the console itself."""
    stored = await service.document_file(
        db, user=session.user, document_id=document_id, storage=resources.storage
    )
    try:
        response = await stored.answer(
            range_header=range_header,
            if_none_match=if_none_match,
            if_range=if_range,
            disposition="inline" if inline in ("1", "true") else "attachment",
        )
    except RangeNotSatisfiable as exc:
        return Response(status_code=416, headers={**(exc.headers or {}), **CONSOLE_HEADERS})
    response.headers.update(CONSOLE_HEADERS)
    return response


# --- public notice ---------------------------------------------------------------------------------------


async def _notices_page(
    request: Request,
    db: AsyncSession,
    session: ConsoleSession,
    *,
    cursor: str | None,
    notice: str | None = None,
    errors: Mapping[uuid.UUID, Mapping[str, str]] | None = None,
    values: Mapping[uuid.UUID, Mapping[str, str]] | None = None,
    status: int = 200,
) -> Response:
    """The applications on public notice the caller may read (``service.list_applications`` with status
    ``public_notice``, as ``GET /applications?status=public_notice``), each with its objections."""
    user = session.user
    page = await service.list_applications(
        db,
        user=user,
        filters=ListFilters(status="public_notice"),
        cursor=cursor,
        limit=NOTICE_PAGE,
    )
    details = await service.notice_details(db, applications=page.items)
    entries = [(item, details[item.id]) for item in page.items if item.id in details]
    here = full_path(request)
    return render(
        request,
        "reviews/notices.html",
        {
            "entries": entries,
            "may_resolve": user.role is Role.reviewer,
            "keys": {o.id: _new_key() for _, d in entries for o in d.objections if o.status == "open"},
            "errors": errors or {},
            "values": values or {},
            "next_url": _with_query(NOTICES, cursor=page.next_cursor) if page.next_cursor else None,
            "back": here if request.method == "GET" else NOTICES,
            "notice": notice,
        },
        status=status,
        session=session,
    )


@router.get(NOTICES)
async def notices_page(
    request: Request,
    session: SessionUserDep,
    db: SessionDep,
    cursor: CursorQuery = "",
    done: FilterQuery = "",
) -> Response:
    return await _notices_page(request, db, session, cursor=cursor or None, notice=_done(request, done))


class ResolutionFields(ReturningFields):
    """The resolution form of an objection on the public notice page."""

    upheld: str = Field("", max_length=10)
    reason: str = Field("", max_length=4000)


RESOLUTION_MESSAGES = {
    "upheld": "Choose whether the objection is upheld or dismissed.",
    "reason": "Give the reason for the resolution (at most 2,000 characters).",
}


@router.post("/console/objections/{objection_id}/resolution")
async def resolve_objection(
    request: Request,
    objection_id: uuid.UUID,
    form: WriteFormDep,
    temporal: TemporalDep,
    fields: Annotated[ResolutionFields, Form()],
) -> Response:
    """Resolve an open objection, as ``POST /objections/{id}/resolution`` does
    (``reviews.Actions.resolve_objection``, the same write limit, once per the form's key): upheld, the
    application is rejected; dismissed, its notice goes on."""
    user, db, session = form.user, form.db, form.session
    back = safe_next(fields.next_, NOTICES)
    cursor = parse_qs(urlsplit(back).query).get("cursor", [None])[0]
    values = {objection_id: fields.model_dump(include={"upheld", "reason"})}
    gettext = gettext_for(request)

    async def again(errors: Mapping[str, str], status: int) -> Response:
        return await _notices_page(
            request, db, session, cursor=cursor, errors={objection_id: errors}, values=values, status=status
        )

    try:
        data = ResolutionCreate.model_validate({"upheld": fields.upheld or None, "reason": fields.reason})
    except ValidationError as exc:
        return await again(_form_errors(gettext, exc, RESOLUTION_MESSAGES), 422)
    actions = reviews.Actions(db, temporal, user, fields.key)
    refused = await form.refusal(actions.resolve_objection(objection_id, data))
    if refused is not None:
        return await again(refused_fields(refused, "upheld"), refused.status)
    return RedirectResponse(_with_query(back, done="resolved"), status_code=303)
