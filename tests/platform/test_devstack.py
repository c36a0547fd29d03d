"""`make run`'s own supervisor (`giantflow dev`), end to end with real processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from devtools.devstack import free_port
from tests.conftest import BIN_DIR, TEST_SECRET

pytestmark = pytest.mark.slow


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    ports = {name: free_port() for name in ("api", "pg", "temporal", "ui", "bank")}
    env.update(
        {
            "GIANTFLOW_DATA_DIR": str(data_dir),
            "GIANTFLOW_API_PORT": str(ports["api"]),
            "GIANTFLOW_EMBEDDED_POSTGRES_PORT": str(ports["pg"]),
            "GIANTFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{ports['temporal']}",
            "GIANTFLOW_TEMPORAL_UI_PORT": str(ports["ui"]),
            "GIANTFLOW_BANK_URL": f"http://127.0.0.1:{ports['bank']}",
            "GIANTFLOW_LOG_LEVEL": "WARNING",
        }
    )
    return env


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=3) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def _wait_ready(api: str, process: subprocess.Popen[str], timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise AssertionError(f"giantflow dev exited early with {process.returncode}")
        if _get(f"{api}/readyz")[0] == 200:
            return time.monotonic() - started
        time.sleep(0.25)
    raise AssertionError("never ready")


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    return _env(tmp_path / "var")


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    log = Path(env["GIANTFLOW_DATA_DIR"]).parent / "dev.out"
    with log.open("a") as out:
        return subprocess.Popen(
            [str(BIN_DIR / "giantflow"), "dev"], env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )


def _token(env: dict[str, str], *args: str) -> str:
    """A token from `giantflow token` with these arguments, as a newcomer gets one."""
    return subprocess.run(
        [str(BIN_DIR / "giantflow"), "token", *args], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def _output(env: dict[str, str]) -> str:
    return (Path(env["GIANTFLOW_DATA_DIR"]).parent / "dev.out").read_text()


def _stop(process: subprocess.Popen[str]) -> list[psutil.Process]:
    tree = psutil.Process(process.pid).children(recursive=True)
    assert tree, "the supervisor started no children"
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    _, alive = psutil.wait_procs(tree, timeout=15)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_a_port_in_use_is_one_clear_line(stack_env: dict[str, str]) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", int(stack_env["GIANTFLOW_API_PORT"])))
    holder.listen()
    try:
        result = subprocess.run(
            [str(BIN_DIR / "giantflow"), "dev"], env=stack_env, capture_output=True, text=True, timeout=60
        )
    finally:
        holder.close()
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "already in use" in lines[0]
    assert stack_env["GIANTFLOW_API_PORT"] in lines[0]


def test_an_unreachable_external_database_is_one_clear_line(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "GIANTFLOW_DATABASE_URL": f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/x"}
    result = subprocess.run(
        [str(BIN_DIR / "giantflow"), "dev"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "cannot be reached" in lines[0]


def test_token_command_prints_a_verifiable_token(stack_env: dict[str, str]) -> None:
    env = {**stack_env, "GIANTFLOW_ENVIRONMENT": "test", "GIANTFLOW_JWT_SECRET": TEST_SECRET}
    result = subprocess.run(
        [
            str(BIN_DIR / "giantflow"),
            "token",
            "--role",
            "reviewer",
            "--level",
            "municipal",
            "--region",
            "500100",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    import jwt

    claims = jwt.decode(result.stdout.strip(), TEST_SECRET, algorithms=["HS256"])
    assert (claims["role"], claims["level"], claims["region"]) == ("reviewer", "municipal", "500100")
    bad = subprocess.run(
        [str(BIN_DIR / "giantflow"), "token", "--role", "reviewer"], env=env, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "level" in bad.stderr


def test_a_malformed_program_file_stops_start_up_with_one_line(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    programs = tmp_path / "programs"
    programs.mkdir()
    demo = (Path(__file__).resolve().parents[2] / "programs" / "demo.toml").read_text()
    (programs / "demo.toml").write_text(demo.replace('stage_sla = "PT60S"', 'stage_sla = "sixty seconds"'))
    env = {**stack_env, "GIANTFLOW_PROGRAMS_DIR": str(programs)}
    for command in ("dev", "api", "worker"):
        result = subprocess.run(
            [str(BIN_DIR / "giantflow"), command], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1, command
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "demo.toml" in lines[0]
        assert "stage_sla" in lines[0]


def _call(method: str, url: str, token: str, body: object | None = None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        data=json.dumps(body).encode() if body is not None else None,
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _upload(url: str, token: str, kind: str) -> str:
    boundary = "giantflowboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\n{kind}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{kind}.pdf"\r\n'
        f"Content-Type: application/pdf\r\n\r\n%PDF-1.4 evidence\r\n--{boundary}--\r\n"
    ).encode()
    request = urllib.request.Request(
        url,
        method="POST",
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(json.loads(resp.read())["id"])


@dataclass
class DevStack:
    """A running `giantflow dev` and its environment (a test may stop it and start it again)."""

    env: dict[str, str]
    process: subprocess.Popen[str]


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """One `giantflow dev`, started on a fresh data folder, shared by the tests that need a running stack
    (one start instead of one per test: each takes ~15 s here): the demo program with a 2 s public notice
    instead of 20 s, so that a whole application runs over HTTP; every other shipped program as it is."""
    root = tmp_path_factory.mktemp("demo-stack")
    programs = root / "programs"
    shutil.copytree(Path(__file__).resolve().parents[2] / "programs", programs)
    demo = (programs / "demo.toml").read_text()
    (programs / "demo.toml").write_text(demo.replace('notice_period = "PT20S"', 'notice_period = "PT2S"'))
    env = {**_env(root / "var"), "GIANTFLOW_PROGRAMS_DIR": str(programs)}
    stack = DevStack(env, _start(env))
    try:
        _wait_ready(f"http://127.0.0.1:{env['GIANTFLOW_API_PORT']}", stack.process)
    except AssertionError as exc:
        if stack.process.poll() is None:
            _stop(stack.process)
        raise AssertionError(f"{exc}; its output:\n{_output(env)}") from None
    try:
        yield stack
    finally:
        if stack.process.poll() is None:
            assert _stop(stack.process) == []


def test_end_to_end_over_http_against_the_running_stack(demo_stack: DevStack) -> None:
    """Register, submit, see screening, approve each stage, watch the notice pass, read the recognition -
    over real HTTP against `giantflow dev`'s API, worker, Temporal dev server and PostgreSQL."""
    from tests.support.factories import random_uscc, strong_metrics

    env = demo_stack.env
    api = f"http://127.0.0.1:{env['GIANTFLOW_API_PORT']}/api/v1"

    def token(*args: str) -> str:
        return _token(env, *args)

    uscc = random_uscc("500103")
    enterprise = token("--role", "enterprise", "--uscc", uscc)
    status, _ = _call(
        "POST",
        f"{api}/enterprises",
        enterprise,
        {
            "uscc": uscc,
            "name": "E2E Co",
            "region_code": "500103",
            "industry": "machinery",
            "founded_on": "2012-03-01",
        },
    )
    assert status == 201
    evidence = [
        _upload(f"{api}/documents", enterprise, k) for k in ("business_licence", "financial_statements_3y")
    ]
    status, created = _call(
        "POST",
        f"{api}/applications",
        enterprise,
        {
            "uscc": uscc,
            "program": "demo",
            "tier": "specialized_new",
            "metrics": strong_metrics(),
            "evidence": evidence,
        },
    )
    assert status == 201, created
    url = f"{api}/applications/{created['id']}"
    deadline = time.monotonic() + 30
    while (body := _call("GET", url, enterprise)[1])["status"] == "screening":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert body["status"] == "in_review"
    assert body["screening"]["passed"] is True  # type: ignore[index]
    for level, region in (("municipal", "500100"), ("provincial", "500000")):
        status, state = _call(
            "POST",
            f"{url}/decisions",
            token("--role", "reviewer", "--level", level, "--region", region),
            {"decision": "approve", "reason": f"{level} review passed"},
        )
        assert status == 200, state
    assert state["status"] == "public_notice"
    deadline = time.monotonic() + 30
    while (body := _call("GET", url, enterprise)[1])["status"] != "recognized":
        assert time.monotonic() < deadline, body
        time.sleep(0.3)
    status, recognitions = _call("GET", f"{api}/recognitions", enterprise)
    assert status == 200
    [recognition] = recognitions["items"]  # type: ignore[misc]
    assert recognition["certificate_no"].startswith("DEMO-")
    assert [h["action"] for h in body["history"]] == [  # type: ignore[attr-defined]
        "submitted",
        "screened",
        "approved",
        "approved",
        "recognized",
    ]

    # The benefits: the credit line opens, a drawdown is approved by finance, paid by the bank simulator.
    deadline = time.monotonic() + 30
    while not (lines := _call("GET", f"{api}/credit-lines", enterprise)[1]["items"]):
        assert time.monotonic() < deadline, "the credit line never opened"
        time.sleep(0.3)
    [line] = lines  # type: ignore[misc]
    assert (line["limit"], line["available"]) == ("2000000.00", "2000000.00")
    status, drawdown = _call(
        "POST", f"{api}/credit-lines/{line['id']}/drawdowns", enterprise, {"amount": "500000.00"}
    )
    assert status == 201, drawdown
    finance = token("--role", "finance", "--sub", "finance-1")
    status, decided = _call(
        "POST",
        f"{api}/drawdowns/{drawdown['id']}/approvals",
        finance,
        {"decision": "approve", "reason": "checked"},
    )
    assert status == 200, decided
    deadline = time.monotonic() + 30
    while (paid := _call("GET", f"{api}/drawdowns/{drawdown['id']}", enterprise)[1])["status"] != "disbursed":
        assert time.monotonic() < deadline, paid
        time.sleep(0.3)
    assert paid["disbursement"]["bank_reference"]  # type: ignore[index]
    [entry] = paid["ledger_entries"]  # type: ignore[misc]
    debits = sum(Decimal(li["debit"]) for li in entry["lines"])
    credits = sum(Decimal(li["credit"]) for li in entry["lines"])
    assert debits == credits == Decimal("500000.00")
    request = urllib.request.Request(
        f"{api}/disbursements", headers={"Authorization": f"Bearer {finance}", "Accept": "text/csv"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["content-type"].startswith("text/csv")
        assert str(drawdown["id"]) in resp.read().decode()


def test_the_readme_walkthrough_script_runs_against_the_stack(demo_stack: DevStack) -> None:
    """examples/walkthrough.py, as a newcomer runs it against `make run`: every step to a paid drawdown."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            str(BIN_DIR / "python"),
            str(root / "examples" / "walkthrough.py"),
            "--api",
            f"http://127.0.0.1:{demo_stack.env['GIANTFLOW_API_PORT']}",
            "--timeout",
            "30",
        ],
        env=demo_stack.env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^application \S+ is recognized after .*certificate DEMO-", out, re.M), out
    assert re.search(
        r"^drawdown \S+ is disbursed: 500000\.00 paid, bank reference (?!None)\S+$", out, re.M
    ), out
    assert re.search(r"^  credit_receivable:\S+ +debit +500000\.00 +credit +0\.00$", out, re.M), out
    assert out.rstrip().endswith("walkthrough complete"), out


def test_dev_stack_starts_serves_stops_cleanly_and_keeps_data(demo_stack: DevStack) -> None:
    """The module's stack, started on a fresh data folder by its fixture: it serves, stops cleanly on SIGTERM
    and, started again on the same folder, still has what was written; handed back running."""
    env = demo_stack.env
    api = f"http://127.0.0.1:{env['GIANTFLOW_API_PORT']}"
    try:
        status, body = _get(f"{api}/openapi.json")
        assert status == 200
        assert "/api/v1/applications" in json.loads(body)["paths"]
        assert _get(f"http://127.0.0.1:{env['GIANTFLOW_TEMPORAL_UI_PORT']}/")[0] == 200
        status, login = _get(f"{api}/console/login")
        assert status == 200
        assert b'<label for="f-role">Role</label>' in login or "角色".encode() in login
        token = _token(env, "--role", "admin")
        status, programs = _get(f"{api}/api/v1/programs", token)
        assert status == 200
        assert "demo" in {p["key"] for p in json.loads(programs)}
        # Write something, so the restart below can find it.
        request = urllib.request.Request(
            f"{api}/api/v1/enterprises",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            data=json.dumps(
                {
                    "uscc": "91350100M000100Y43",
                    "name": "Kept",
                    "region_code": "350100",
                    "industry": "x",
                    "founded_on": "2001-01-01",
                }
            ).encode(),
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 201
    finally:
        survivors = _stop(demo_stack.process)
    assert demo_stack.process.returncode == 0
    assert survivors == [], f"orphans: {[p.cmdline() for p in survivors]}"
    output = _output(env)
    assert "api" in output
    assert "postgres" in output
    assert f"console      {api}/console/" in output

    demo_stack.process = _start(env)  # the fixture stops this one, and asserts it leaves no orphans
    _wait_ready(api, demo_stack.process)
    token = _token(env, "--role", "admin")
    status, body = _get(f"{api}/api/v1/enterprises/91350100M000100Y43", token)
    assert status == 200, body
    assert json.loads(body)["name"] == "Kept"
