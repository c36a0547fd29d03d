"""E-mail: each event told, beside the webhooks, to the enterprise's contact address and to staff mailboxes.

**Who.** When the relay fans events out (relay.py, ``Relay.fan_out``), ``Mailer.fan_out`` makes one
``mail_messages`` row per event and recipient (unique), in the same transaction - so an event is mailed
exactly once to each address, or the fan-out is rolled back and done again:

- the enterprise's ``contact_email`` when the event's audience names its USCC. This package must not import
  the applications domain (the independence contract in pyproject.toml), so the fan-out reads the addresses
  of a whole batch with one plain SQL query on ``enterprises``. That keeps the address out of the event (its
  ``data`` is the webhook body every admin endpoint receives, and the domains write it), and an address
  changed before the event is fanned out - moments after its commit - is the one used;
- the program's staff mailboxes (the ``[notifications]`` table of its file, services/programs.py): finance's
  when the audience includes finance, a level's reviewers when it names a level, the group's when it names
  the program's escalation group. An address reached for two reasons gets one message.

**What.** The message is rendered at fan-out - subject and plain text in Chinese and in English, one after
the other (``templates/mail/event.txt``; the Chinese from ``locale/zh_CN/LC_MESSAGES/*.po``, merged and
compiled in memory as the console does) - and stored, so ``giantflow mail show`` prints what was sent and a
retry sends the same text under the same ``Message-ID`` (the row's id).

**How.** ``Mailer.send_due`` (called by ``Relay.run_once``) leases due messages (``SKIP LOCKED``, as the
webhooks are) and sends each through aiosmtplib on a connection of its own, every SMTP step within
``smtp_timeout_seconds``. The server's acceptance marks it ``sent``; a 5xx refusal of the recipient marks it
``dead`` at once (the mailbox does not exist: no retry can help); anything else - the server down, a
timeout, a 4xx - schedules the next attempt with the webhooks' backoff, until ``webhook_retry_for`` after the
row was made, when it is ``dead``. A batch in which nothing got through ends the round (the server is
likely down): what is left waits for the relay's next round instead of holding it up. Messages are not
ordered among themselves. With no ``smtp_host`` mail is off: no rows are made and nothing is sent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import aiosmtplib
import structlog
from babel.support import NullTranslations
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError
from sqlalchemy import String, bindparam, cast, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.config import Settings
from services.events import EVENT_MODELS, OutboxEvent
from services.i18n import catalogue
from services.notifications.models import MailMessage
from services.programs import Program, ProgramFileError

if TYPE_CHECKING:
    from services.catalog.registry import ProgramRegistry

log = structlog.get_logger("giantflow.mail")

HERE = Path(__file__).resolve().parent
LANGUAGES = ("zh_CN", "en")  # the parts of every message, in this order
SHANGHAI = ZoneInfo("Asia/Shanghai")
BATCH = 8  # messages leased, and sent at once (a connection each), per round
SUBJECT_PREFIX = "[giantflow]"
ERROR_CHARS = 300

ENTERPRISES = text("SELECT uscc, name, contact_email FROM enterprises WHERE uscc IN :usccs").bindparams(
    bindparam("usccs", expanding=True)
)

CLAIM = text(
    """
    WITH due AS (
        SELECT id FROM mail_messages
        WHERE status = 'pending' AND next_attempt_at <= now()
          AND (leased_until IS NULL OR leased_until < now())
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE mail_messages SET leased_until = now() + make_interval(secs => :lease)
    FROM due WHERE mail_messages.id = due.id
    RETURNING mail_messages.id, mail_messages.event_id, mail_messages.event_type, mail_messages.recipient,
              mail_messages.subject, mail_messages.body, mail_messages.attempts, mail_messages.created_at
    """
)


def N_(message: str) -> str:
    """Marks a message for extraction; it is translated where it is shown."""
    return message


# Per event type: the subject and the sentence that says what happened (placeholders: the event's fields,
# ``enterprise`` - its name and USCC - and ``program`` - the program's name).
TEXTS: dict[str, tuple[str, str]] = {
    "application.submitted": (
        N_("Application submitted"),
        N_(
            "The application of %(enterprise)s for %(tier)s in %(program)s was submitted in batch %(batch)s; "
            "screening starts now."
        ),
    ),
    "application.screened": (
        N_("Application screened"),
        N_(
            "The application of %(enterprise)s for %(tier)s in %(program)s was screened against the "
            "program's criteria."
        ),
    ),
    "application.returned": (
        N_("Application returned for a supplement"),
        N_(
            "The application of %(enterprise)s for %(tier)s in %(program)s was returned at the %(stage)s "
            "review for a supplement. Reason: %(reason)s"
        ),
    ),
    "application.supplement_due_soon": (
        N_("Supplement due soon"),
        N_(
            "The supplement to the application of %(enterprise)s for %(tier)s in %(program)s is due at "
            "%(supplement_due_at)s; after that the application is withdrawn."
        ),
    ),
    "application.decided": (
        N_("Review decision"),
        N_(
            "The %(stage)s review of the application of %(enterprise)s for %(tier)s in %(program)s decided: "
            "%(decision)s."
        ),
    ),
    "application.on_notice": (
        N_("Application on public notice"),
        N_(
            "The application of %(enterprise)s for %(tier)s in %(program)s is on public notice until "
            "%(notice_ends_at)s; objections may be filed until then."
        ),
    ),
    "application.supplemented": (
        N_("Application supplemented"),
        N_(
            "%(enterprise)s supplemented its application for %(tier)s in %(program)s; it is back in the "
            "%(stage)s review queue."
        ),
    ),
    "application.withdrawn": (
        N_("Application withdrawn"),
        N_("The application of %(enterprise)s for %(tier)s in %(program)s was withdrawn. Reason: %(reason)s"),
    ),
    "application.rejected": (
        N_("Application rejected"),
        N_("The application of %(enterprise)s for %(tier)s in %(program)s was rejected. Reason: %(reason)s"),
    ),
    "objection.filed": (
        N_("Objection filed"),
        N_(
            "An objection was filed against the application of %(enterprise)s for %(tier)s in %(program)s "
            "during its public notice."
        ),
    ),
    "application.recognized": (
        N_("Recognized"),
        N_(
            "%(enterprise)s is recognized as %(tier)s in %(program)s until %(valid_until)s "
            "(certificate %(certificate_no)s)."
        ),
    ),
    "recognition.expiring": (
        N_("Recognition expiring"),
        N_(
            "The recognition of %(enterprise)s as %(tier)s in %(program)s expires on %(valid_until)s; "
            "a re-review opens then."
        ),
    ),
    "recognition.revoked": (
        N_("Recognition revoked"),
        N_("The recognition of %(enterprise)s as %(tier)s in %(program)s was revoked. Reason: %(reason)s"),
    ),
    "review_task.overdue": (
        N_("Review task overdue"),
        N_(
            "The %(stage)s review of the application of %(enterprise)s for %(tier)s in %(program)s was due "
            "at %(due_at)s and is overdue."
        ),
    ),
    "review_task.escalated": (
        N_("Review task escalated"),
        N_(
            "The %(stage)s review of the application of %(enterprise)s for %(tier)s in %(program)s is "
            "overdue and was escalated to %(escalation_group)s."
        ),
    ),
    "payout.awaiting_approval": (
        N_("Payout awaiting approval"),
        N_(
            "The %(kind)s of %(amount)s for %(enterprise)s in %(program)s awaits approval "
            "(%(approvals_needed)s more needed)."
        ),
    ),
    "payout.approved": (
        N_("Payout approved"),
        N_("The %(kind)s of %(amount)s for %(enterprise)s in %(program)s was approved."),
    ),
    "payout.rejected": (
        N_("Payout not approved"),
        N_(
            "The %(kind)s of %(amount)s for %(enterprise)s in %(program)s was not approved (%(status)s). "
            "Reason: %(reason)s"
        ),
    ),
    "disbursement.paid": (
        N_("Payout paid"),
        N_(
            "The %(kind)s of %(amount)s for %(enterprise)s in %(program)s was paid by the bank "
            "(reference %(bank_reference)s)."
        ),
    ),
    "disbursement.refused": (
        N_("Payout refused by the bank"),
        N_(
            "The bank refused to pay the %(kind)s of %(amount)s for %(enterprise)s in %(program)s. "
            "Reason: %(reason)s"
        ),
    ),
    "bridge_loan.due_soon": (
        N_("Bridge loan due soon"),
        N_("The bridge loan of %(amount)s to %(enterprise)s in %(program)s is due on %(due_on)s."),
    ),
    "bridge_loan.overdue": (
        N_("Bridge loan overdue"),
        N_(
            "The bridge loan of %(amount)s to %(enterprise)s in %(program)s was due on %(due_on)s and is "
            "overdue."
        ),
    ),
    "drawdown.repaid": (
        N_("Drawdown repayment recorded"),
        N_(
            "A repayment of %(repayment)s on the drawdown of %(amount)s by %(enterprise)s in %(program)s was "
            "recorded; %(outstanding)s is outstanding."
        ),
    ),
    "drawdown.overdue": (
        N_("Drawdown overdue"),
        N_(
            "The drawdown of %(amount)s by %(enterprise)s in %(program)s was due at %(due_at)s and "
            "%(outstanding)s is overdue; the credit line takes no new drawdowns until it is repaid."
        ),
    ),
    "reconciliation.mismatch_found": (
        N_("Bank reconciliation found mismatches"),
        N_(
            "The bank's statement of %(day)s and the ledger disagree on %(mismatches)s payments: "
            "%(paid_not_posted)s paid but not posted, %(posted_not_paid)s posted but not paid, "
            "%(amount_differs)s with different amounts."
        ),
    ),
}
assert set(TEXTS) == set(EVENT_MODELS), "every event type has its subject and text"

# Fields of the payload listed under the sentence, with their labels.
DETAILS: dict[str, str] = {
    "application_id": N_("Application"),
    "recognition_id": N_("Recognition"),
    "payout_id": N_("Payout"),
    "objection_id": N_("Objection"),
    "certificate_no": N_("Certificate number"),
    "status": N_("Status"),
    "passed": N_("Passes screening"),
    "failed_rules": N_("Criteria not met"),
}
# Fields whose values are vocabulary words (services/vocabulary.py), translated where a catalogue has them.
VOCABULARY = frozenset({"tier", "status", "stage", "decision", "kind"})


# --- rendering -----------------------------------------------------------------------------------------


@cache
def translations(language: str) -> NullTranslations:
    """The gettext catalogue of a language, compiled in memory from the ``.po`` files of its folder; English
    is the messages themselves."""
    return catalogue(HERE / "locale" / language / "LC_MESSAGES", language)


@cache
def templates() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=False,  # plain text
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )


class _Blank(dict[str, str]):
    """Placeholder values; one an older payload lacks reads as a dash rather than failing the message."""

    def __missing__(self, key: str) -> str:
        return "-"


def _format(value: Any, gettext: Callable[[str], str]) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if isinstance(value, datetime):
        return f"{value.astimezone(SHANGHAI):%Y-%m-%d %H:%M} (UTC+8)"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return f"¥{value:,.2f}"
    if isinstance(value, list | tuple):
        return ", ".join(_format(item, gettext) for item in value)
    return str(value)


def _fields(event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The payload with its types back (dates, amounts), as its model reads it; as stored if it no longer
    fits the model."""
    model = EVENT_MODELS.get(event_type)
    if model is not None:
        try:
            return dict(model.model_validate(data))
        except ValidationError:
            pass
    return dict(data)


def _formatting(gettext: Callable[[str], str]) -> Callable[..., str]:
    """The templates' ``_``: translate, then fill in the named placeholders given."""

    def _(message: str, **values: Any) -> str:
        translated = gettext(message)
        return translated % values if values else translated

    return _


@dataclass(frozen=True)
class Enterprise:
    uscc: str
    name: str
    contact_email: str | None


def compose(
    *,
    event_id: uuid.UUID,
    event_type: str,
    occurred_at: datetime,
    data: Mapping[str, Any],
    enterprise: Enterprise | None,
    program: Program | None,
) -> tuple[str, str]:
    """The subject and the text of an event's message: Chinese, then English."""
    subject_id, summary_id = TEXTS.get(event_type, (event_type, event_type))
    fields = _fields(event_type, data)
    uscc = fields.get("uscc")
    who = f"{enterprise.name} ({enterprise.uscc})" if enterprise is not None else str(uscc or "-")
    subjects, parts = [], []
    for language in LANGUAGES:
        gettext = translations(language).gettext
        values = _Blank({key: _format(value, gettext) for key, value in fields.items()})
        for key in VOCABULARY & fields.keys():
            if isinstance(fields[key], str):
                values[key] = gettext(fields[key])
        values["enterprise"] = who
        values["program"] = program.name if program is not None else str(fields.get("program") or "-")
        details = [(gettext("Enterprise"), who)] if uscc else []
        details += [(gettext(label), values[key]) for key, label in DETAILS.items() if key in fields]
        subjects.append(gettext(subject_id))
        parts.append(
            templates()
            .get_template("mail/event.txt")
            .render(
                _=_formatting(gettext),
                summary=gettext(summary_id) % values,
                details=details,
                event_id=event_id,
                event_type=event_type,
                occurred_at=_format(occurred_at, gettext),
            )
            .strip()
        )
    subject = f"{SUBJECT_PREFIX} {' / '.join(subjects)}"
    if enterprise is not None or uscc:
        subject += f": {enterprise.name if enterprise is not None else uscc}"
    subject = " ".join(subject.split())  # one line, whatever a name holds
    return subject[:400], ("\n\n" + "-" * 60 + "\n\n").join(parts) + "\n"


def message(settings: Settings, row: Outgoing | MailMessage, *, now: datetime | None = None) -> EmailMessage:
    """The RFC 5322 message of a row, as sent."""
    sender = parseaddr(settings.smtp_from)[1]
    mail = EmailMessage()
    mail["From"] = settings.smtp_from
    mail["To"] = row.recipient
    mail["Subject"] = row.subject
    mail["Date"] = format_datetime(now or datetime.now().astimezone())
    mail["Message-ID"] = f"<{row.id}@{Address(addr_spec=sender).domain}>"
    mail["Auto-Submitted"] = "auto-generated"
    mail["X-Giantflow-Event-Id"] = str(row.event_id)
    mail["X-Giantflow-Event-Type"] = row.event_type
    mail.set_content(row.body)
    return mail


# --- fan-out and sending -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """A leased message and what its attempt needs."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    recipient: str
    subject: str
    body: str
    attempts: int
    created_at: datetime


class Mailer:
    """The relay's mail channel: ``fan_out`` inside its fan-out transaction, ``send_due`` in its rounds.
    ``backoff`` is the relay's (seconds before the next attempt after so many failed ones)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        backoff: Callable[[int], float],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.backoff = backoff
        self.enabled = settings.mail_enabled
        # Each SMTP step may take the timeout; a lease outlives the three a message's send takes at most.
        self.timeout = settings.smtp_timeout_seconds
        self.lease = self.timeout * 3 + 30
        self._registry: ProgramRegistry | None = None

    @property
    def programs(self) -> dict[str, Program]:
        """The programs in force (services/catalog: the database's versions, read again by ``fan_out``
        when they moved); an empty book when they cannot be read - staff mailboxes are left out rather than
        holding up the relay."""
        return {} if self._registry is None else self._registry.book

    async def _refresh_programs(self) -> None:
        try:
            if self._registry is None:
                from services.catalog.registry import ProgramRegistry

                self._registry = ProgramRegistry(self.sessionmaker.kw["bind"], self.settings.programs_dir)
            await self._registry.refresh()
        except (ProgramFileError, OSError, SQLAlchemyError):
            log.exception("mail_programs_unreadable")

    def recipients(self, event: OutboxEvent, enterprise: Enterprise | None) -> dict[str, str]:
        """Address -> why it gets the event (``enterprise``, ``finance``, ``reviewers``, ``group``), each
        address once, the first reason kept."""
        found: dict[str, str] = {}

        def add(addresses: Iterable[str], kind: str) -> None:
            for address in addresses:
                found.setdefault(address, kind)

        if enterprise is not None and enterprise.contact_email:
            add([enterprise.contact_email], "enterprise")
        program = self.programs.get(str(event.data.get("program")))
        if program is not None:
            mailboxes = program.notifications
            if event.finance:
                add(mailboxes.finance, "finance")
            for level, addresses in mailboxes.reviewers.items():
                if level == event.reviewer_level:
                    add(addresses, "reviewers")
            if event.group_name:
                add(mailboxes.groups.get(event.group_name, ()), "group")
        return found

    async def fan_out(self, session: AsyncSession, events: Sequence[OutboxEvent]) -> int:
        """Make the messages of ``events`` in ``session`` (the relay's fan-out transaction); how many."""
        if not self.enabled or not events:
            return 0
        await self._refresh_programs()  # one small query when nothing moved
        usccs = sorted({event.uscc for event in events if event.uscc})
        enterprises = {}
        if usccs:
            for row in await session.execute(ENTERPRISES, {"usccs": usccs}):
                enterprises[row.uscc] = Enterprise(row.uscc, row.name, row.contact_email)
        rows: list[dict[str, Any]] = []
        for event in events:
            enterprise = enterprises.get(event.uscc) if event.uscc else None
            recipients = self.recipients(event, enterprise)
            if not recipients:
                continue
            try:
                subject, body = compose(
                    event_id=event.id,
                    event_type=event.type,
                    occurred_at=event.occurred_at,
                    data=event.data,
                    enterprise=enterprise,
                    program=self.programs.get(str(event.data.get("program"))),
                )
            except Exception:  # one event's text must never hold up every other event's fan-out
                log.exception("mail_not_composed", event_id=str(event.id), type=event.type)
                continue
            rows += [
                {
                    "id": uuid.uuid4(),
                    "event_id": event.id,
                    "event_type": event.type,
                    "recipient": address,
                    "recipient_kind": kind,
                    "subject": subject,
                    "body": body,
                }
                for address, kind in recipients.items()
            ]
        if rows:
            await session.execute(
                insert(MailMessage).on_conflict_do_nothing(index_elements=["event_id", "recipient"]), rows
            )
        return len(rows)

    async def claim(self, limit: int) -> list[Outgoing]:
        async with self.sessionmaker() as session, session.begin():
            leased = (await session.execute(CLAIM, {"limit": limit, "lease": self.lease})).all()
        return [Outgoing(**row._mapping) for row in leased]  # CLAIM returns exactly its fields

    async def send_due(self) -> int:
        """Send the messages that are due, a batch at a time, until none is left or a whole batch failed;
        how many attempts were made."""
        if not self.enabled:
            return 0
        made = 0
        while outgoing := await self.claim(BATCH):
            sent = await asyncio.gather(*(self.attempt(item) for item in outgoing))
            made += len(outgoing)
            if not any(sent):
                break
        return made

    async def attempt(self, item: Outgoing) -> bool:
        """Hand one message to the SMTP server and write down what happened; whether it was accepted."""
        permanent = False
        try:
            await self._send(message(self.settings, item), item.recipient)
            error = None
        except (ValueError, TypeError) as exc:  # the message cannot be written: no retry changes that
            error, permanent = f"{type(exc).__name__}: {exc}", True
        except aiosmtplib.SMTPRecipientsRefused as exc:
            permanent = all(500 <= refusal.code < 600 for refusal in exc.recipients)
            error = "; ".join(f"{refusal.code} {refusal.message}" for refusal in exc.recipients)
        except aiosmtplib.SMTPResponseException as exc:
            error = f"{exc.code} {exc.message}"
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        await self._record(item, error[:ERROR_CHARS] if error else None, permanent=permanent)
        if error is None:
            log.info("mail_sent", mail_id=str(item.id), type=item.event_type)
        else:
            log.warning(
                "mail_failed", mail_id=str(item.id), type=item.event_type, error=error, dead=permanent
            )
        return error is None

    async def _send(self, mail: EmailMessage, recipient: str) -> None:
        """One SMTP session: every step within the timeout, the whole within three."""
        settings = self.settings
        assert settings.smtp_host is not None
        password = settings.smtp_password
        await asyncio.wait_for(
            aiosmtplib.send(
                mail,
                sender=parseaddr(settings.smtp_from)[1],
                recipients=[recipient],
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password.get_secret_value() if password is not None else None,
                start_tls=settings.smtp_starttls,
                timeout=self.timeout,
            ),
            self.timeout * 3,
        )

    async def _record(self, item: Outgoing, error: str | None, *, permanent: bool) -> None:
        attempts = item.attempts + 1
        async with self.sessionmaker() as session, session.begin():
            now = await session.scalar(select(func.now()))
            assert now is not None
            values: dict[str, Any] = {"attempts": attempts, "leased_until": None, "last_error": error}
            if error is None:
                values |= {"status": "sent", "sent_at": now}
            else:
                retry_at = now + timedelta(seconds=self.backoff(attempts))
                if permanent or retry_at > item.created_at + self.settings.webhook_retry_for:
                    values |= {"status": "dead", "dead_at": now}
                else:
                    values["next_attempt_at"] = retry_at
            await session.execute(
                update(MailMessage)
                .where(MailMessage.id == item.id, MailMessage.status == "pending")
                .values(**values)
            )


# --- reading (`giantflow mail`) ------------------------------------------------------------------------


async def recent(session: AsyncSession, *, status: str | None = None, limit: int = 20) -> list[MailMessage]:
    """The latest messages, newest first."""
    stmt = select(MailMessage).order_by(MailMessage.created_at.desc(), MailMessage.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(MailMessage.status == status)
    return list(await session.scalars(stmt))


async def find(session: AsyncSession, ident: str) -> MailMessage | None:
    """The message whose id is ``ident`` or starts with it; LookupError when a prefix names several."""
    prefix = ident.strip().lower()
    found = list(
        await session.scalars(
            select(MailMessage)
            .where(cast(MailMessage.id, String).startswith(prefix, autoescape=True))
            .limit(2)
        )
    )
    if len(found) > 1:
        raise LookupError(f"{ident!r} starts the ids of more than one message; give more of it")
    return found[0] if found else None
