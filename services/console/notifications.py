"""The staff member's notifications: the in-app feed (``GET /notifications``) as a page, newest first and
paged, each event in words with a link to the page where one acts on it, and ``Mark read`` (``POST
/notifications/{id}/read``). The navigation's badge is counted by every page (``web.count_unread``).

The page calls ``service.feed`` and the form ``service.mark_read`` with the signed-in caller, so the feed is
exactly the API's: the events addressed to the caller's role, scope and groups (an admin's: all), and
marking one outside it is the 404 page."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.session import SessionUserDep
from services.console.web import ConsoleRoute, ReturningFields, WriteFormDep, gettext_for, render, safe_next
from services.deps import SessionDep
from services.events import EVENT_MODELS
from services.notifications import service
from services.notifications.mail import TEXTS
from services.notifications.schemas import NotificationRead
from services.pagination import CursorQuery, LimitQuery

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

NOTIFICATIONS = "/console/notifications"
# Where one acts on an event, by the aggregate it belongs to: its application's page, else the list of its
# kind filtered to its enterprise.
LISTS = {"payout": "/console/payouts", "recognition": "/console/recognitions"}


def _entry(item: NotificationRead, gettext: Callable[[str], str]) -> dict[str, Any]:
    """One event as the page shows it: its title (the subject its e-mail has), the enterprise, the stage or
    amount where the payload has one, and the page to act on it."""
    data = item.data
    aggregate = EVENT_MODELS[item.type].aggregate_type
    if aggregate == "application":
        link = f"/console/applications/{data['application_id']}"
    elif aggregate == "reconciliation":  # the day's report (the console has no page of its own for it yet)
        link = f"/api/v1/reconciliations/{data['day']}"
    else:
        link = LISTS[aggregate] + "?" + urlencode({"uscc": data.get("uscc", "")})
    return {
        "item": item,
        "title": gettext(TEXTS[item.type][0]),
        "uscc": data.get("uscc"),
        "stage": data.get("stage"),
        "amount": data.get("amount"),
        "link": link,
    }


# The badge comes from the feed this page reads, so it names its response class: ConsoleRoute counts no more.
@router.get(NOTIFICATIONS, response_class=HTMLResponse)
async def notifications_page(
    request: Request,
    session: SessionUserDep,
    db: SessionDep,
    unread: Annotated[str, Query(max_length=5)] = "",
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Response:
    """The caller's feed (``service.feed``), newest first; ``unread=1``: only those not read yet."""
    unread_only = unread in ("1", "true", "on")
    page = await service.feed(db, user=session.user, unread_only=unread_only, cursor=cursor, limit=limit)
    request.state.unread_notifications = page.unread_count  # the badge, as this page counted it
    gettext = gettext_for(request)
    query = {"unread": "1"} if unread_only else {}
    base = NOTIFICATIONS + ("?" + urlencode(query) if query else "")
    return render(
        request,
        "notifications.html",
        {
            "entries": [_entry(item, gettext) for item in page.items],
            "unread_only": unread_only,
            "next_url": (
                NOTIFICATIONS + "?" + urlencode({**query, "cursor": page.next_cursor, "limit": limit})
                if page.next_cursor
                else None
            ),
            "first_url": base if cursor else None,
        },
        session=session,
    )


@router.post(NOTIFICATIONS + "/{event_id}/read")
async def mark_read(
    event_id: uuid.UUID, form: WriteFormDep, fields: Annotated[ReturningFields, Form()]
) -> Response:
    """``POST /notifications/{id}/read`` from a form (marking again changes nothing, so the form needs no
    idempotency key); 303 back to the page it was sent from."""
    await service.mark_read(form.db, user=form.user, event_id=event_id)
    return RedirectResponse(safe_next(fields.next_, NOTIFICATIONS), status_code=303)
