"""Typed client of the partner bank's payment API, with explicit timeouts.

Failures come in two kinds, and callers must treat them differently:

- :class:`BankRejected` is *definite*: the bank answered 4xx with a reason and made no payment (a retry with
  the same request gets the same answer);
- :class:`BankUnavailable` is *ambiguous*: a timeout, a dropped connection, a 5xx or an unreadable answer.
  The payment may or may not have been made; look it up by its idempotency key before paying again.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

#: Statuses that say "not now" rather than "no": retry them like a timeout.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class BankError(Exception):
    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class BankRejected(BankError):
    """The bank refused the payment; nothing was paid."""


class BankUnavailable(BankError):
    """No usable answer: the payment may or may not have been made."""


class BankPayment(BaseModel):
    id: str
    key: str
    amount: Decimal
    currency: str
    beneficiary: str
    reference: str
    status: str
    created_at: datetime


class StatementPayment(BaseModel):
    """One line of a daily statement: a payment the bank made that day, under its idempotency key."""

    id: str
    key: str
    amount: Decimal
    beneficiary: str
    paid_at: datetime


class BankStatement(BaseModel):
    """The bank's statement of one day (China Standard Time): every payment it made that day."""

    date: date
    count: int
    total: Decimal
    payments: list[StatementPayment]


class BankClient:
    def __init__(
        self, http: httpx.AsyncClient, base_url: str, *, timeout: float = 10.0, connect_timeout: float = 3.0
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))

    async def create_payment(
        self, *, key: str, amount: Decimal, beneficiary: str, reference: str, currency: str = "CNY"
    ) -> BankPayment:
        """Pay once under ``key``: the bank answers the original payment when the key was used before."""
        body = {
            "amount": f"{amount:.2f}",
            "currency": currency,
            "beneficiary": beneficiary,
            "reference": reference,
        }
        response = await self._send("POST", "/payments", json=body, headers={"Idempotency-Key": key})
        if response.status_code in (200, 201):
            return self._payment(response)
        raise self._failure(response)

    async def get_payment(self, key: str) -> BankPayment | None:
        """The payment made under ``key``, or None when the bank has none."""
        response = await self._send("GET", f"/payments/{key}")
        if response.status_code == 200:
            return self._payment(response)
        if response.status_code == 404:
            return None
        raise self._failure(response)

    async def statement(self, day: date) -> BankStatement:
        """The bank's statement of ``day``: the payments it made that day in China Standard Time."""
        response = await self._send("GET", "/statement", params={"date": day.isoformat()})
        if response.status_code != 200:
            raise self._failure(response)
        try:
            return BankStatement.model_validate_json(response.content)
        except ValidationError as exc:
            raise BankUnavailable("the bank's statement could not be read", status=200) from exc

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http.request(method, self._base + path, timeout=self._timeout, **kwargs)
        except httpx.TimeoutException as exc:
            raise BankUnavailable(f"the bank did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise BankUnavailable(f"the bank could not be reached ({type(exc).__name__})") from exc

    @staticmethod
    def _payment(response: httpx.Response) -> BankPayment:
        try:
            return BankPayment.model_validate_json(response.content)
        except ValidationError as exc:
            raise BankUnavailable("the bank's answer could not be read", status=response.status_code) from exc

    @staticmethod
    def _failure(response: httpx.Response) -> BankError:
        status = response.status_code
        try:
            reason = str(response.json().get("reason") or "")
        except (ValueError, AttributeError):
            reason = ""
        reason = reason or f"the bank answered {status}"
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            return BankRejected(reason, status=status)
        return BankUnavailable(reason, status=status)
