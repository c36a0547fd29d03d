"""`make chaos` at a small scale: 40 drawdowns through real processes, some of them then repaid in parts or in
full, while a worker and an API are SIGKILLed now and then and the Temporal dev server and PostgreSQL each
once, restarted on the same data and port (bench/chaos.py ``--scenario drawdowns``). The run must pass -
no drawdown and no repayment duplicated or lost, every line's repaid, outstanding and available as its
drawdowns and repayments make them, the ledger balanced, every workflow completed or waiting - and print
each kind of kill with its time to recover; never a timing goal here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from bench.chaos import (
    Enterprise,
    Job,
    Outcome,
    Recovery,
    RecoveryLog,
    Repayment,
    account_repayments,
    recovery_figures,
    server_plan,
)

ROOT = Path(__file__).resolve().parents[2]
FIGURE = r"(\d+\.\d) / (\d+\.\d) / (\d+\.\d)"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A folder with a short path: PostgreSQL's socket path in it must stay under 108 bytes (pytest's
    tmp_path, named after the test, can be too long)."""
    folder = Path(tempfile.mkdtemp(prefix="chaos-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # the whole stack as real processes, part kills and two server crashes, ~80 s on 2 cores
def test_drawdowns_and_repayments_survive_every_kind_of_kill(short_tmp: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    env["TMPDIR"] = str(short_tmp)
    argv = [sys.executable, "bench/chaos.py", "--scenario", "drawdowns", "--seed", "16"]
    argv += ["--disbursements", "40", "--enterprises", "2", "--apis", "1", "--workers", "1"]
    argv += ["--worker-kill-every", "4", "--api-kill-every", "6", "--worker-kills", "1", "--api-kills", "1"]
    argv += ["--repay-share", "0.4"]
    argv += ["--temporal-kills", "1", "--postgres-kills", "1", "--server-down", "1.5"]
    argv += ["--recover-timeout", "60", "--settle-timeout", "60", "--repay-wait", "30"]
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-2000:]
    assert "chaos run: drawdowns passed" in out
    label = r"requested|paid|duplicated|lost|ledger balanced|repayments|repay \w+|lines \w+"
    figures = dict(re.findall(rf"^({label}) +(\S+)", out, re.MULTILINE))
    assert (figures["duplicated"], figures["lost"]) == ("0", "0"), out[-4000:]
    assert figures["ledger balanced"] == "yes"
    assert int(figures["requested"]) > 30
    assert int(figures["paid"]) > 0
    assert "missing 0, stuck on a terminal drawdown 0, failed 0" in out
    # The repayments: keys sent (about 30 planned on 17 drawdowns paid out, a few sent twice at once), each
    # recorded once - none duplicated, none lost - and every line sound in PostgreSQL and through the API.
    assert int(figures["repayments"]) >= 15, out[-4000:]
    assert int(figures["repay recorded"]) >= 15
    assert [figures[f"repay {what}"] for what in ("duplicated", "lost", "mismatches")] == ["0", "0", "0"]
    assert (figures["lines checked"], figures["lines off"]) == ("3", "0"), out[-4000:]
    # Each kill: how many, and min / median / max from the kill until the server answered, the API's
    # /readyz was ready and the next drawdown was paid.
    for kind in ("temporal", "postgres"):
        row = re.search(rf"^  {kind} +1   {FIGURE} +{FIGURE} +{FIGURE}$", out, re.MULTILINE)
        assert row is not None, out[-3000:]
        answered, ready, payout = (float(row.group(n)) for n in (1, 4, 7))
        assert 1.5 <= answered <= ready, row.group(0)  # down 1.5 s; the API is ready once the server is
        assert payout >= answered
    assert re.search(rf"^  worker +1   -  +-  +{FIGURE}$", out, re.MULTILINE), out[-3000:]
    assert re.search(rf"^  api +1   -  +{FIGURE} +-$", out, re.MULTILINE), out[-3000:]


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


def test_the_repayment_accounting_finds_duplicates_losses_and_lines_off() -> None:
    D = Decimal
    line = {
        "id": "L",
        "uscc": "U",
        "credit_limit": D(1000),
        "reserved": D(0),
        "drawn": D(300),
        "repaid": D(0),
    }

    def outcome(n: int, amount: str, *parts: tuple[str, set[str]]) -> Outcome:
        repayments = [
            Repayment(key=f"k{n}-{i}", amount=D(a), by=None, double_submit=False, sent=True, ids_seen=ids)
            for i, (a, ids) in enumerate(parts)
        ]
        job = Job(n, Enterprise("U"), D(amount), f"k{n}", [], False, False, repayments)
        return Outcome(job, drawdown_id=f"d{n}", result="approved")

    outcomes = [outcome(1, "100", ("40", {"r1"}), ("60", {"r2"})), outcome(2, "200", ("50", {"r3"}))]
    drawdowns = {
        "d1": {"id": "d1", "line": "L", "amount": D(100), "repaid": D(100), "status": "repaid"},
        "d2": {"id": "d2", "line": "L", "amount": D(200), "repaid": D(50), "status": "disbursed"},
    }

    def row(rid: str, drawdown: str, amount: str, key: str | None) -> dict[str, object]:
        a = D(amount)
        return {
            "id": rid,
            "drawdown": drawdown,
            "line": "L",
            "amount": a,
            "reference": key,
            "debits": a,
            "credits": a,
        }

    receivables = {"U": D(150)}
    repayments = [row("r1", "d1", "40", "k1-0"), row("r2", "d1", "60", "k1-1"), row("r3", "d2", "50", "k2-0")]
    rows = {
        "drawdowns": drawdowns,
        "lines": {"L": {**line, "repaid": D(150)}},
        "receivables": receivables,
        "repayments": repayments,
    }
    shown = {"limit": "1000.00", "reserved": "0.00", "drawn": "300.00", "repaid": "150.00"}
    api = {"L": {**shown, "outstanding": "150.00", "available": "850.00"}}
    sound = account_repayments(outcomes, rows, api)
    assert (sound["requested"], sound["recorded"], sound["answered"]) == (3, 3, 3)
    assert (sound["duplicated"], sound["lost"], sound["mismatches"]) == (0, 0, 0)
    assert (sound["lines_checked"], sound["lines_off"]) == (1, 0)

    # A key recorded twice, a 201 the database lost, a row nobody sent; the line's figures off everywhere.
    outcomes[1].job.repayments[0].ids_seen.add("r9")
    repayments += [row("r4", "d2", "50", "k2-0"), row("r5", "d2", "5", None)]
    api["L"]["available"] = "700.00"
    receivables["U"] = D(300)
    broken = account_repayments(outcomes, rows, api)
    assert broken["duplicated"] == 2  # r4 beside r3 under k2-0, and k2-0 answered with two ids
    assert broken["lost_reasons"] == {
        "answered 201, not in the database": 1,
        "in the database, never sent by the client": 1,
    }
    assert broken["lines_off"] == 1
    assert set(broken["line_reasons"]) == {
        "repaid is not the sum of its drawdowns' repayments",
        "a drawdown's repaid is not the sum of its repayments or disagrees with its status",
        "credit receivable is not the outstanding",
        "available is not limit - reserved - outstanding",
    }
