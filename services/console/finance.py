"""The finance pages of the console: the inbox of payouts awaiting approval (and the decision on one), the
disbursements with their totals, weekly chart and exports, and the credit lines and bridge-loan funds.

Every page calls the service functions the API's routes call (services/credit/router.py), with the signed-in
caller, so who sees what is the API's rule: finance and admin see everything, other staff are refused (403)
by the service itself. A decision goes through the API's own ``Write.decide`` (services/credit/router.py), as
``POST /drawdowns/{id}/approvals`` (and the bridge-loan and listing-reward routes) does, with the form's
idempotency key and the API's write rate limit."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Annotated, Any, Protocol, TypeVar, get_args
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.cell import WriteOnlyCell  # type: ignore[import-untyped]
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool

from services.auth import CurrentUser, Role
from services.console.session import SessionUserDep
from services.console.web import (
    CONSOLE_HEADERS,
    SHANGHAI,
    ConsoleRoute,
    ReturningFields,
    WriteFormDep,
    describe,
    field_errors,
    full_path,
    gettext_for,
    render,
    safe_next,
)
from services.credit import funds, service
from services.credit.router import Write
from services.credit.schemas import (
    KEY_PATTERN,
    USCC_PATTERN,
    ApprovalCreate,
    InboxStatus,
    ListFilters,
)
from services.deps import ResourcesDep, SessionDep, StreamingReadSessionDep, TemporalDep
from services.errors import FieldError, GiantflowError, Unprocessable, validation_errors
from services.vocabulary import PAYOUT_KINDS, TIERS, BenefitStatus, DisbursementStatus, PayoutKind

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
T = TypeVar("T")

PAGE_SIZE = 50
INBOX = "/console/payouts"
# English msgids of the values the pages show.
KIND_LABELS = {"drawdown": "Drawdown", "bridge_loan": "Bridge loan", "listing_reward": "Listing reward"}
STATUS_LABELS = {
    "awaiting_approval": "Awaiting approval",
    "pending_approval": "Awaiting approval",
    "approved": "Approved",
    "disbursed": "Disbursed",
    "repaid": "Repaid",
    "rejected": "Rejected",
    "expired": "Expired",
    "failed": "Failed",
    "pending": "Pending",
    "paid": "Paid",
    "active": "Active",
    "frozen": "Frozen",
}
TIER_LABELS = {
    "innovative": "Innovative SME",
    "specialized_new": "SRDI SME",
    "little_giant": "Little giant",
    "invisible_champion": "Invisible champion",
    "single_champion": "Single champion",
}
DONE = {"approved": "Your approval is recorded.", "rejected": "The payout is rejected."}


# --- filters: the query a page takes, parsed as the API's route parses it ------------------------------


class Invalid(ValueError):
    """A filter value the API would refuse; the message is an English msgid."""


def _choice(options: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise Invalid("Choose one of the listed values.")
        return text

    return parse


def _matches(pattern: str, message: str, *, upper: bool = False) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def parse(text: str) -> str:
        value = text.upper() if upper else text
        if not compiled.fullmatch(value):
            raise Invalid(message)
        return value

    return parse


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise Invalid("Not a valid date (YYYY-MM-DD).") from None


def _amount(text: str) -> Decimal:
    """Yuan as a person types them: ``3000000``, ``3,000,000.00``, ``¥3000000.5``."""
    cleaned = text.replace(",", "").replace("¥", "").replace("￥", "").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise Invalid("Not a valid amount.") from None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")) or value >= 10**16:
        raise Invalid("Not a valid amount.")
    return value.quantize(Decimal("0.01"))


@dataclass(frozen=True)
class Filter:
    name: str  # the query parameter and form field
    attr: str  # the ListFilters field
    parse: Callable[[str], Any]


USCC = Filter("uscc", "uscc", _matches(USCC_PATTERN, "Not a valid USCC (18 characters).", upper=True))
PROGRAM = Filter("program", "program", _matches(KEY_PATTERN, "Not a valid program key."))
TIER = Filter("tier", "tier", _choice(TIERS))
FROM = Filter("from", "date_from", _day)
TO = Filter("to", "date_to", _day)
INBOX_FILTERS = (
    Filter("kind", "kind", _choice(PAYOUT_KINDS)),
    Filter("status", "status", _choice(get_args(InboxStatus))),
    USCC,
    Filter("amount_min", "amount_min", _amount),
    Filter("amount_max", "amount_max", _amount),
    FROM,
    TO,
)
DISBURSEMENT_FILTERS = (
    Filter("kind", "kind", _choice(PAYOUT_KINDS)),
    Filter("status", "status", _choice(get_args(DisbursementStatus))),
    USCC,
    TIER,
    PROGRAM,
    FROM,
    TO,
)
CREDIT_LINE_FILTERS = (USCC, PROGRAM, TIER, Filter("status", "status", _choice(get_args(BenefitStatus))))


@dataclass(frozen=True)
class Asked:
    """What a page was asked for: the form's values as typed (to fill it again), the filters, the errors by
    field (translated) and the cursor."""

    values: dict[str, str]
    filters: ListFilters
    errors: dict[str, str]
    cursor: str | None

    def query(self, **extra: str | None) -> str:
        """The query string of these filters (and ``extra``), blanks left out."""
        given = {**self.values, **extra}
        return urlencode({k: v for k, v in given.items() if v})


def asked(request: Request, accepted: Sequence[Filter], query: Mapping[str, str] | None = None) -> Asked:
    gettext = gettext_for(request)
    given = request.query_params if query is None else query
    values: dict[str, str] = {}
    parsed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for spec in accepted:
        text = (given.get(spec.name) or "").strip()[:200]
        values[spec.name] = text
        if not text:
            continue
        try:
            parsed[spec.attr] = spec.parse(text)
        except Invalid as exc:
            errors[spec.name] = gettext(str(exc))
    cursor = (given.get("cursor") or "").strip()[:200] or None
    return Asked(values=values, filters=ListFilters(**parsed), errors=errors, cursor=cursor)


class Paged(Protocol):
    next_cursor: str | None


@dataclass(frozen=True)
class ListPage:
    """A filtered, paged list page: where it is, its template, the filters its form offers and the statuses
    its status filter lists."""

    path: str
    template: str
    filters: Sequence[Filter]
    statuses: Sequence[str]

    def asked(self, request: Request, query: Mapping[str, str] | None = None) -> Asked:
        """What the page was asked for (the request's query, or ``query``)."""
        return asked(request, self.filters, query)

    def respond(
        self,
        request: Request,
        query: Asked,
        page: Paged | None,
        context: Mapping[str, Any],
        status: int = 200,
    ) -> Response:
        """The page with ``context``: the labels and options of its form, the values as typed with what is
        wrong with them (a 422 when anything is) and the links to its first and next page."""
        next_cursor = page.next_cursor if page is not None else None
        return render(
            request,
            self.template,
            {
                **_labels(request),
                "status_options": options(STATUS_LABELS, self.statuses, gettext_for(request)),
                "values": query.values,
                "errors": query.errors,
                "next_url": f"{self.path}?{query.query(cursor=next_cursor)}" if next_cursor else None,
                "first_url": f"{self.path}?{query.query()}" if query.cursor else None,
                **context,
            },
            status=422 if query.errors and status == 200 else status,
        )


PAYOUTS = ListPage(INBOX, "finance/payouts.html", INBOX_FILTERS, get_args(InboxStatus))
DISBURSEMENTS = ListPage(
    "/console/disbursements", "finance/disbursements.html", DISBURSEMENT_FILTERS, get_args(DisbursementStatus)
)
CREDIT_LINES = ListPage(
    "/console/credit", "finance/credit.html", CREDIT_LINE_FILTERS, get_args(BenefitStatus)
)


def options(labels: Mapping[str, str], values: Sequence[str], gettext: Callable[[str], str]) -> list[Any]:
    return [(value, gettext(labels[value])) for value in values]


def _labels(request: Request) -> dict[str, Any]:
    gettext = gettext_for(request)

    def label(labels: Mapping[str, str]) -> Callable[[str], str]:
        return lambda value: gettext(labels.get(value, value))

    return {
        "kind_label": label(KIND_LABELS),
        "status_label": label(STATUS_LABELS),
        "tier_label": label(TIER_LABELS),
        "kind_options": options(KIND_LABELS, PAYOUT_KINDS, gettext),
        "tier_options": options(TIER_LABELS, TIERS, gettext),
    }


async def _page(query: Asked, user: CurrentUser, lister: Callable[..., Awaitable[T]]) -> T | None:
    """The page ``lister`` (a service's list function) gives for the query's filters and cursor, or None when
    a filter is not valid - after the service has said whether the caller may read such a list at all."""
    if query.errors:
        service.reader_scope(user)  # a role that may not read the list is told so, whatever it typed
        return None
    return await lister(filters=query.filters, cursor=query.cursor, limit=PAGE_SIZE)


def _notice(request: Request) -> str | None:
    done = request.query_params.get("done")
    return gettext_for(request)(DONE[done]) if done in DONE else None


def _without_done(url: str) -> str:
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "done"])
    return parts.path + (f"?{query}" if query else "")


# --- the inbox ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A decision the service refused, shown on the inbox: in words at the top, and next to the reason of
    the payout's form when it was the reason."""

    payout_id: uuid.UUID
    message: str
    errors: dict[str, str]
    reason: str


class ApprovalFields(ReturningFields):
    """The decision form of a payout on the inbox."""

    decision: str = Field("", max_length=20)
    reason: str = Field("", max_length=20000)


async def _inbox(
    request: Request,
    db: SessionDep,
    user: CurrentUser,
    query: Asked,
    *,
    back: str,
    refusal: Refusal | None = None,
    status: int = 200,
) -> Response:
    page = await _page(query, user, partial(service.list_payouts, db, user=user))
    items = page.items if page is not None else []
    context = {
        "items": items,
        # One key per form as rendered: a form sent twice acts once.
        "keys": {item.id: str(uuid.uuid4()) for item in items if item.can_approve},
        "back": back,
        "refusal": refusal,
        "notice": _notice(request),
    }
    return PAYOUTS.respond(request, query, page, context, status)


@router.get("/console/payouts")
async def inbox(request: Request, session: SessionUserDep, db: SessionDep) -> Response:
    """The finance inbox (GET /api/v1/payouts): awaiting approval first, with a decision form on each payout
    the caller may decide on now (``can_approve``)."""
    query = PAYOUTS.asked(request)
    return await _inbox(request, db, session.user, query, back=_without_done(full_path(request)))


@router.post("/console/payouts/{kind}/{payout_id}/decision")
async def decide(
    request: Request,
    kind: PayoutKind,
    payout_id: uuid.UUID,
    form: WriteFormDep,
    temporal: TemporalDep,
    resources: ResourcesDep,
    fields: Annotated[ApprovalFields, Form()],
) -> Response:
    """One finance officer's decision, as ``POST /{kind}s/{id}/approvals`` makes it; 303 back to the inbox
    with ``?done=approved|rejected``, or the inbox again with the refusal in words."""
    user, db, reason = form.user, form.db, fields.reason
    back = _without_done(safe_next(fields.next_, INBOX))
    if urlsplit(back).path != INBOX:
        back = INBOX
    gettext = gettext_for(request)

    async def refused(status: int, message: str, errors: Sequence[FieldError]) -> Response:
        await db.rollback()  # nothing half-written is committed
        query = PAYOUTS.asked(request, dict(parse_qsl(urlsplit(back).query)))
        refusal = Refusal(payout_id, message, field_errors(errors), reason)
        return await _inbox(request, db, user, query, back=back, refusal=refusal, status=status)

    try:
        body = ApprovalCreate.model_validate({"decision": fields.decision, "reason": reason or None})
    except ValidationError as exc:
        return await refused(422, gettext("The request is not valid."), validation_errors(exc.errors()))
    write = Write(user, db, resources, temporal, fields.key)
    try:
        await write.decide(kind, payout_id, body)
    except GiantflowError as exc:
        if exc.status not in (403, 409, 422) or user.role is not Role.finance:
            raise  # not found, another role, rate limited, Temporal away: the error page
        return await refused(exc.status, describe(request, exc), exc.errors or ())
    done = "approved" if body.decision == "approve" else "rejected"
    separator = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{separator}done={done}", status_code=303)


# --- disbursements -----------------------------------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 720, 240
CHART_LEFT, CHART_TOP, CHART_BOTTOM = 96, 16, 40


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: Decimal
    mid: float


def bars(values: Sequence[tuple[str, Decimal]], *, per_group: int = 1) -> tuple[list[Bar], Decimal]:
    """Bars of ``values`` in the chart's plot area (``per_group`` bars side by side per label), and the
    largest value (the top of the scale)."""
    top = max((value for _, value in values), default=Decimal(0))
    plot_width = CHART_WIDTH - CHART_LEFT - 8
    plot_height = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    groups = max(1, len(values) // per_group)
    slot = plot_width / groups
    width = slot * 0.7 / per_group
    found = []
    for index, (label, value) in enumerate(values):
        group, within = divmod(index, per_group)
        height = float(value / top) * plot_height if top > 0 else 0.0
        x = CHART_LEFT + group * slot + slot * 0.15 + within * width
        found.append(
            Bar(
                x=round(x, 1),
                y=round(CHART_TOP + plot_height - height, 1),
                width=round(width, 1),
                height=round(height, 1),
                label=label,
                value=value,
                mid=round(CHART_LEFT + group * slot + slot / 2, 1),
            )
        )
    return found, top


def chart_frame(top: Decimal) -> dict[str, Any]:
    """The chart's size, plot area and the top of its scale (``top``)."""
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_LEFT,
        "top": CHART_TOP,
        "base": CHART_HEIGHT - CHART_BOTTOM,
        "max": top,
    }


@router.get("/console/disbursements")
async def disbursements(request: Request, session: SessionUserDep, db: SessionDep) -> Response:
    """Disbursements (GET /api/v1/disbursements) with totals per status, the amounts paid per week over the
    last 12 weeks, the exports and the list, newest first."""
    query = DISBURSEMENTS.asked(request)
    user = session.user
    page = await _page(query, user, partial(service.list_disbursements, db, user=user))
    weeks = None
    if page is not None:
        weeks = await service.paid_per_week(db, user=user, filters=query.filters)
    week_bars, top = bars([(week.week.strftime("%m-%d"), week.amount) for week in weeks or []])
    totals = page.totals if page is not None else {}
    context = {
        "page": page,
        "totals": sorted(totals.items()),
        "total_count": sum(t.count for t in totals.values()),
        "total_amount": sum((t.amount for t in totals.values()), Decimal(0)),
        "weeks": list(zip(weeks or [], week_bars, strict=True)),
        "chart": chart_frame(top),
        "export_query": query.query(),
    }
    return DISBURSEMENTS.respond(request, query, page, context)


def _export_filters(request: Request) -> ListFilters:
    query = DISBURSEMENTS.asked(request)
    if query.errors:
        raise Unprocessable(
            gettext_for(request)("The request is not valid."),
            errors=[FieldError(field=name, message=message) for name, message in query.errors.items()],
        )
    return query.filters


@router.get("/console/disbursements.csv", response_class=StreamingResponse)
async def disbursements_csv(
    request: Request, session: SessionUserDep, db: StreamingReadSessionDep
) -> Response:
    """Every matching disbursement as CSV: the API's own export (``service.disbursements_csv``)."""
    rows = service.disbursements_csv(db, user=session.user, filters=_export_filters(request))
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={**CONSOLE_HEADERS, "Content-Disposition": 'attachment; filename="disbursements.csv"'},
    )


XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSX_TIMES = ("created_at", "completed_at")
MAX_XLSX_ROWS = 1_048_575  # a worksheet's rows, the header aside


@router.get("/console/disbursements.xlsx", response_class=Response)
async def disbursements_xlsx(
    request: Request, session: SessionUserDep, db: StreamingReadSessionDep
) -> Response:
    """The same rows as the CSV (the same columns and filters, oldest first) as a workbook: amounts as
    numbers formatted ``#,##0.00``, times in Asia/Shanghai."""
    rows = service.disbursement_rows(db, user=session.user, filters=_export_filters(request))
    book = Workbook(write_only=True)
    sheet = book.create_sheet(title="Disbursements")
    sheet.append(
        [f"{column} (Asia/Shanghai)" if column in XLSX_TIMES else column for column in service.CSV_COLUMNS]
    )
    async with aclosing(rows):
        written = 0
        async for row in rows:
            sheet.append([_xlsx_cell(sheet, getattr(row, column)) for column in service.CSV_COLUMNS])
            written += 1
            if written >= MAX_XLSX_ROWS:
                break
    buffer = io.BytesIO()
    await run_in_threadpool(book.save, buffer)
    return Response(
        buffer.getvalue(),
        media_type=XLSX_TYPE,
        headers={**CONSOLE_HEADERS, "Content-Disposition": 'attachment; filename="disbursements.xlsx"'},
    )


def _xlsx_cell(sheet: Any, value: object) -> object:
    if value is None:
        return None
    if isinstance(value, Decimal):
        cell = WriteOnlyCell(sheet, value=value)
        cell.number_format = "#,##0.00"
        return cell
    if isinstance(value, datetime):
        cell = WriteOnlyCell(sheet, value=value.astimezone(SHANGHAI).replace(tzinfo=None))
        cell.number_format = "yyyy-mm-dd hh:mm:ss"
        return cell
    return str(value)


# --- credit lines and funds --------------------------------------------------------------------------------


@router.get("/console/credit")
async def credit(
    request: Request, session: SessionUserDep, db: SessionDep, resources: ResourcesDep
) -> Response:
    """Credit lines (GET /api/v1/credit-lines: limit, reserved, drawn, available) and the bridge-loan funds
    (GET /api/v1/funds: capacity, committed, available) with a chart of capacity against committed."""
    query = CREDIT_LINES.asked(request)
    user = session.user
    lines = await _page(query, user, partial(service.list_credit_lines, db, user=user))
    fund_page = await funds.list_funds(db, user=user, programs=resources.programs)
    pairs = [(f.program, amount) for f in fund_page.items for amount in (f.capacity, f.committed)]
    fund_bars, top = bars(pairs, per_group=2)
    context = {
        "lines": lines.items if lines is not None else [],
        "funds": fund_page.items,
        "fund_bars": [fund_bars[i : i + 2] for i in range(0, len(fund_bars), 2)],
        "chart": chart_frame(top),
    }
    return CREDIT_LINES.respond(request, query, lines, context)
