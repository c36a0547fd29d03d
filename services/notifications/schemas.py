"""Request and response bodies of the notification routes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.events import EVENT_MODELS, EventType

DeliveryStatus = Literal["pending", "delivered", "dead"]


class WebhookEndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2000, description="https URL that receives the deliveries")
    event_types: list[EventType] = Field(
        default_factory=list,
        max_length=len(EVENT_MODELS),
        description="the event types it receives; empty: every type",
    )
    description: str = Field(default="", max_length=200)

    @field_validator("event_types")
    @classmethod
    def _distinct(cls, value: list[EventType]) -> list[EventType]:
        if len(set(value)) != len(value):
            raise ValueError("an event type is listed twice")
        return value


class WebhookEndpointRead(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[EventType]
    description: str
    uscc: str | None = Field(description="an enterprise's endpoint receives only that enterprise's events")
    created_by: str
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="while a rotated secret still signs beside the new one: until when"
    )


class WebhookEndpointCreated(WebhookEndpointRead):
    secret: str = Field(description="the signing secret (whsec_...), shown only in this response")


class SecretRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overlap_hours: int = Field(
        default=24, ge=0, le=168, description="how long the old secret keeps signing beside the new one"
    )

    @property
    def overlap(self) -> timedelta:
        return timedelta(hours=self.overlap_hours)


class AttemptRead(BaseModel):
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    response_prefix: str | None = Field(description="at most the first 200 characters of the answer")


class DeliveryRead(BaseModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID = Field(description="the webhook-id every attempt carries")
    event_type: EventType
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    created_at: datetime
    delivered_at: datetime | None
    dead_at: datetime | None
    attempt_log: list[AttemptRead]


class NotificationRead(BaseModel):
    id: uuid.UUID
    type: EventType
    occurred_at: datetime
    data: dict[str, Any]
    read: bool = False


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    next_cursor: str | None = None
    unread_count: int = Field(description="how many of the caller's notifications are unread, on every page")
