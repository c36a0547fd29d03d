"""``giantflow worker`` as a process of its own, for the tests that kill one mid-task: started in a process
group of its own (killed whole), on the test's database, dev server and task queue."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from devtools.devstack import die_with_parent
from tests.conftest import BIN_DIR, TEST_SECRET


def worker_env(
    *, database_url: str, temporal_address: str, task_queue: str, data_dir: Path, **more: str
) -> dict[str, str]:
    """This process's environment without its GIANTFLOW_ settings, and the worker's: ``more`` adds settings
    by their names (``GIANTFLOW_BANK_URL=...``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    env.update(
        {
            "GIANTFLOW_ENVIRONMENT": "test",
            "GIANTFLOW_JWT_SECRET": TEST_SECRET,
            "GIANTFLOW_DATABASE_URL": database_url,
            "GIANTFLOW_TEMPORAL_ADDRESS": temporal_address,
            "GIANTFLOW_TEMPORAL_TASK_QUEUE": task_queue,
            "GIANTFLOW_DATA_DIR": str(data_dir),
            "GIANTFLOW_LOG_LEVEL": "WARNING",
            "GIANTFLOW_WORKER_RELAY": "false",  # the relay has tests of its own; this one would race theirs
            **more,
        }
    )
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker writing to ``log`` (appended), gone with the test process whatever happens."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [str(BIN_DIR / "giantflow"), "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's whole process group (a crash: nothing is drained) and reap it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (the worker drains and exits 0), SIGKILL if it has not exited within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_worker(process)
