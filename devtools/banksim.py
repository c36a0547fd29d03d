"""The partner-bank simulator: payments under idempotency keys, persisted to a JSON-lines file, with faults.

``POST /payments`` (header ``Idempotency-Key``) makes exactly one payment per key: the same key again returns
the original payment with 200, the same key with another body is a 422. ``GET /payments/{key}`` answers the
payment made under a key (404 if none), ``GET /statement`` every payment, ``GET /healthz`` liveness.

Faults (rates are probabilities per request, read from ``GIANTFLOW_BANK_*`` at start-up and changed at run
time with ``POST /admin/faults``):

- ``latency_ms``: every payment call waits this long first;
- ``error_rate``: answer 500 without committing anything;
- ``timeout_rate``: hang for ``hang_seconds`` without committing, then 504 (the client has given up);
- ``answer_after_commit_error_rate``: commit the payment, then answer 500 or hang (the worst case: the money
  moved but the caller cannot know);
- ``duplicate_delivery_rate``: the request is delivered to the ledger a second time (as a network might);
  the second delivery finds the key and re-delivers the first answer - never a second payment;
- ``reject_beneficiaries``: beneficiaries whose account is closed (a definite 422 with a reason);
- ``max_faults_per_key``: at most this many injected failures for one payment key, then its requests go
  through (flaky, not dead: lets a test bound how long retries take);
- ``seed``: makes the fault sequence reproducible.

``GET /admin/stats`` counts requests, payments made, replays and every fault injected. Run one process:
the one-payment-per-key rule is kept by an in-process lock around the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

ENV_PREFIX = "GIANTFLOW_BANK_"
USCC = re.compile(r"^[0-9A-HJ-NP-RTUWXY]{18}$")
KEY = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
MONEY = re.compile(r"(0|[1-9][0-9]{0,15})\.[0-9]{2}")
# The bank's business day: a statement covers the payments made on one day in China Standard Time.
CST = timezone(timedelta(hours=8), "CST")


class Faults(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    latency_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    timeout_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    answer_after_commit_error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    duplicate_delivery_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    hang_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    max_faults_per_key: Annotated[int | None, Field(ge=0)] = None
    reject_beneficiaries: list[str] = Field(default_factory=list)
    seed: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Faults:
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = environ.get(ENV_PREFIX + name.upper())
            if raw:
                values[name] = (
                    [v.strip() for v in raw.split(",") if v.strip()]
                    if name == "reject_beneficiaries"
                    else raw
                )
        return cls.model_validate(values)


def _money(value: str) -> str:
    if not MONEY.fullmatch(value):
        raise ValueError("amount is a string with exactly two decimals")
    if Decimal(value) <= 0:
        raise ValueError("amount must be positive")
    return value


def _uscc(value: str) -> str:
    if not USCC.fullmatch(value):
        raise ValueError("beneficiary is an 18-character unified social credit code")
    return value


Amount = Annotated[str, AfterValidator(_money)]
Beneficiary = Annotated[str, AfterValidator(_uscc)]


class PaymentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: Amount
    currency: Literal["CNY"]
    beneficiary: Beneficiary
    reference: Annotated[str, Field(min_length=1, max_length=200)]

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


class Payment(BaseModel):
    id: str
    key: str
    amount: str
    currency: str
    beneficiary: str
    reference: str
    status: Literal["settled"] = "settled"
    created_at: datetime
    fingerprint: str


class StatementLine(BaseModel):
    """A line ``POST /admin/statement`` writes: a payment under ``key`` (added, or altered if it exists)."""

    model_config = ConfigDict(extra="forbid")

    key: Annotated[str, Field(pattern=KEY.pattern)]
    amount: Amount
    beneficiary: Beneficiary
    paid_at: datetime | None = None  # now when omitted
    reference: str = "injected for reconciliation"


class StatementChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upsert: list[StatementLine] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class Stats(BaseModel):
    requests: int = 0
    lookups: int = 0
    payments_made: int = 0
    replays: int = 0
    duplicate_deliveries: int = 0
    errors: int = 0
    timeouts: int = 0
    answer_after_commit_errors: int = 0
    answer_after_commit_hangs: int = 0
    rejected: int = 0


class PaymentStore:
    """Payments by key in memory, every new payment appended (and fsynced) to ``payments.jsonl``."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "payments.jsonl"
        self.payments: dict[str, Payment] = {}
        self.lock = asyncio.Lock()
        if self.path.exists():
            for raw in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    payment = Payment.model_validate_json(raw)
                except ValidationError:
                    continue  # a line torn by a crash mid-write: that payment was never answered
                self.payments[payment.key] = payment

    def add(self, payment: Payment) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(payment.model_dump_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.payments[payment.key] = payment

    def rewrite(self) -> None:
        """Write every payment anew (an admin changed the statement), atomically."""
        staging = self.path.with_suffix(".rewrite")
        with staging.open("w", encoding="utf-8") as handle:
            for payment in self.payments.values():
                handle.write(payment.model_dump_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        staging.replace(self.path)


def _public(payment: Payment) -> dict[str, Any]:
    return payment.model_dump(mode="json", exclude={"fingerprint"})


def _problem(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"status": status, "reason": reason}, status_code=status)


def create_bank_app(data_dir: Path) -> FastAPI:
    app = FastAPI(title="giantflow bank simulator", version="1")
    store = PaymentStore(data_dir)
    faults = Faults.from_env(os.environ)
    state: dict[str, Any] = {"faults": faults, "rng": random.Random(faults.seed), "stats": Stats()}
    faults_by_key: dict[str, int] = {}

    def current() -> Faults:
        f: Faults = state["faults"]
        return f

    def stats() -> Stats:
        s: Stats = state["stats"]
        return s

    def roll(rate: float) -> bool:
        rng: random.Random = state["rng"]
        return rate > 0 and rng.random() < rate

    def fail(rate: float, key: str) -> bool:
        """Whether to inject a failure into this request for ``key`` (within the key's fault budget)."""
        budget = current().max_faults_per_key
        if budget is not None and faults_by_key.get(key, 0) >= budget:
            return False
        if not roll(rate):
            return False
        faults_by_key[key] = faults_by_key.get(key, 0) + 1
        return True

    async def before_commit_faults(key: str) -> JSONResponse | None:
        f = current()
        if f.latency_ms:
            await asyncio.sleep(f.latency_ms / 1000)
        if fail(f.timeout_rate, key):
            stats().timeouts += 1
            await asyncio.sleep(f.hang_seconds)
            return _problem(504, "the bank did not answer in time")
        if fail(f.error_rate, key):
            stats().errors += 1
            return _problem(500, "internal error at the bank")
        return None

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return _problem(422, reasons or "the request is not valid")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/payments", status_code=201)
    async def create_payment(
        body: PaymentIn, idempotency_key: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        if idempotency_key is None or not KEY.fullmatch(idempotency_key):
            return _problem(400, "an Idempotency-Key header of 1-200 letters, digits or ._:- is required")
        stats().requests += 1
        failed = await before_commit_faults(idempotency_key)
        if failed is not None:
            return failed
        f = current()
        async with store.lock:
            answer = _deliver(store, stats(), f, idempotency_key, body)
            if answer.status_code == 201 and roll(f.duplicate_delivery_rate):
                stats().duplicate_deliveries += 1
                answer = _deliver(store, stats(), f, idempotency_key, body)
        if answer.status_code in (200, 201) and fail(f.answer_after_commit_error_rate, idempotency_key):
            rng: random.Random = state["rng"]
            if rng.random() < 0.5:
                stats().answer_after_commit_errors += 1
                return _problem(500, "internal error at the bank")
            stats().answer_after_commit_hangs += 1
            await asyncio.sleep(f.hang_seconds)
            return _problem(504, "the bank did not answer in time")
        return answer

    @app.get("/payments/{key}")
    async def get_payment(key: str) -> JSONResponse:
        stats().lookups += 1
        failed = await before_commit_faults(key)
        if failed is not None:
            return failed
        payment = store.payments.get(key)
        if payment is None:
            return _problem(404, "no payment under this key")
        return JSONResponse(_public(payment))

    @app.get("/statement")
    async def statement(day: Annotated[date | None, Query(alias="date")] = None) -> dict[str, Any]:
        """Every payment, or the statement of ``date`` (the payments made that day in China Standard Time)."""
        payments = sorted(
            (p for p in store.payments.values() if day is None or p.created_at.astimezone(CST).date() == day),
            key=lambda p: (p.created_at, p.id),
        )
        total = sum((Decimal(p.amount) for p in payments), Decimal("0.00"))
        lines = [{**_public(p), "paid_at": p.created_at.astimezone(CST).isoformat()} for p in payments]
        return {
            "date": day.isoformat() if day is not None else None,
            "count": len(payments),
            "total": f"{total:.2f}",
            "payments": lines,
        }

    @app.post("/admin/statement")
    async def change_statement(changes: StatementChanges) -> dict[str, Any]:
        """Tests only: add or alter payment lines, remove those of some keys (see the module's docstring)."""
        async with store.lock:
            for key in changes.remove:
                store.payments.pop(key, None)
            for line in changes.upsert:
                existing = store.payments.get(line.key)
                paid_at = (line.paid_at or datetime.now(UTC)).astimezone(UTC)
                store.payments[line.key] = Payment(
                    id=existing.id if existing else f"BSIM-{paid_at:%Y%m%d}-X{len(store.payments) + 1:05d}",
                    key=line.key,
                    amount=line.amount,
                    currency="CNY",
                    beneficiary=line.beneficiary,
                    reference=existing.reference if existing else line.reference,
                    created_at=paid_at,
                    fingerprint=existing.fingerprint if existing else "injected",
                )
            store.rewrite()
        return {"upserted": len(changes.upsert), "removed": len(changes.remove)}

    @app.get("/admin/faults")
    async def get_faults() -> dict[str, Any]:
        return current().model_dump()

    @app.post("/admin/faults")
    async def set_faults(changes: dict[str, Any]) -> JSONResponse:
        try:
            updated = Faults.model_validate({**current().model_dump(), **changes})
        except ValidationError as exc:
            return _problem(
                422, "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            )
        state["faults"] = updated
        if "seed" in changes:
            state["rng"] = random.Random(updated.seed)
        return JSONResponse(updated.model_dump())

    @app.get("/admin/stats")
    async def get_stats() -> dict[str, Any]:
        return {**stats().model_dump(), "payments_stored": len(store.payments)}

    return app


def _deliver(store: PaymentStore, stats: Stats, faults: Faults, key: str, body: PaymentIn) -> JSONResponse:
    """One delivery of a payment request to the bank's ledger (callers hold the store's lock)."""
    fingerprint = body.fingerprint()
    existing = store.payments.get(key)
    if existing is not None:
        if existing.fingerprint != fingerprint:
            stats.rejected += 1
            return _problem(422, "this Idempotency-Key was used for a different payment")
        stats.replays += 1
        return JSONResponse(_public(existing), status_code=200)
    if body.beneficiary in faults.reject_beneficiaries:
        stats.rejected += 1
        return _problem(422, "the beneficiary's account is closed")
    try:
        Decimal(body.amount)
    except InvalidOperation:  # pragma: no cover - validated by PaymentIn
        return _problem(422, "amount is not a number")
    now = datetime.now(UTC)
    payment = Payment(
        id=f"BSIM-{now:%Y%m%d}-{len(store.payments) + 1:06d}",
        key=key,
        amount=body.amount,
        currency=body.currency,
        beneficiary=body.beneficiary,
        reference=body.reference,
        created_at=now,
        fingerprint=fingerprint,
    )
    store.add(payment)
    stats.payments_made += 1
    return JSONResponse(_public(payment), status_code=201)
