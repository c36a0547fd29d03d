"""Standard Webhooks (https://www.standardwebhooks.com): secrets, the signed request a delivery sends, and
the guard that keeps deliveries away from loopback and private addresses.

A delivery's body is ``{"type", "timestamp", "data"}``; its headers ``webhook-id`` (the event's id: every
attempt and every duplicate carries the same one), ``webhook-timestamp`` (seconds) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256 of id.timestamp.body>``; two signatures, space separated, while a rotated secret
overlaps the new one). Signing is the ``standardwebhooks`` package's, so a receiver verifying with any
Standard Webhooks library agrees with it byte for byte."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and 32 random bytes in base64 (shown to its owner once)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def body(event_type: str, timestamp: datetime, data: dict[str, Any]) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": timestamp.isoformat(), "data": data},
        ensure_ascii=False,
        separators=(",", ":"),
    )


@dataclass(frozen=True)
class SignedRequest:
    headers: dict[str, str]
    content: bytes


def sign(*, message_id: str, at: datetime, payload: str, secrets_in_force: Sequence[str]) -> SignedRequest:
    """The headers and body of one attempt, signed with every secret in force (the newest first)."""
    signatures = " ".join(
        Webhook(secret).sign(msg_id=message_id, timestamp=at, data=payload) for secret in secrets_in_force
    )
    return SignedRequest(
        headers={
            "webhook-id": message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signatures,
            "content-type": "application/json",
            "user-agent": "giantflow-webhooks/1",
        },
        content=payload.encode(),
    )


class UnsafeDestination(ValueError):
    """A webhook URL that must not be called: not http(s), credentials in it, or a host that resolves to a
    loopback, private, link-local, multicast or reserved address where those are not allowed."""


def check_url_form(url: str, *, allow_private: bool) -> None:
    """What can be told of a URL without resolving it: https (plain http only where private addresses are
    allowed, i.e. in development), a host, no user info, and no IP literal that is off limits."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not allow_private):
        raise UnsafeDestination("The URL must use https.")
    if not parts.hostname:
        raise UnsafeDestination("The URL needs a host.")
    if parts.username or parts.password:
        raise UnsafeDestination("The URL must not carry a user name or password.")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return
    if not allow_private and not _public(literal):
        raise UnsafeDestination("The URL's address is not a public one.")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse a URL whose host resolves, now, to an address off limits (every address it resolves to is
    checked: a name with one public and one private address is refused)."""
    check_url_form(url, allow_private=allow_private)
    if allow_private:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeDestination(f"The host does not resolve ({exc.strerror}).") from None
    for *_, sockaddr in infos:
        if not _public(ipaddress.ip_address(sockaddr[0])):
            raise UnsafeDestination("The URL's host resolves to an address that is not a public one.")
