"""HTTP routes of notifications: webhook endpoints and their delivery logs, and the caller's feed. Routes
parse, call the service and return; the request's session commits once after the route returns."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from services.deps import ListingDep, StrictQueryRoute
from services.errors import READ_ERRORS, READ_ONE_ERRORS, problem_responses
from services.events import EVENT_MODELS
from services.notifications import schemas, service
from services.pagination import Page
from services.writes import WriteDep

router = APIRouter(tags=["notifications"], route_class=StrictQueryRoute)

WRITE_ERRORS = problem_responses(401, 403, 404, 409, 422, 429)


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=schemas.WebhookEndpointCreated,
    responses=WRITE_ERRORS,
)
async def register_endpoint(body: schemas.WebhookEndpointCreate, write: WriteDep) -> Any:
    """Register a URL for deliveries: an enterprise for its own events, an admin for any. Deliveries follow
    Standard Webhooks; the `secret` that signs them is in this response only. Outside development the URL
    is https and must not resolve to a loopback or private address."""
    return await write.once(
        endpoint="POST /webhook-endpoints",
        payload=body,
        status_code=201,
        act=lambda: service.register_endpoint(
            write.session,
            user=write.user,
            data=body,
            allow_private=write.resources.settings.webhooks_may_reach_private,
        ),
    )


@router.get("/webhook-endpoints", response_model=Page[schemas.WebhookEndpointRead], responses=READ_ERRORS)
async def list_endpoints(listing: ListingDep) -> Page[schemas.WebhookEndpointRead]:
    """The caller's endpoints (an admin: every endpoint), newest first."""
    return await service.list_endpoints(listing.session, user=listing.user, **listing.page)


@router.delete("/webhook-endpoints/{endpoint_id}", status_code=204, responses=WRITE_ERRORS)
async def delete_endpoint(endpoint_id: uuid.UUID, write: WriteDep) -> Response:
    """Stop deliveries to an endpoint; those still pending are dead-lettered."""
    await service.delete_endpoint(write.session, user=write.user, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=schemas.WebhookEndpointCreated,
    responses=WRITE_ERRORS,
)
async def rotate_secret(endpoint_id: uuid.UUID, body: schemas.SecretRotation, write: WriteDep) -> Any:
    """A new signing secret, shown once; deliveries carry a signature with each secret until `overlap` ends,
    so a receiver can switch without losing one."""
    return await write.once(
        endpoint=f"POST /webhook-endpoints/{endpoint_id}/rotate-secret",
        payload=body,
        act=lambda: service.rotate_secret(write.session, user=write.user, endpoint_id=endpoint_id, data=body),
    )


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=Page[schemas.DeliveryRead],
    responses=READ_ONE_ERRORS,
)
async def list_endpoint_deliveries(
    endpoint_id: uuid.UUID, listing: ListingDep, status: schemas.DeliveryStatus | None = None
) -> Page[schemas.DeliveryRead]:
    """An endpoint's delivery log, newest first: each delivery's state and its latest attempts with their
    status code and latency."""
    return await service.list_deliveries(
        listing.session, user=listing.user, endpoint_id=endpoint_id, status=status, **listing.page
    )


@router.get("/webhook-deliveries", response_model=Page[schemas.DeliveryRead], responses=READ_ERRORS)
async def list_deliveries(
    listing: ListingDep, status: schemas.DeliveryStatus | None = None
) -> Page[schemas.DeliveryRead]:
    """Every endpoint's deliveries (admin), newest first; `status=dead` lists the dead letters to replay."""
    return await service.list_deliveries(
        listing.session, user=listing.user, endpoint_id=None, status=status, **listing.page
    )


@router.post(
    "/webhook-deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=schemas.DeliveryRead,
    responses=WRITE_ERRORS,
)
async def retry_delivery(delivery_id: uuid.UUID, write: WriteDep) -> schemas.DeliveryRead:
    """Deliver again as soon as the relay can (a dead letter replayed, with three more days of retries)."""
    return await service.retry_delivery(write.session, user=write.user, delivery_id=delivery_id)


@router.get("/notifications", response_model=schemas.NotificationPage, responses=READ_ERRORS)
async def list_notifications(
    listing: ListingDep, unread: Annotated[bool, Query(description="only those not read yet")] = False
) -> schemas.NotificationPage:
    """The caller's feed, newest first: the events addressed to its role, scope and groups, with the unread
    count (counted up to 1000)."""
    return await service.feed(listing.session, user=listing.user, unread_only=unread, **listing.page)


@router.post(
    "/notifications/{notification_id}/read",
    response_model=schemas.NotificationRead,
    responses=READ_ONE_ERRORS,
)
async def mark_read(notification_id: uuid.UUID, write: WriteDep) -> schemas.NotificationRead:
    return await service.mark_read(write.session, user=write.user, event_id=notification_id)


def document_webhooks(webhooks: APIRouter) -> None:
    """Each event type as an OpenAPI webhook: the body a delivery posts, ``{type, timestamp, data}``."""
    for event_type, model in EVENT_MODELS.items():
        webhooks.add_api_route(
            event_type,
            _webhook_doc(model),
            methods=["POST"],
            summary=event_type,
            description=(model.__doc__ or "")
            + "\n\nHeaders: webhook-id (the event's id), webhook-timestamp, "
            "webhook-signature (Standard Webhooks, v1 HMAC-SHA256 over id.timestamp.body).",
        )


def _webhook_doc(model: Any) -> Any:
    from typing import Literal

    from pydantic import AwareDatetime, BaseModel, create_model

    body: type[BaseModel] = create_model(
        "Webhook_" + model.type.replace(".", "_"),
        type=(Literal[model.type], ...),  # type: ignore[arg-type]
        timestamp=(AwareDatetime, ...),
        data=(model, ...),
    )

    async def receive(payload: Any) -> None:
        """Answer 2xx within 10 s; anything else is retried."""

    receive.__annotations__["payload"] = body  # the model itself, not a name to resolve later
    return receive
