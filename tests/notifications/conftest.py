from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest
from sqlalchemy import ColumnElement, func, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from devtools.devstack import free_port
from devtools.receiver import Receiver
from devtools.seeding import random_uscc
from services.auth import CurrentUser, Role
from services.config import Settings
from services.db import create_sessionmaker
from services.events import ApplicationSubmitted, Audience, Event, PayoutApproved, emit
from services.notifications import service
from services.notifications.models import MailMessage, WebhookDelivery, WebhookEndpoint
from services.notifications.relay import Relay
from services.notifications.schemas import WebhookEndpointCreate
from tests.support.servers import loopback_server


@pytest.fixture
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(autouse=True)
async def _no_endpoints_left(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """Relays fan out every event to every live endpoint: a test starts with none (those other tests left
    are deleted) and its own go when it ends, so that no relay calls another test's (nor sends its mail)."""

    async def clear() -> None:
        async with sessionmaker() as session, session.begin():
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.deleted_at.is_(None))
                .values(deleted_at=func.now())
            )
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.status == "pending").values(status="dead")
            )
            await session.execute(
                update(MailMessage).where(MailMessage.status == "pending").values(status="dead")
            )

    await clear()
    yield
    await clear()


@dataclass
class Peer:
    receiver: Receiver
    url: str


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    """A real webhook receiver on loopback (devtools.receiver), answering 204."""
    receiver = Receiver()
    port = free_port()
    server = loopback_server(receiver, port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield Peer(receiver, f"http://127.0.0.1:{port}/hooks")
    server.should_exit = True
    await task


@pytest.fixture
async def relay(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> AsyncIterator[Relay]:
    """A relay that may call the loopback receiver (as in development)."""
    relay = Relay(
        sessionmaker,
        settings.model_copy(update={"webhook_timeout_seconds": 2.0, "webhook_allow_private": True}),
    )
    yield relay
    await relay.close()


def enterprise(uscc: str | None = None) -> CurrentUser:
    uscc = uscc or random_uscc("500103")
    return CurrentUser(sub=f"ent-{uscc}", role=Role.enterprise, uscc=uscc)


ADMIN = CurrentUser(sub="admin-notifications", role=Role.admin)


async def register(
    sessionmaker: async_sessionmaker[AsyncSession], user: CurrentUser, url: str, *types: str
) -> service.WebhookEndpointCreated:
    async with sessionmaker() as session, session.begin():
        return await service.register_endpoint(
            session,
            user=user,
            data=WebhookEndpointCreate(url=url, event_types=list(types)),  # type: ignore[arg-type]
            allow_private=True,
        )


def submitted(uscc: str, application_id: uuid.UUID | None = None, status: str = "screening") -> Event:
    return ApplicationSubmitted(
        application_id=application_id or uuid.uuid4(),
        uscc=uscc,
        program="demo",
        tier="specialized_new",
        status=status,
        batch="demo-2026",
    )


def approved(uscc: str) -> Event:
    return PayoutApproved(
        payout_id=uuid.uuid4(),
        kind="drawdown",
        uscc=uscc,
        program="demo",
        amount=Decimal("1500000.00"),
        status="approved",
    )


async def emit_all(
    sessionmaker: async_sessionmaker[AsyncSession], events: Sequence[tuple[Event, Audience]]
) -> list[uuid.UUID]:
    """Commit ``events`` in one transaction, as a domain's change would."""
    async with sessionmaker() as session, session.begin():
        return [await emit(session, event, audience) for event, audience in events]


async def make_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    model: type[WebhookDelivery] | type[MailMessage],
    *where: ColumnElement[bool],
) -> None:
    """Bring every pending retry of ``model`` (webhook deliveries or e-mails) matching ``where`` forward to
    now: the backoff's wait, skipped."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(model).where(model.status == "pending", *where).values(next_attempt_at=model.created_at)
        )
