"""The rules of notifications: who may register a webhook endpoint and see its deliveries, and which events
are in whose feed. Functions take the session first and never commit (the request's session does)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from services.attributes import fields_of
from services.auth import CurrentUser, Role
from services.errors import FieldError, NotFound, Unprocessable
from services.events import OutboxEvent
from services.notifications.models import NotificationRead as ReadMark
from services.notifications.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from services.notifications.schemas import (
    AttemptRead,
    DeliveryRead,
    DeliveryStatus,
    NotificationPage,
    NotificationRead,
    SecretRotation,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointRead,
)
from services.notifications.webhooks import UnsafeDestination, check_destination, new_secret
from services.pagination import Page, decode_cursor, paginate, split_page
from services.vocabulary import region_prefix

OWNERS = (Role.enterprise, Role.admin)
Key = tuple[QueryableAttribute[datetime], QueryableAttribute[uuid.UUID]]
UNREAD_COUNTED = 1000  # the unread count stops here ("1000 or more")
ATTEMPTS_SHOWN = 20  # the latest attempts of each delivery in its log


async def _newest_first(
    session: AsyncSession, stmt: Select[*tuple[Any, ...]], *, key: Key, cursor: str | None, limit: int
) -> tuple[Sequence[Any], str | None]:
    """One page of ``stmt``'s rows, newest first by ``key`` (the first entity of each row carries it), and
    the next page's cursor."""
    page = paginate(stmt, key=key, cursor=decode_cursor(cursor), limit=limit, newest_first=True)
    rows = (await session.execute(page)).all()
    at, ident = key[0].key, key[1].key
    return split_page(rows, limit, lambda row: (getattr(row[0], at), getattr(row[0], ident)))


# --- webhook endpoints -------------------------------------------------------------------------------------


def _endpoint_read(endpoint: WebhookEndpoint) -> WebhookEndpointRead:
    return WebhookEndpointRead.model_validate(endpoint, from_attributes=True)


async def register_endpoint(
    session: AsyncSession, *, user: CurrentUser, data: WebhookEndpointCreate, allow_private: bool
) -> WebhookEndpointCreated:
    """An enterprise's endpoint (its own events) or an admin's (any); the URL is checked now - form, scheme,
    and where its host resolves - and again before every call. The secret is in this answer only."""
    user.require(*OWNERS)
    try:
        await check_destination(data.url, allow_private=allow_private)
    except UnsafeDestination as exc:
        raise Unprocessable(str(exc), errors=[FieldError(field="url", message=str(exc))]) from None
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        owner=user.identity,
        owner_role=user.role.value,
        uscc=user.uscc if user.role is Role.enterprise else None,
        url=data.url,
        description=data.description,
        event_types=list(data.event_types),
        secret=new_secret(),
        created_by=user.sub,
    )
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    return WebhookEndpointCreated(**_endpoint_read(endpoint).model_dump(), secret=endpoint.secret)


def _owned_by(user: CurrentUser) -> ColumnElement[bool]:
    """The endpoints a caller may see: an admin all, anyone else those it registered."""
    return true() if user.role is Role.admin else WebhookEndpoint.owner == user.identity


async def _endpoint(session: AsyncSession, user: CurrentUser, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    user.require(*OWNERS)
    endpoint = await session.scalar(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.deleted_at.is_(None), _owned_by(user))
        .with_for_update()
    )
    if endpoint is None:
        raise NotFound("No such webhook endpoint.")
    return endpoint


async def list_endpoints(
    session: AsyncSession, *, user: CurrentUser, cursor: str | None, limit: int
) -> Page[WebhookEndpointRead]:
    user.require(*OWNERS)
    stmt = select(WebhookEndpoint).where(WebhookEndpoint.deleted_at.is_(None), _owned_by(user))
    key = (WebhookEndpoint.created_at, WebhookEndpoint.id)
    page, next_cursor = await _newest_first(session, stmt, key=key, cursor=cursor, limit=limit)
    return Page(items=[_endpoint_read(row) for (row,) in page], next_cursor=next_cursor)


async def delete_endpoint(session: AsyncSession, *, user: CurrentUser, endpoint_id: uuid.UUID) -> None:
    """No more deliveries to it: those still pending are dead-lettered (its log stays readable to admins)."""
    endpoint = await _endpoint(session, user, endpoint_id)
    endpoint.deleted_at = func.now()
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == "pending")
        .values(status="dead", dead_at=func.now(), last_error="the endpoint was deleted")
    )
    await session.flush()


async def rotate_secret(
    session: AsyncSession, *, user: CurrentUser, endpoint_id: uuid.UUID, data: SecretRotation
) -> WebhookEndpointCreated:
    """A new secret, shown once; the old one keeps signing beside it for ``overlap``."""
    endpoint = await _endpoint(session, user, endpoint_id)
    now = await session.scalar(select(func.now()))
    assert now is not None
    endpoint.previous_secret, endpoint.previous_secret_expires_at = endpoint.secret, now + data.overlap
    endpoint.secret = new_secret()
    await session.flush()
    return WebhookEndpointCreated(**_endpoint_read(endpoint).model_dump(), secret=endpoint.secret)


# --- deliveries -------------------------------------------------------------------------------------------


_DELIVERY_FIELDS = (
    "id endpoint_id event_id status attempts last_status_code created_at delivered_at dead_at".split()
)
"""What a delivery's read says as its row does."""


async def _delivery_reads(
    session: AsyncSession, rows: Sequence[tuple[WebhookDelivery, str]]
) -> list[DeliveryRead]:
    ids = [delivery.id for delivery, _ in rows]
    attempts: dict[uuid.UUID, list[AttemptRead]] = {delivery_id: [] for delivery_id in ids}
    if ids:
        ranked = (
            select(
                WebhookAttempt,
                func.row_number()
                .over(partition_by=WebhookAttempt.delivery_id, order_by=WebhookAttempt.id.desc())
                .label("rank"),
            )
            .where(WebhookAttempt.delivery_id.in_(ids))
            .subquery()
        )
        for attempt in (await session.execute(select(ranked).where(ranked.c.rank <= ATTEMPTS_SHOWN))).all():
            attempts[attempt.delivery_id].append(AttemptRead.model_validate(attempt, from_attributes=True))
    return [
        DeliveryRead(
            **fields_of(delivery, _DELIVERY_FIELDS),
            event_type=event_type,
            next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
            attempt_log=attempts[delivery.id],
        )
        for delivery, event_type in rows
    ]


async def list_deliveries(
    session: AsyncSession,
    *,
    user: CurrentUser,
    endpoint_id: uuid.UUID | None,
    status: DeliveryStatus | None,
    cursor: str | None,
    limit: int,
) -> Page[DeliveryRead]:
    """An endpoint's delivery log (its owner, admins), newest first; without an endpoint, every endpoint's
    (admins only: the dead letters to replay, with ``status=dead``)."""
    if endpoint_id is not None:
        await _endpoint(session, user, endpoint_id)
    else:
        user.require(Role.admin)
    stmt = select(WebhookDelivery, OutboxEvent.type).join(
        OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id
    )
    if endpoint_id is not None:
        stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    key = (WebhookDelivery.created_at, WebhookDelivery.id)
    page, next_cursor = await _newest_first(session, stmt, key=key, cursor=cursor, limit=limit)
    return Page(items=await _delivery_reads(session, page), next_cursor=next_cursor)


async def retry_delivery(session: AsyncSession, *, user: CurrentUser, delivery_id: uuid.UUID) -> DeliveryRead:
    """Deliver again, as soon as the relay can: a dead letter replayed, a delivered one sent once more (with
    the same ``webhook-id``), a pending one brought forward. Its place in its aggregate's order is its own."""
    user.require(*OWNERS)
    found = (
        await session.execute(
            select(WebhookDelivery, OutboxEvent.type)
            .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id, WebhookEndpoint.deleted_at.is_(None), _owned_by(user))
            .with_for_update(of=WebhookDelivery)
        )
    ).one_or_none()
    if found is None:
        raise NotFound("No such delivery.")
    delivery, _ = found
    now = await session.scalar(select(func.now()))
    assert now is not None
    delivery.status, delivery.next_attempt_at, delivery.dead_at = "pending", now, None
    # The retry window starts again: a replayed dead letter gets its three days.
    delivery.created_at = now
    delivery.leased_until = None
    await session.flush()
    return (await _delivery_reads(session, [found]))[0]


# --- the in-app feed --------------------------------------------------------------------------------------


def audience(user: CurrentUser) -> ColumnElement[bool]:
    """The events in a caller's feed: an admin's all; an enterprise's those about it; a reviewer's those of
    its level in a region it covers, and those of its groups; finance's those for finance."""
    match user.role:
        case Role.admin:
            return true()
        case Role.enterprise:
            return OutboxEvent.uscc == user.uscc
        case Role.reviewer:
            assert user.level is not None
            assert user.region is not None
            scope = and_(
                OutboxEvent.reviewer_level == user.level,
                OutboxEvent.region_code.startswith(region_prefix(user.region), autoescape=True),
            )
            return or_(scope, OutboxEvent.group_name.in_(user.groups)) if user.groups else scope
        case Role.finance:
            return OutboxEvent.finance.is_(True)
    return false()


def _read_by(user: CurrentUser) -> ColumnElement[bool]:
    return exists().where(ReadMark.reader == user.identity, ReadMark.event_id == OutboxEvent.id)


async def unread_count(session: AsyncSession, *, user: CurrentUser) -> int:
    """How many of the caller's notifications are unread, counted up to ``UNREAD_COUNTED`` (one query)."""
    unread = select(OutboxEvent.id).where(audience(user), ~_read_by(user)).limit(UNREAD_COUNTED)
    return await session.scalar(select(func.count()).select_from(unread.subquery())) or 0


async def feed(
    session: AsyncSession, *, user: CurrentUser, unread_only: bool, cursor: str | None, limit: int
) -> NotificationPage:
    unread = await unread_count(session, user=user)
    stmt = select(OutboxEvent, _read_by(user).label("read")).where(audience(user))
    if unread_only:
        stmt = stmt.where(~_read_by(user))
    key = (OutboxEvent.occurred_at, OutboxEvent.id)
    page, next_cursor = await _newest_first(session, stmt, key=key, cursor=cursor, limit=limit)
    return NotificationPage(
        items=[_notification(event, read) for event, read in page],
        next_cursor=next_cursor,
        unread_count=unread,
    )


def _notification(event: OutboxEvent, read: bool) -> NotificationRead:
    return NotificationRead.model_validate(event, from_attributes=True).model_copy(update={"read": read})


async def mark_read(session: AsyncSession, *, user: CurrentUser, event_id: uuid.UUID) -> NotificationRead:
    """Mark one of the caller's notifications read (again: no change); 404 for one not in its feed."""
    event = await session.scalar(select(OutboxEvent).where(OutboxEvent.id == event_id, audience(user)))
    if event is None:
        raise NotFound("No such notification.")
    await session.execute(
        insert(ReadMark).values(reader=user.identity, event_id=event.id).on_conflict_do_nothing()
    )
    return _notification(event, True)
