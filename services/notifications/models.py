"""ORM models of notifications: webhook endpoints, their deliveries and each delivery's attempts, the e-mail
messages, and which feed entries a caller has read. The events themselves are the outbox's
(services/events.py)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base

DELIVERY_STATUSES = ("pending", "delivered", "dead")
MAIL_STATUSES = ("pending", "sent", "dead")


class WebhookEndpoint(Base):
    """A URL that receives the events it subscribes to, signed with its secret (Standard Webhooks). An
    enterprise's endpoint receives only its own events (``uscc``); an admin's, any. A rotated secret keeps
    signing beside the new one until ``previous_secret_expires_at``."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(64), index=True)  # CurrentUser.identity of who registered it
    owner_role: Mapped[str] = mapped_column(String(20))
    uscc: Mapped[str | None] = mapped_column(String(18))  # an enterprise's endpoint: its events only
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))  # empty: every type
    secret: Mapped[str] = mapped_column(String(100))
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    deleted_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_webhook_endpoints_live", "id", postgresql_where="deleted_at IS NULL"),)


class Retried:
    """What the relay keeps of a message it sends until it arrives (a webhook delivery, an e-mail): pending,
    then delivered (or sent), or dead once its retries ran out; attempts so far, when the next is due, the
    lease a relay holds while it tries, the last error."""

    status: Mapped[str] = mapped_column(String(12), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(server_default=func.now())
    leased_until: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    dead_at: Mapped[datetime | None]

    @staticmethod
    def constraints(table: str, statuses: tuple[str, ...]) -> tuple[CheckConstraint, Index]:
        """A table's known statuses, and the relay's work: its pending rows by when they are due."""
        known = CheckConstraint(
            "status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")", name="status_known"
        )
        return known, Index(f"ix_{table}_due", "next_attempt_at", postgresql_where="status = 'pending'")


class WebhookDelivery(Retried, Base):
    """One event for one endpoint, delivered at least once. Deliveries of one endpoint and aggregate go out in
    ``event_seq`` order: a delivery is tried only when none before it is still pending."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("outbox_events.id"))
    event_seq: Mapped[int] = mapped_column(BigInteger)
    aggregate_id: Mapped[uuid.UUID]
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    delivered_at: Mapped[datetime | None]

    __table_args__ = (
        *Retried.constraints("webhook_deliveries", DELIVERY_STATUSES),
        Index("uq_webhook_deliveries_event_endpoint", "event_id", "endpoint_id", unique=True),
        # ... and whether an earlier one of the same endpoint and aggregate is still pending.
        Index(
            "ix_webhook_deliveries_order",
            "endpoint_id",
            "aggregate_id",
            "event_seq",
            postgresql_where="status = 'pending'",
        ),
        # An endpoint's delivery log, newest first; the dead letters an admin replays.
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "created_at", "id"),
        Index("ix_webhook_deliveries_dead", "dead_at", "id", postgresql_where="status = 'dead'"),
    )


class WebhookAttempt(Base):
    """One HTTP call of a delivery: the status code (none when the call failed), how long it took, and at
    most a short prefix of what the receiver answered."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(server_default=func.now())
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(300))
    response_prefix: Mapped[str | None] = mapped_column(String(200))


class NotificationRead(Base):
    """A feed entry (an outbox event) that a caller has marked read."""

    __tablename__ = "notification_reads"

    reader: Mapped[str] = mapped_column(String(64), primary_key=True)  # CurrentUser.identity
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("outbox_events.id"), primary_key=True)
    read_at: Mapped[datetime] = mapped_column(server_default=func.now())


class MailMessage(Retried, Base):
    """One event e-mailed to one address (services/notifications/mail.py), rendered when the relay fans the
    event out - subject and text as sent, in Chinese and English - and sent at least once through SMTP with
    the webhooks' retries; ``sent`` once the server accepted it, ``dead`` when it refused the recipient for
    good or the retry window ran out. ``recipient_kind`` says why the address got it: ``enterprise`` (its
    contact address), ``finance``, ``reviewers`` or ``group`` (a program's mailboxes)."""

    __tablename__ = "mail_messages"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("outbox_events.id"))
    event_type: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str] = mapped_column(String(254))
    recipient_kind: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str] = mapped_column(String(400))
    body: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime | None]

    __table_args__ = (
        *Retried.constraints("mail_messages", MAIL_STATUSES),
        Index("uq_mail_messages_event_recipient", "event_id", "recipient", unique=True),
        # `giantflow mail list`: newest first.
        Index("ix_mail_messages_created", "created_at", "id"),
    )
