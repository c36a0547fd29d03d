"""settle_heap: what `giantflow api` and `giantflow worker` do to the collector once start-up is done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN_DIR

pytestmark = pytest.mark.slow  # each test starts a Python process of its own

PROBE = """
import gc, json
import services.app, workflows.worker
from services.runtime import settle_heap
before = len(gc.get_objects())
settle_heap(*ARGS)
print(json.dumps({"before": before, "after": len(gc.get_objects()), "frozen": gc.get_freeze_count(),
                  "threshold": gc.get_threshold()}))
"""


@pytest.mark.parametrize(("args", "gen0"), [((5000,), 5000), ((), 700)], ids=["api", "worker"])
def test_settle_heap_hides_start_up_objects_from_the_collector(args: tuple[int, ...], gen0: int) -> None:
    # In a process of its own: freezing and thresholds are process-wide.
    probe = PROBE.replace("ARGS", repr(args))
    root = Path(__file__).parents[2]
    argv = [sys.executable, "-c", probe]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=root)
    seen = json.loads(result.stdout)
    assert seen["before"] > 50_000  # FastAPI, SQLAlchemy, pydantic and temporalio are loaded
    assert seen["frozen"] >= seen["before"] * 0.9
    assert seen["after"] < 1_000
    assert seen["threshold"][0] == gen0


def test_a_too_small_threshold_is_one_clear_line() -> None:
    env = {**os.environ, "GIANTFLOW_GC_GEN0_THRESHOLD": "5"}
    result = subprocess.run([str(BIN_DIR / "giantflow"), "api"], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert "invalid settings" in result.stderr
    assert "greater than or equal to 100" in result.stderr
