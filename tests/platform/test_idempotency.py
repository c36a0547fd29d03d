"""The Idempotency-Key store on real PostgreSQL: replay, another body, a racing request still in flight."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.db import create_sessionmaker
from services.errors import Conflict, Unprocessable
from services.idempotency import IdempotencySlot, Replay, begin
from tests.support.factories import random_uscc


async def test_replay_other_body_and_in_flight(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    caller, key, endpoint = f"caller-{random_uscc()}", "key-1", "POST /things"
    async with sessions() as first:
        slot = await begin(first, caller=caller, key=key, endpoint=endpoint, payload={"a": 1})
        assert isinstance(slot, IdempotencySlot)
        # A second request with the same key while the first has not committed: 409, after a short wait.
        async with sessions() as racing:
            with pytest.raises(Conflict, match="still being processed"):
                await begin(racing, caller=caller, key=key, endpoint=endpoint, payload={"a": 1})
        await slot.store(201, {"id": "thing-1"})
        await first.commit()
    async with sessions() as retry:
        replay = await begin(retry, caller=caller, key=key, endpoint=endpoint, payload={"a": 1})
        assert replay == Replay(status_code=201, body={"id": "thing-1"})
        with pytest.raises(Unprocessable, match="different request"):
            await begin(retry, caller=caller, key=key, endpoint=endpoint, payload={"a": 2})
    async with sessions() as other_caller:  # keys belong to their caller
        assert isinstance(
            await begin(other_caller, caller=f"{caller}-2", key=key, endpoint=endpoint, payload={"a": 2}),
            IdempotencySlot,
        )
        await other_caller.rollback()


async def test_a_failed_request_leaves_its_key_free(engine: AsyncEngine) -> None:
    sessions = create_sessionmaker(engine)
    caller = f"caller-{random_uscc()}"
    async with sessions() as failed:
        assert isinstance(
            await begin(failed, caller=caller, key="k", endpoint="POST /x", payload={}), IdempotencySlot
        )
        await failed.rollback()  # the request failed: nothing of it stays, its key included
    async with sessions() as again:
        assert isinstance(
            await begin(again, caller=caller, key="k", endpoint="POST /x", payload={}), IdempotencySlot
        )
        await again.rollback()
