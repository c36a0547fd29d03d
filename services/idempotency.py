"""The Idempotency-Key header, as Stripe defines it: the first response is stored and replayed for a retry
with the same key and body; the same key with another body is a 422; a retry racing the first is a 409.

A key belongs to the caller's whole identity (``CurrentUser.identity``: role, `sub` and tenant claims), and
the route's access check runs before any replay (``once``): a stored answer is only ever handed back to the
identity that caused it, and only while that identity may still do what it asks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services.auth import CurrentUser
from services.errors import Conflict, FieldError, Unprocessable
from services.idempotency_models import IdempotencyRecord

MAX_KEY_LENGTH = 255

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=MAX_KEY_LENGTH,
        pattern=r"^[!-~](?:[ -~]*[!-~])?$",
        description="A retry with the same key and body returns the first response; the same key with "
        "another body is a 422.",
    ),
]
"""The header every write route takes (API.md): what ``once`` is given as ``key``."""


@dataclass
class Replay:
    status_code: int
    body: Any


@dataclass
class IdempotencySlot:
    session: AsyncSession
    caller: str
    key: str

    async def store(self, status_code: int, body: Any) -> None:
        """The response, on the row ``begin`` claimed in this transaction: one UPDATE (no read first)."""
        stored = await self.session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.caller == self.caller, IdempotencyRecord.key == self.key)
            .values(status_code=status_code, response=body)
            .execution_options(synchronize_session=False)
        )
        assert stored.rowcount == 1, "the claimed key's row is gone"  # type: ignore[attr-defined]


def fingerprint(endpoint: str, payload: Any) -> str:
    canonical = json.dumps({"endpoint": endpoint, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def begin(
    session: AsyncSession, *, caller: str, key: str | None, endpoint: str, payload: Any
) -> IdempotencySlot | Replay | None:
    """Claim the key inside the request's transaction. None when no key was sent."""
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Unprocessable(
            "The Idempotency-Key header must be 1-255 printable characters.",
            errors=[FieldError(field="Idempotency-Key", message="invalid")],
        )
    digest = fingerprint(endpoint, payload)
    try:
        async with session.begin_nested():
            await session.execute(text("SET LOCAL lock_timeout = '2s'"))
            inserted = await session.execute(
                insert(IdempotencyRecord)
                .values(caller=caller, key=key, endpoint=endpoint, request_hash=digest)
                .on_conflict_do_nothing()
                .returning(IdempotencyRecord.key)
            )
            await session.execute(text("SET LOCAL lock_timeout = 0"))
    except DBAPIError as exc:
        if "lock timeout" in str(exc).lower() or "LockNotAvailable" in type(exc.orig).__name__:
            raise Conflict("A request with this Idempotency-Key is still being processed.") from None
        raise
    if inserted.scalar_one_or_none() is not None:
        return IdempotencySlot(session=session, caller=caller, key=key)
    record = (
        await session.execute(
            select(IdempotencyRecord).where(IdempotencyRecord.caller == caller, IdempotencyRecord.key == key)
        )
    ).scalar_one()
    if record.request_hash != digest:
        raise Unprocessable(
            "This Idempotency-Key was used with a different request.",
            errors=[FieldError(field="Idempotency-Key", message="reused with another body")],
        )
    if record.status_code is None:
        raise Conflict("A request with this Idempotency-Key is still being processed.")
    return Replay(status_code=record.status_code, body=record.response)


async def once(
    session: AsyncSession,
    user: CurrentUser,
    key: str | None,
    *,
    endpoint: str,
    payload: BaseModel | Any,
    act: Callable[[], Awaitable[BaseModel]],
    status_code: int = 200,
    authorize: Callable[[], Awaitable[object]] | None = None,
    then: Callable[[Any], Awaitable[None]] | None = None,
) -> Any:
    """Run `act` once per Idempotency-Key of this caller: `authorize` (the route's access check) first,
    always - a replay never answers a caller who may not make the request - then either the stored response
    of an earlier identical request or `act`'s result, stored for the next retry. `then` runs after a fresh
    `act` (with its result) and never for a replay: the write-then-start protocol's commit and start
    (services/temporal.py), whose answer is already stored when it commits."""
    if authorize is not None:
        await authorize()
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    slot = await begin(session, caller=user.identity, key=key, endpoint=endpoint, payload=body)
    if isinstance(slot, Replay):
        return replay_response(slot)
    result = await act()
    if slot is not None:
        await slot.store(status_code, result.model_dump(mode="json"))
    if then is not None:
        await then(result)
    return result


def require_key(key: str | None) -> None:
    """A write that moves money is taken only with an Idempotency-Key (422 without): a retry after a lost
    answer must never move it twice. Run after the route's access check, so a caller who may not make the
    request still hears that first."""
    if key is None:
        raise Unprocessable(
            "This request moves money: send an Idempotency-Key header, and the same key with any retry.",
            errors=[FieldError(field="Idempotency-Key", message="required")],
        )


KEY_REQUIRED: dict[str, Any] = {"x-idempotency-key-required": True}
"""`openapi_extra=` of a route that calls `require_key`: its OpenAPI operation states the header required."""


def document_required_keys(schema: dict[str, Any]) -> dict[str, Any]:
    """The app's OpenAPI document with `Idempotency-Key` required (a string, not null) wherever a route
    asked for it with `KEY_REQUIRED`. Only the document: the route still checks access first, then the key."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or not operation.pop("x-idempotency-key-required", False):
                continue
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "header" and parameter.get("name") == "Idempotency-Key":
                    parameter["required"] = True
                    key_schema = parameter.get("schema", {})
                    strings = [s for s in key_schema.pop("anyOf", []) if s.get("type") != "null"]
                    key_schema.update(strings[0] if len(strings) == 1 else {})
    return schema


def replay_response(replay: Replay) -> JSONResponse:
    return JSONResponse(replay.body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"})
