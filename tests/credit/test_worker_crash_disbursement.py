"""Kill the worker process while a drawdown's payment is at the bank, start a new one, and the drawdown is
paid exactly once: one payment at the bank under its key, one ledger entry, the drawdown disbursed.

The bank is slow (``latency_ms``), so the kill lands while ``pay_through_bank`` waits for its answer; the bank
then commits the payment with nobody listening (the worst case). No heartbeat: the attempt is retried once
its start-to-close timeout (30 s) passes, on the second worker, which finds the payment by its key."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle

from services.contracts import PayoutState
from services.credit import repository
from services.resources import Resources
from tests.credit.conftest import PROGRAMS, BankSim
from tests.credit.test_disbursement_faults import approved_batch, assert_paid_exactly_once
from tests.support.workers import kill_worker, start_worker, stop_worker, worker_env

pytestmark = pytest.mark.slow

LATENCY_MS = 3000


async def _until(predicate: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting until {what}")


async def _pending_pay(handle: WorkflowHandle[Any, Any]) -> list[Any]:
    description = await handle.describe()
    return [
        a
        for a in description.raw_description.pending_activities
        if a.activity_type.name == "pay_through_bank"
    ]


async def test_a_drawdown_is_paid_exactly_once_when_the_worker_dies_mid_payment(
    resources: Resources, dev_server: Any, calm_bank: BankSim, tmp_path: Path
) -> None:
    queue = f"pay-crash-{uuid.uuid4().hex[:8]}"
    resources.settings = resources.settings.model_copy(update={"temporal_task_queue": queue})
    env = worker_env(
        database_url=resources.settings.effective_database_url,
        temporal_address=dev_server.client.service_client.config.target_host,
        task_queue=queue,
        data_dir=tmp_path,
        GIANTFLOW_PROGRAMS_DIR=str(PROGRAMS),
        GIANTFLOW_BANK_URL=calm_bank.url,
    )
    log = tmp_path / "worker.log"
    before = await calm_bank.stats()
    await calm_bank.faults(latency_ms=LATENCY_MS)
    handle: WorkflowHandle[Any, PayoutState] | None = None
    try:
        first = start_worker(env, log)
        try:
            batch = await approved_batch(resources, 1)
            (drawdown_id,) = batch.drawdown_ids
            handle = resources.temporal.get_workflow_handle(
                f"disbursement-{drawdown_id}", result_type=PayoutState
            )

            async def at_the_bank() -> bool:
                return (await calm_bank.stats())["requests"] > before["requests"]

            await _until(at_the_bank, 20, "the payment request reached the bank")
        finally:
            kill_worker(first)
        assert first.returncode == -signal.SIGKILL

        # The kill landed mid-payment: the bank holds the request, nothing is paid, the attempt is in flight.
        assert await calm_bank.payments_for(batch.keys) == []
        (pending,) = await _pending_pay(handle)
        assert pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
        assert pending.attempt == 1

        # With the worker gone, the bank commits the payment and its answer is lost.
        async def paid_at_the_bank() -> bool:
            return len(await calm_bank.payments_for(batch.keys)) == 1

        await _until(paid_at_the_bank, LATENCY_MS / 1000 + 5, "the bank committed the payment")
        async with resources.sessionmaker() as session:
            drawdown = await repository.get_drawdown(session, uuid.UUID(drawdown_id))
            assert drawdown is not None
            assert drawdown.status == "approved"
        await calm_bank.faults(latency_ms=0)

        second = start_worker(env, log)
        try:
            async with asyncio.timeout(60):
                state = await handle.result()
        finally:
            stop_worker(second)
        assert second.returncode == 0
    finally:
        await calm_bank.calm()
        if handle is not None:
            with contextlib.suppress(Exception):  # already completed when the test passed
                await handle.terminate("test failed")

    assert state.status == "disbursed"
    await assert_paid_exactly_once(resources, calm_bank, batch)
    async with resources.sessionmaker() as session:
        drawdown = await repository.get_drawdown(session, uuid.UUID(drawdown_id))
        assert drawdown is not None
        assert drawdown.status == "disbursed"
    after = await calm_bank.stats()
    # One POST (the killed attempt's); the retry looked the payment up by its key instead of paying again.
    assert after["requests"] - before["requests"] == 1
    assert after["payments_made"] - before["payments_made"] == 1
    assert after["lookups"] - before["lookups"] >= 1
    assert after["replays"] == before["replays"]
