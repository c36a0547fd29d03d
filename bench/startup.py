"""Time from `giantflow dev` (what `make run` runs) to /readyz 200, on a fresh data folder and on a warm one.

    .venv/bin/python bench/startup.py [--runs 3]

Prints one line per run and the medians; uses free ports and a temporary data folder, so it can run beside
a `make run` that is already going.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from devtools.devstack import free_port, http_ok

BIN = Path(sys.executable).parent


def one_run(data_dir: Path) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    api_port = free_port()
    env.update(
        {
            "GIANTFLOW_DATA_DIR": str(data_dir),
            "GIANTFLOW_API_PORT": str(api_port),
            "GIANTFLOW_EMBEDDED_POSTGRES_PORT": str(free_port()),
            "GIANTFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "GIANTFLOW_TEMPORAL_UI_PORT": str(free_port()),
            "GIANTFLOW_BANK_URL": f"http://127.0.0.1:{free_port()}",
            "GIANTFLOW_LOG_LEVEL": "WARNING",
        }
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(BIN / "giantflow"), "dev"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not http_ok(f"http://127.0.0.1:{api_port}/readyz"):
            if process.poll() is not None:
                raise SystemExit(f"giantflow dev exited with {process.returncode}")
            time.sleep(0.05)
        to_ready = time.perf_counter() - started
    finally:
        stopping = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    return to_ready, time.perf_counter() - stopping


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    fresh, warm, stops = [], [], []
    for n in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "var"
            ready_s, stop_s = one_run(data)
            fresh.append(ready_s)
            stops.append(stop_s)
            ready_s, stop_s = one_run(data)
            warm.append(ready_s)
            stops.append(stop_s)
            print(f"run {n + 1}: fresh data folder {fresh[-1]:.2f} s to ready, warm {warm[-1]:.2f} s")
    cold, hot, stop = statistics.median(fresh), statistics.median(warm), statistics.median(stops)
    print(
        f"median to /readyz 200: fresh {cold:.2f} s, warm {hot:.2f} s (warm/fresh {hot / cold:.2f}); "
        f"median clean stop {stop:.2f} s"
    )


if __name__ == "__main__":
    main()
