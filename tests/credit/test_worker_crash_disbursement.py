"""Kill the worker process while a drawdown's payment is at the bank, start a new one, and the drawdown is
paid exactly once: one payment at the bank under its key, one ledger entry, the drawdown disbursed.

The bank is slow (``latency_ms``), so the kill lands while ``pay_through_bank`` waits for its answer; the bank
then commits the payment with nobody listening (the worst case). No heartbeat: the attempt is retried once
its start-to-close timeout (30 s) passes, on the second worker, which finds the payment by its key."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import WorkflowHandle

from services.contracts import PayoutState
from services.credit import repository
from services.resources import Resources
from tests.conftest import BIN_DIR, TEST_SECRET
from tests.credit.conftest import PROGRAMS, BankSim
from tests.credit.test_disbursement_faults import approved_batch, assert_paid_exactly_once

pytestmark = pytest.mark.slow

LATENCY_MS = 3000


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(BIN_DIR / "giantflow"), "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


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
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    env.update(
        {
            "GIANTFLOW_ENVIRONMENT": "test",
            "GIANTFLOW_JWT_SECRET": TEST_SECRET,
            "GIANTFLOW_DATABASE_URL": resources.settings.effective_database_url,
            "GIANTFLOW_TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
            "GIANTFLOW_TEMPORAL_TASK_QUEUE": queue,
            "GIANTFLOW_PROGRAMS_DIR": str(PROGRAMS),
            "GIANTFLOW_BANK_URL": calm_bank.url,
            "GIANTFLOW_DATA_DIR": str(tmp_path),
            "GIANTFLOW_LOG_LEVEL": "WARNING",
            "GIANTFLOW_WORKER_RELAY": "false",  # the relay has tests of its own; this one would race theirs
        }
    )
    log = tmp_path / "worker.log"
    before = await calm_bank.stats()
    await calm_bank.faults(latency_ms=LATENCY_MS)
    handle: WorkflowHandle[Any, PayoutState] | None = None
    try:
        first = _worker(env, log)
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
            _kill(first)
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

        second = _worker(env, log)
        try:
            async with asyncio.timeout(60):
                state = await handle.result()
        finally:
            if second.poll() is None:
                second.send_signal(signal.SIGTERM)
            try:
                second.wait(30)
            except subprocess.TimeoutExpired:
                _kill(second)
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
