"""`make chaos`'s server crashes at a small scale: 40 drawdowns through real processes while the Temporal dev
server and PostgreSQL are each SIGKILLed once and restarted on the same data and port (bench/chaos.py
``--scenario servers``). The run must pass - nothing duplicated or lost, the ledger balanced, every workflow
completed or waiting - and print each kind of kill with its time to recover; never a timing goal here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.chaos import Recovery, RecoveryLog, recovery_figures, server_plan

ROOT = Path(__file__).resolve().parents[2]
FIGURE = r"(\d+\.\d) / (\d+\.\d) / (\d+\.\d)"


@pytest.mark.slow  # the whole stack as real processes and two server crashes, ~60 s on 2 idle cores
def test_the_drawdowns_survive_a_temporal_and_a_postgres_crash(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    env["TMPDIR"] = str(tmp_path)
    argv = [sys.executable, "bench/chaos.py", "--scenario", "servers", "--seed", "16"]
    argv += ["--disbursements", "40", "--enterprises", "2", "--apis", "1", "--workers", "1"]
    argv += ["--temporal-kills", "1", "--postgres-kills", "1", "--server-down", "1.5"]
    argv += ["--recover-timeout", "60", "--settle-timeout", "60"]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "chaos run: servers passed" in out
    figures = dict(re.findall(r"^(requested|paid|duplicated|lost|ledger balanced) +(\S+)", out, re.MULTILINE))
    assert (figures["duplicated"], figures["lost"]) == ("0", "0"), out[-4000:]
    assert figures["ledger balanced"] == "yes"
    assert int(figures["requested"]) > 30
    assert int(figures["paid"]) > 0
    assert "missing 0, stuck on a terminal drawdown 0, failed 0" in out
    # Each crash: how many, and min / median / max from the kill until the server answered, the API's
    # /readyz was ready and the next drawdown was paid.
    for kind in ("temporal", "postgres"):
        row = re.search(rf"^  {kind} +1   {FIGURE} +{FIGURE} +{FIGURE}$", out, re.MULTILINE)
        assert row is not None, out[-3000:]
        answered, ready, payout = (float(row.group(n)) for n in (1, 4, 7))
        assert 1.5 <= answered <= ready, row.group(0)  # down 1.5 s; the API is ready once the server is
        assert payout >= answered


def test_the_server_crashes_are_seeded_and_spread_over_the_load() -> None:
    plan = server_plan(7, 1000, temporal=2, postgres=2)
    assert plan == server_plan(7, 1000, temporal=2, postgres=2)
    assert sorted(kind for _, _, kind in plan) == ["postgres", "postgres", "temporal", "temporal"]
    after = [n for _, n, _ in plan]
    assert after == sorted(after)
    assert 150 <= after[0] <= after[-1] <= 850
    assert all(n == int(1000 * share) for share, n, _ in plan)
    assert server_plan(8, 1000, temporal=2, postgres=2) != plan


def test_recovery_figures_per_kind_of_kill() -> None:
    log = RecoveryLog(
        done=[
            Recovery("postgres", "postgres", 10.0, 0.0, answered=4.0, ready=4.5, payout=6.0),
            Recovery("postgres", "postgres", 40.0, 0.0, answered=3.0, ready=3.5, payout=None),
            Recovery("postgres", "postgres", 70.0, 0.0, answered=5.0, ready=5.5, payout=9.0),
            Recovery("worker", "worker-1", 5.0, 0.0, payout=0.4),
            Recovery("api", "api-2", 6.0, 0.0, ready=2.0),
        ]
    )
    figures = recovery_figures(log)
    assert list(figures) == ["worker", "api", "postgres"]
    assert figures["postgres"]["kills"] == 3
    assert figures["postgres"]["answered"] == {"min": 3.0, "median": 4.0, "max": 5.0, "never": 0}
    assert figures["postgres"]["payout"] == {"min": 6.0, "median": 6.0, "max": 9.0, "never": 1}
    assert set(figures["worker"]) == {"kills", "payout"}
    assert set(figures["api"]) == {"kills", "ready"}
