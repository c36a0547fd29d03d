"""An SMTP sink (aiosmtpd) for `giantflow dev`, the tests and anyone trying the service's e-mail by hand: it
accepts every message, keeps each as an ``.eml`` file in a folder (named after the message's id, so a message
sent twice is one file), tells ``out`` a line per message, and can refuse on demand - a reply such as
``451 4.3.0 Try again later`` to every DATA, or ``550 5.1.1 No such mailbox`` to every recipient - so that
the relay's retries and dead letters are exercised.

In `giantflow dev` it runs in the supervisor's own process, on a thread of its own (``MailSink``); tests
serve a ``Mailbox`` on their event loop (``serve``); ``python -m devtools.mailsink --port 1025 --dir
var/mail`` runs one alone."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

HOSTNAME = "giantflow-mail-sink"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    at: float  # time.time() when it arrived


@dataclass
class Mailbox:
    """The sink's aiosmtpd handler. ``folder``: where each message is written (none: kept in ``received``
    only); ``refuse_data`` / ``refuse_rcpt``: a reply that refuses every message / recipient."""

    folder: Path | None = None
    out: Callable[[str], None] | None = None
    refuse_data: str | None = None
    refuse_rcpt: str | None = None
    received: list[Received] = field(default_factory=list)
    refused: int = 0

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.refuse_rcpt:
            self.refused += 1
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse_data:
            self.refused += 1
            return self.refuse_data
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        item = Received(str(envelope.mail_from), list(envelope.rcpt_tos), message, time.time())
        self.received.append(item)
        where = self._keep(raw, message)
        if self.out is not None:
            self.out(
                f"  mail         to {', '.join(item.rcpt_tos)}: {message['subject']}"
                + (f" ({where})" if where else "")
            )
        return "250 Message accepted for delivery"

    def _keep(self, raw: bytes, message: EmailMessage) -> Path | None:
        if self.folder is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        ident = re.sub(r"[^A-Za-z0-9._-]", "", str(message.get("message-id", "")).split("@")[0])
        path = self.folder / f"{ident or time.strftime('%Y%m%d-%H%M%S') + f'-{len(self.received)}'}.eml"
        path.write_bytes(raw)
        return path


def smtp_server(handler: Mailbox) -> SMTP:
    return SMTP(handler, hostname=HOSTNAME)


async def serve(handler: Mailbox, host: str, port: int) -> asyncio.Server:
    """An SMTP server on the running event loop; close it with ``close()`` and ``wait_closed()``."""
    return await asyncio.get_running_loop().create_server(lambda: smtp_server(handler), host, port)


class MailSink:
    """The sink on a thread of its own (aiosmtpd's ``Controller``), for a process without an event loop."""

    def __init__(self, handler: Mailbox, *, host: str = "127.0.0.1", port: int) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self._controller: Any = Controller(handler, hostname=host, port=port, server_hostname=HOSTNAME)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


def main() -> None:  # pragma: no cover - a process of its own
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args()

    async def run() -> None:
        server = await serve(Mailbox(args.dir, out=print), args.host, args.port)
        print(f"SMTP sink on {args.host}:{args.port}, messages kept in {args.dir}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":  # pragma: no cover
    main()
