"""E-mail against a real SMTP server (aiosmtpd) on loopback: who gets an event (the enterprise's contact
address, a program's finance, reviewer and group mailboxes), the bilingual message that arrives, and the
webhooks' retry, backoff and dead-letter rules when the server refuses or is down."""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from typer.testing import CliRunner

from devtools.devstack import free_port
from devtools.mailsink import Mailbox, serve
from devtools.seeding import random_uscc
from services.applications.models import Enterprise
from services.applications.schemas import EnterpriseCreate
from services.config import PROJECT_ROOT, Settings, get_settings
from services.events import EVENT_MODELS, Audience, ReviewTaskEscalated
from services.notifications.mail import Mailer, compose
from services.notifications.models import MailMessage
from services.notifications.relay import FAN_OUT_BATCH, Relay, backoff
from services.programs import Program, load_programs
from tests.notifications.conftest import approved, emit_all, make_due, submitted

DEMO = load_programs(PROJECT_ROOT / "programs")["demo"]


@dataclass
class Smtp:
    mailbox: Mailbox
    port: int

    def to(self, event_id: uuid.UUID) -> dict[str, EmailMessage]:
        """What arrived about one event, by recipient."""
        return {
            address: item.message
            for item in self.mailbox.received
            if item.message["X-Giantflow-Event-Id"] == str(event_id)
            for address in item.rcpt_tos
        }


@pytest.fixture(autouse=True)
async def _nothing_else_to_mail(relay: Relay) -> None:
    """Events other tests left (the domains' tests emit without a relay) are fanned out with mail off
    first, so that a test's relay mails only what the test emits."""
    while await relay.fan_out(wait=True) == FAN_OUT_BATCH:
        pass


@pytest.fixture
async def smtp() -> AsyncIterator[Smtp]:
    """A real aiosmtpd server on loopback (devtools.mailsink), accepting everything."""
    mailbox = Mailbox()
    port = free_port()
    server = await serve(mailbox, "127.0.0.1", port)
    yield Smtp(mailbox, port)
    server.close()
    await server.wait_closed()


Mailing = Callable[..., Relay]


@pytest.fixture
async def mailing(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> AsyncIterator[Mailing]:
    """Relays whose mail goes to the SMTP server on a port (``mailing(port, **more settings)``), closed when
    the test ends."""
    made: list[Relay] = []

    def make(port: int, **more: Any) -> Relay:
        update = {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
            "smtp_timeout_seconds": 2.0,
            "webhook_timeout_seconds": 2.0,
            **more,
        }
        made.append(Relay(sessionmaker, settings.model_copy(update=update)))
        return made[-1]

    yield make
    for relay in made:
        await relay.close()


async def enterprise_with(sessionmaker: async_sessionmaker[AsyncSession], contact: str | None) -> str:
    uscc = random_uscc("500103")
    async with sessionmaker() as session, session.begin():
        session.add(
            Enterprise(
                uscc=uscc,
                name=f"重庆示例科技 {uscc[-4:]}",
                region_code="500103",
                industry="machinery",
                founded_on=date(2010, 1, 1),
                contact_email=contact,
                registered_by="test",
            )
        )
    return uscc


async def messages(sessionmaker: async_sessionmaker[AsyncSession], event_id: uuid.UUID) -> list[MailMessage]:
    async with sessionmaker() as session:
        rows = await session.scalars(
            select(MailMessage).where(MailMessage.event_id == event_id).order_by(MailMessage.recipient)
        )
        return list(rows)


async def test_a_payout_event_reaches_the_enterprise_and_finance_in_chinese_and_english(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, smtp: Smtp, mailing: Mailing
) -> None:
    contact = "Finance.Dept@example.cn"
    uscc = await enterprise_with(sessionmaker, contact)
    [event_id] = await emit_all(sessionmaker, [(approved(uscc), Audience(uscc=uscc, finance=True))])
    await mailing(smtp.port).run_once()

    got = smtp.to(event_id)
    assert set(got) == {contact, *DEMO.notifications.finance}
    rows = await messages(sessionmaker, event_id)
    assert {(row.recipient, row.recipient_kind, row.status, row.attempts) for row in rows} == {
        (contact, "enterprise", "sent", 1),
        *((address, "finance", "sent", 1) for address in DEMO.notifications.finance),
    }
    by_address = {row.recipient: row for row in rows}
    for address, message in got.items():
        assert message["To"] == address
        assert message["From"] == settings.smtp_from
        assert message["Subject"] == f"[giantflow] 款项已批准 / Payout approved: 重庆示例科技 {uscc[-4:]}"
        assert message["Message-ID"] == f"<{by_address[address].id}@giantflow.localhost>"
        assert message["X-Giantflow-Event-Type"] == "payout.approved"
        body = message.get_content()
        assert body == by_address[address].body
        chinese, english = body.split("-" * 60)
        assert "授信提款 ¥1,500,000.00 已批准" in chinese
        assert "企业：重庆示例科技" in chinese
        assert "The drawdown of ¥1,500,000.00 for 重庆示例科技" in english
        assert "was approved" in english
        assert str(event_id) in chinese
        assert str(event_id) in english


async def test_groups_and_reviewers_get_their_programs_events_and_an_enterprise_without_an_address_none(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: Smtp, mailing: Mailing
) -> None:
    uscc = await enterprise_with(sessionmaker, None)
    escalated = ReviewTaskEscalated(
        application_id=uuid.uuid4(),
        uscc=uscc,
        program="demo",
        tier="specialized_new",
        status="in_review",
        stage="municipal",
        escalation_group=DEMO.escalation_group,
    )
    overdue, quiet = await emit_all(
        sessionmaker,
        [
            (
                escalated,
                Audience(reviewer_level="municipal", region_code="500103", group=DEMO.escalation_group),
            ),
            (submitted(uscc), Audience(uscc=uscc)),
        ],
    )
    await mailing(smtp.port).run_once()

    expected = {
        *((address, "reviewers") for address in DEMO.notifications.reviewers["municipal"]),
        *((address, "group") for address in DEMO.notifications.groups[DEMO.escalation_group]),
    }
    rows = await messages(sessionmaker, overdue)
    assert {(row.recipient, row.recipient_kind) for row in rows} == expected
    assert set(smtp.to(overdue)) == {address for address, _ in expected}
    subject = next(iter(smtp.to(overdue).values()))["Subject"]
    assert subject.startswith("[giantflow] 评审任务已升级 / Review task escalated")
    assert await messages(sessionmaker, quiet) == []  # its enterprise has no address; no staff audience
    assert smtp.to(quiet) == {}


async def test_a_refusing_server_leaves_the_message_pending_with_a_retry_then_it_is_sent_once(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: Smtp, mailing: Mailing
) -> None:
    uscc = await enterprise_with(sessionmaker, "contact@example.cn")
    [event_id] = await emit_all(sessionmaker, [(submitted(uscc), Audience(uscc=uscc))])
    relay = mailing(smtp.port)
    smtp.mailbox.refuse_data = "451 4.3.0 Try again later"
    await relay.run_once()

    [row] = await messages(sessionmaker, event_id)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "451 4.3.0 Try again later")
    assert row.next_attempt_at > row.created_at
    assert smtp.to(event_id) == {}

    smtp.mailbox.refuse_data = None
    await relay.run_once()  # not due yet: the backoff holds
    assert smtp.to(event_id) == {}
    await make_due(sessionmaker, MailMessage, MailMessage.event_id == event_id)
    await relay.run_once()
    [row] = await messages(sessionmaker, event_id)
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, None)
    assert row.sent_at is not None
    assert [item.rcpt_tos for item in smtp.mailbox.received if item.message["Subject"] == row.subject] == [
        ["contact@example.cn"]
    ]


async def test_a_server_that_is_down_means_a_retry_and_past_the_window_a_dead_letter(
    sessionmaker: async_sessionmaker[AsyncSession], mailing: Mailing
) -> None:
    uscc = await enterprise_with(sessionmaker, "contact@example.cn")
    first, second = await emit_all(
        sessionmaker, [(submitted(uscc), Audience(uscc=uscc)), (submitted(uscc), Audience(uscc=uscc))]
    )
    nobody = free_port()  # nothing listens there
    await mailing(nobody).run_once()
    [row] = await messages(sessionmaker, first)
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error is not None
    assert row.next_attempt_at > row.created_at

    [other] = await messages(sessionmaker, second)  # the same round, the same fate
    assert (other.status, other.attempts) == ("pending", 1)

    for event_id in (first, second):
        await make_due(sessionmaker, MailMessage, MailMessage.event_id == event_id)
    await mailing(nobody, webhook_retry_for=timedelta(0)).run_once()
    for event_id in (first, second):
        [row] = await messages(sessionmaker, event_id)
        assert (row.status, row.attempts) == ("dead", 2)
        assert row.dead_at is not None


async def test_a_recipient_the_server_refuses_for_good_is_dead_at_once(
    sessionmaker: async_sessionmaker[AsyncSession], smtp: Smtp, mailing: Mailing
) -> None:
    uscc = await enterprise_with(sessionmaker, "gone@example.cn")
    [event_id] = await emit_all(sessionmaker, [(submitted(uscc), Audience(uscc=uscc))])
    smtp.mailbox.refuse_rcpt = "550 5.1.1 No such mailbox"
    await mailing(smtp.port).run_once()
    [row] = await messages(sessionmaker, event_id)
    assert (row.status, row.attempts, row.last_error) == ("dead", 1, "550 5.1.1 No such mailbox")


async def test_without_an_smtp_host_no_mail_is_made(
    sessionmaker: async_sessionmaker[AsyncSession], relay: Relay
) -> None:
    assert relay.settings.smtp_host is None
    uscc = await enterprise_with(sessionmaker, "contact@example.cn")
    [event_id] = await emit_all(sessionmaker, [(approved(uscc), Audience(uscc=uscc, finance=True))])
    await relay.run_once()
    assert await messages(sessionmaker, event_id) == []


def test_every_event_type_composes_in_both_languages() -> None:
    samples: dict[str, Any] = {
        "application_id": uuid.uuid4(),
        "recognition_id": uuid.uuid4(),
        "payout_id": uuid.uuid4(),
        "objection_id": uuid.uuid4(),
    }
    for event_type in EVENT_MODELS:
        subject, body = compose(
            event_id=uuid.uuid4(),
            event_type=event_type,
            occurred_at=datetime.now().astimezone(),
            data={"uscc": "91500103MA5U000000", "program": "demo", **samples},  # a partial payload
            enterprise=None,
            program=DEMO,
        )
        assert subject.startswith("[giantflow] ")
        assert " / " in subject
        chinese, english = body.split("-" * 60)
        assert "giantflow" in chinese
        assert "请勿" in chinese
        assert "do not reply" in english
        assert "%(" not in body


def test_the_contact_address_is_checked_and_kept_with_its_domain_in_lower_case() -> None:
    base = {
        "uscc": random_uscc("500103"),
        "name": "示例",
        "region_code": "500103",
        "industry": "machinery",
        "founded_on": "2012-01-01",
    }
    assert EnterpriseCreate.model_validate(base).contact_email is None
    chosen = EnterpriseCreate.model_validate({**base, "contact_email": " Ops@Example.CN "})
    assert chosen.contact_email == "Ops@example.cn"
    for bad in [
        "ops",
        "ops@localhost",
        "ops@@example.cn",
        "o ps@example.cn",
        "ops@example..cn",
        "ops@1.2.3.4",
    ]:
        with pytest.raises(ValidationError):
            EnterpriseCreate.model_validate({**base, "contact_email": bad})


def test_a_programs_mailboxes_are_checked() -> None:
    data = tomllib.loads((PROJECT_ROOT / "programs" / "demo.toml").read_text())
    assert Program.model_validate({**data, "notifications": {}}).notifications.finance == []
    for wrong in [
        {"finance": ["not an address"]},
        {"reviewers": {"county": ["a@example.cn"]}},
        {"groups": {"someone-else": ["a@example.cn"]}},  # not the program's escalation group
        {"pager": ["a@example.cn"]},
    ]:
        with pytest.raises(ValidationError):
            Program.model_validate({**data, "notifications": wrong})


async def test_the_relays_mailer_uses_its_backoff_and_is_off_without_an_smtp_host(
    relay: Relay, mailing: Mailing
) -> None:
    assert isinstance(relay.mail, Mailer)
    assert relay.mail.backoff is backoff
    assert not relay.mail.enabled
    assert mailing(free_port()).mail.enabled


async def test_giantflow_mail_lists_and_shows_what_was_sent(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    smtp: Smtp,
    monkeypatch: pytest.MonkeyPatch,
    mailing: Mailing,
) -> None:
    uscc = await enterprise_with(sessionmaker, "cli@example.cn")
    [event_id] = await emit_all(sessionmaker, [(submitted(uscc), Audience(uscc=uscc))])
    await mailing(smtp.port).run_once()
    [row] = await messages(sessionmaker, event_id)

    from services.cli import app

    monkeypatch.setenv("GIANTFLOW_DATABASE_URL", settings.effective_database_url)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        commands = [
            ["mail", "list", "--limit", "50"],
            ["mail", "show", str(row.id)[:13]],
            ["mail", "show", str(row.id), "--raw"],
        ]  # each runs its own event loop: on a thread of its own
        listed, shown, raw = await asyncio.to_thread(lambda: [runner.invoke(app, args) for args in commands])
    finally:
        get_settings.cache_clear()
    assert listed.exit_code == 0, listed.output
    assert str(row.id)[:8] in listed.output
    assert "cli@example.cn" in listed.output
    assert shown.exit_code == 0, shown.output
    assert "申请已提交" in shown.output
    assert "was submitted in batch demo-2026" in shown.output
    assert "sent, 1 attempt(s)" in shown.output
    assert raw.exit_code == 0, raw.output
    assert f"Message-ID: <{row.id}@giantflow.localhost>" in raw.output
