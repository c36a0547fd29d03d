"""The scale-out, proved on this machine with real processes: one PostgreSQL, one Temporal dev server, one
S3-compatible server (moto's), then two `giantflow api` and two `giantflow worker` processes - each with a
data folder of its own, so nothing can pass between them but the database, Temporal and the bucket.

An intake of applications goes in through both APIs; mid-run one API and one worker are SIGKILLed and the
client fails over to the surviving API, retrying with the same Idempotency-Key. Then: every application was
screened and queued exactly once (one review workflow by its Uscc search attribute, one open review task,
one application per key), every document reads the same through either API, and the write rate limit
holds in total across the two APIs, not per replica."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import text

from devtools.devstack import EmbeddedPostgres, die_with_parent, free_port
from devtools.seeding import random_uscc, strong_metrics
from services.config import Environment, Settings
from services.contracts import USCC
from services.db import create_engine
from services.migrate import alembic_config
from tests.conftest import BIN_DIR, TEST_SECRET, bearer, make_token
from tests.platform.conftest import S3Server

pytestmark = pytest.mark.slow

API = "/api/v1"
APPLICATIONS = 40
RATE = 10  # writes per minute per caller: a burst of 10, then one per 6 s
KILL_AFTER = 14  # submitted applications before one API and one worker are SIGKILLed
CONCURRENCY = 8


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own: the workers' reconciler sweeps every unstarted application of their
    database, which must not be another test's."""
    server = EmbeddedPostgres(tmp_path / "pg", port=free_port())
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(command.upgrade, alembic_config(server.url()), "head")
    yield server
    await asyncio.to_thread(server.stop)


# --- the processes ------------------------------------------------------------------------------------------


@dataclass
class Part:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    url: str | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, for killpg
                preexec_fn=die_with_parent(signal.SIGKILL),  # and gone with pytest, whatever happens
            )

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


def stop_all(parts: list[Part]) -> None:
    """SIGTERM every process group, then SIGKILL what is left after a few seconds."""
    for part in parts:
        part.kill(signal.SIGTERM)
    deadline = time.monotonic() + 8
    for part in parts:
        if part.process is None:
            continue
        try:
            part.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            part.kill(signal.SIGKILL)
            part.process.wait(5)


async def wait_ready(client: httpx.AsyncClient, part: Part, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert part.process is not None
        if part.process.poll() is not None:
            raise AssertionError(f"{part.name} exited with {part.process.returncode}:\n{part.tail()}")
        try:
            if (await client.get(f"{part.url}/readyz", timeout=2)).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{part.name} not ready within {timeout} s:\n{part.tail()}")
        await asyncio.sleep(0.2)


async def wait_pollers(temporal: Any, queue: str, workers: list[Part], timeout: float = 60) -> int:
    """Until every worker polls the task queue (the server lists one poller identity per worker)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    request = DescribeTaskQueueRequest(
        namespace=temporal.namespace,
        task_queue=TaskQueue(name=queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    deadline = time.monotonic() + timeout
    while True:
        pollers = {p.identity for p in (await temporal.workflow_service.describe_task_queue(request)).pollers}
        if len(pollers) >= len(workers):
            return len(pollers)
        for worker in workers:
            assert worker.process is not None
            if worker.process.poll() is not None:
                raise AssertionError(f"{worker.name} exited:\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(pollers)} pollers on {queue} within {timeout} s")
        await asyncio.sleep(0.25)


# --- the intake client ------------------------------------------------------------------------------------


@dataclass
class Intake:
    """Sends each request to its preferred API and, when that one cannot be reached (refused, reset, no
    answer), to the other - with the same Idempotency-Key; a key still being processed (the dead API's
    transaction not yet rolled back) or a 503 is retried after a moment."""

    client: httpx.AsyncClient
    urls: list[str]
    failovers: collections.Counter[str] = field(default_factory=collections.Counter)
    retried: collections.Counter[int] = field(default_factory=collections.Counter)
    replayed: int = 0
    answered_by: collections.Counter[int] = field(default_factory=collections.Counter)

    async def send(self, prefer: int, method: str, path: str, **kwargs: Any) -> httpx.Response:
        target = prefer
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, f"{method} {path} never answered"
            try:
                resp = await self.client.request(method, f"{self.urls[target]}{API}{path}", **kwargs)
            except httpx.TransportError as exc:
                self.failovers[type(exc).__name__] += 1
                target = 1 - target
                await asyncio.sleep(0.05)
                continue
            if resp.status_code == 503 or (resp.status_code == 409 and "still being processed" in resp.text):
                self.retried[resp.status_code] += 1
                await asyncio.sleep(0.5)
                continue
            if resp.headers.get("Idempotent-Replayed") == "true":
                self.replayed += 1
            self.answered_by[target] += 1
            return resp


@dataclass
class Filed:
    uscc: str
    headers: dict[str, str]
    licence: bytes
    licence_id: str = ""
    application_id: str = ""
    via: int = 0


def pdf(size: int) -> bytes:
    return b"%PDF-1.4\n" + os.urandom(size) + b"\n%%EOF\n"


async def file_one(intake: Intake, settings: Settings, index: int) -> Filed:
    uscc = random_uscc("500103")
    headers = bearer(make_token(settings, "enterprise", f"user-{uscc}", uscc=uscc))
    filed = Filed(uscc=uscc, headers=headers, licence=pdf(3000 + index), via=index % 2)

    def keyed(key: str) -> dict[str, str]:
        return {**headers, "Idempotency-Key": key}

    resp = await intake.send(
        filed.via,
        "POST",
        "/enterprises",
        headers=keyed(f"register-{uscc}"),
        json={
            "uscc": uscc,
            "name": f"Scale-out {index} {uscc}",
            "region_code": "500103",
            "industry": "machinery",
            "founded_on": "2012-03-01",
        },
    )
    assert resp.status_code == 201, resp.text
    evidence = []
    for kind, content in (("business_licence", filed.licence), ("financial_statements_3y", pdf(700))):
        resp = await intake.send(
            filed.via,
            "POST",
            "/documents",
            headers=keyed(f"{kind}-{uscc}"),
            data={"kind": kind},
            files={"file": (f"{kind}.pdf", content, "application/pdf")},
        )
        assert resp.status_code == 201, resp.text
        evidence.append(resp.json()["id"])
    filed.licence_id = evidence[0]
    resp = await intake.send(
        filed.via,
        "POST",
        "/applications",
        headers=keyed(f"apply-{uscc}"),
        json={
            "uscc": uscc,
            "program": "demo",
            "tier": "specialized_new",
            "metrics": strong_metrics(),
            "evidence": evidence,
        },
    )
    assert resp.status_code == 201, resp.text
    filed.application_id = resp.json()["id"]
    return filed


async def poll(check: Callable[[], Awaitable[tuple[bool, Any]]], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        done, seen = await check()
        if done:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s; last seen: {seen}")
        await asyncio.sleep(0.5)


# --- the test ----------------------------------------------------------------------------------------------


async def test_two_apis_and_two_workers_share_everything(
    own_postgres: EmbeddedPostgres, s3_server: S3Server, dev_server: Any, tmp_path: Path
) -> None:
    began = time.monotonic()
    figures: dict[str, Any] = {}
    temporal = dev_server.client
    queue = f"scale-{uuid.uuid4().hex[:8]}"
    database_url = own_postgres.url()
    settings = Settings(environment=Environment.test, jwt_secret=TEST_SECRET, database_url=database_url)  # type: ignore[arg-type]
    common = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    common.update(
        {
            "GIANTFLOW_ENVIRONMENT": "test",
            "GIANTFLOW_JWT_SECRET": TEST_SECRET,
            "GIANTFLOW_DATABASE_URL": database_url,
            "GIANTFLOW_TEMPORAL_ADDRESS": temporal.service_client.config.target_host,
            "GIANTFLOW_TEMPORAL_TASK_QUEUE": queue,
            "GIANTFLOW_STORAGE_BACKEND": "s3",
            "GIANTFLOW_S3_ENDPOINT_URL": s3_server.endpoint_url,
            "GIANTFLOW_S3_BUCKET": s3_server.bucket,
            "GIANTFLOW_S3_REGION": s3_server.region,
            "GIANTFLOW_S3_ACCESS_KEY_ID": s3_server.access_key_id,
            "GIANTFLOW_S3_SECRET_ACCESS_KEY": s3_server.secret_access_key,
            "GIANTFLOW_S3_PREFIX": f"{queue}/",
            "GIANTFLOW_WRITE_RATE_PER_MINUTE": str(RATE),
            "GIANTFLOW_BANK_URL": f"http://127.0.0.1:{free_port()}",  # the intake never pays anything out
            "GIANTFLOW_WORKER_SHUTDOWN_SECONDS": "1",
            "GIANTFLOW_LOG_LEVEL": "WARNING",
        }
    )

    def part(name: str, command_: str, **env: str) -> Part:
        data_dir = tmp_path / name  # a folder of each process's own: nothing local is shared
        data_dir.mkdir(exist_ok=True)
        return Part(
            name=name,
            argv=[str(BIN_DIR / "giantflow"), command_],
            env={**common, "GIANTFLOW_DATA_DIR": str(data_dir), **env},
            log=tmp_path / f"{name}.log",
        )

    ports = [free_port(), free_port()]
    apis = [part(f"api{i + 1}", "api", GIANTFLOW_API_PORT=str(ports[i])) for i in range(2)]
    for api, port in zip(apis, ports, strict=True):
        api.url = f"http://127.0.0.1:{port}"
    workers = [part(f"worker{i + 1}", "worker") for i in range(2)]
    parts = [*apis, *workers]
    engine = create_engine(database_url)
    try:
        for p in parts:
            p.start()
        async with contextlib.AsyncExitStack() as clients:
            client = await clients.enter_async_context(httpx.AsyncClient(timeout=30))
            await asyncio.gather(*(wait_ready(client, api) for api in apis))
            figures["pollers"] = await wait_pollers(temporal, queue, workers)
            figures["started_s"] = round(time.monotonic() - began, 1)

            # 1. The intake, through both APIs; API 2 and worker 2 are SIGKILLed mid-run.
            intake = Intake(client, [api.url for api in apis if api.url])
            submitted = 0
            killed = asyncio.Event()
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(index: int) -> Filed:
                nonlocal submitted
                async with gate:
                    filed = await file_one(intake, settings, index)
                submitted += 1
                if submitted == KILL_AFTER:
                    apis[1].kill()
                    workers[1].kill()
                    killed.set()
                return filed

            intake_began = time.monotonic()
            filed = await asyncio.gather(*(one(i) for i in range(APPLICATIONS)))
            assert killed.is_set()
            for victim in (apis[1], workers[1]):
                assert victim.process is not None
                assert victim.process.wait(5) == -signal.SIGKILL
            figures["intake_s"] = round(time.monotonic() - intake_began, 1)
            figures["failovers"] = dict(intake.failovers)
            assert sum(intake.failovers.values()) > 0, "nothing was sent to the killed API"
            figures["retried"] = dict(intake.retried)
            figures["replayed"] = intake.replayed
            figures["answered_by_api"] = {f"api{k + 1}": v for k, v in sorted(intake.answered_by.items())}
            apis[1].start()  # back for the reads below, while the surviving worker screens

            # 2. Every application screened and queued exactly once.
            ids = [f.application_id for f in filed]
            usccs = [f.uscc for f in filed]
            assert len(set(ids)) == APPLICATIONS

            async def queued() -> tuple[bool, Any]:
                async with engine.connect() as conn:
                    rows = (
                        await conn.execute(
                            text(
                                "SELECT status, count(*) AS n FROM applications "
                                "WHERE uscc = ANY(:u) GROUP BY 1"
                            ),
                            {"u": usccs},
                        )
                    ).all()
                seen = {row.status: row.n for row in rows}
                return seen == {"in_review": APPLICATIONS}, seen

            await poll(queued, timeout=75, what="every application in review")
            for survivor in (apis[0], workers[0]):
                assert survivor.process is not None
                assert survivor.process.poll() is None, f"{survivor.name} died:\n{survivor.tail()}"
            figures["screened_s"] = round(time.monotonic() - began, 1)
            async with engine.connect() as conn:
                applications = (
                    await conn.execute(
                        text("SELECT uscc, id::text AS id FROM applications WHERE uscc = ANY(:u)"),
                        {"u": usccs},
                    )
                ).all()
                tasks = (
                    await conn.execute(
                        text(
                            "SELECT application_id::text AS id, status, stage FROM review_tasks "
                            "WHERE application_id = ANY(CAST(:ids AS uuid[]))"
                        ),
                        {"ids": ids},
                    )
                ).all()
                screened = (
                    await conn.execute(
                        text(
                            "SELECT application_id::text AS id, count(*) AS n FROM transitions "
                            "WHERE application_id = ANY(CAST(:ids AS uuid[])) AND action = 'screened' "
                            "GROUP BY 1"
                        ),
                        {"ids": ids},
                    )
                ).all()
                keys = (
                    await conn.execute(
                        text(
                            "SELECT key, status_code, response->>'id' AS id FROM idempotency_keys "
                            "WHERE endpoint = 'POST /applications' AND key = ANY(:k)"
                        ),
                        {"k": [f"apply-{u}" for u in usccs]},
                    )
                ).all()
                unstarted = (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM applications WHERE uscc = ANY(:u) AND NOT workflow_started"
                        ),
                        {"u": usccs},
                    )
                ).scalar_one()
            per_uscc = collections.Counter(row.uscc for row in applications)
            assert per_uscc == dict.fromkeys(usccs, 1), "an enterprise's one submission made two applications"
            assert {row.uscc: row.id for row in applications} == {f.uscc: f.application_id for f in filed}
            assert sorted((row.id, row.status, row.stage) for row in tasks) == sorted(
                (i, "open", "municipal") for i in ids
            ), "not exactly one open review task per application"
            assert {row.id: row.n for row in screened} == dict.fromkeys(ids, 1)
            assert sorted((row.key, row.status_code, row.id) for row in keys) == sorted(
                (f"apply-{f.uscc}", 201, f.application_id) for f in filed
            )
            assert unstarted == 0
            figures["duplicates"] = {
                "applications": sum(per_uscc.values()) - APPLICATIONS,
                "open_tasks": len(tasks) - APPLICATIONS,
            }

            quoted = ", ".join(f"'{u}'" for u in usccs)

            async def workflows() -> tuple[bool, Any]:
                found: dict[str, list[str]] = collections.defaultdict(list)
                async for wf in temporal.list_workflows(f"Uscc IN ({quoted})"):
                    found[str(wf.typed_search_attributes.get(USCC))].append(
                        f"{wf.id}/{wf.run_id}/{wf.status.name}"
                    )
                return len(found) == APPLICATIONS and all(len(v) == 1 for v in found.values()), dict(found)

            found = await poll(workflows, timeout=15, what="one review workflow per Uscc")
            assert {uscc: runs[0].split("/")[0] for uscc, runs in found.items()} == {
                f.uscc: f"review-{f.application_id}" for f in filed
            }
            assert all(runs[0].endswith("/RUNNING") for runs in found.values())
            figures["review_workflows"] = len(found)
            # Which worker ran the workflow tasks (identity pid@host): both, until one was killed.
            pids = {f"{w.process.pid}@": w.name for w in workers if w.process is not None}
            ran_by: collections.Counter[str] = collections.Counter()
            for f in filed:
                history = await temporal.get_workflow_handle(f"review-{f.application_id}").fetch_history()
                for event in history.events:
                    if event.HasField("workflow_task_completed_event_attributes"):
                        identity = event.workflow_task_completed_event_attributes.identity
                        ran_by[next((n for p, n in pids.items() if identity.startswith(p)), identity)] += 1
            figures["workflow_tasks_by_worker"] = dict(ran_by)
            assert ran_by[workers[0].name] > 0

            # 3. Every licence reads the same through either API (one bucket, no local copies). Steps 3 and 4
            # on connections of their own: those pooled during the intake have sat idle since (uvicorn closes
            # one after 5 s), and a request sent on one just as the server closes it is a "Server
            # disconnected" that no service can prevent (a CI run met it).
            client = await clients.enter_async_context(httpx.AsyncClient(timeout=30))
            await wait_ready(client, apis[1])

            async def download(f: Filed, api: Part) -> bytes:
                resp = await client.get(f"{api.url}{API}/documents/{f.licence_id}/content", headers=f.headers)
                assert resp.status_code == 200, resp.text
                return resp.content

            contents = await asyncio.gather(*(download(f, api) for f in filed for api in apis))
            for index, f in enumerate(filed):
                assert contents[2 * index] == contents[2 * index + 1] == f.licence, f.uscc
            figures["documents_compared"] = len(filed)

            # 4. The write limit holds in total: 2N writes of one caller, N through each API, at once.
            admin = bearer(make_token(settings, "admin", f"admin-rate-{uuid.uuid4().hex[:8]}"))

            async def register(api: Part) -> tuple[int, httpx.Response]:
                uscc = random_uscc("500103")
                resp = await client.post(
                    f"{api.url}{API}/enterprises",
                    headers=admin,
                    json={
                        "uscc": uscc,
                        "name": f"Rate {uscc}",
                        "region_code": "500103",
                        "industry": "machinery",
                        "founded_on": "2012-03-01",
                    },
                )
                return apis.index(api), resp

            burst_began = time.monotonic()
            answers = await asyncio.gather(*(register(apis[i % 2]) for i in range(2 * RATE)))
            burst_s = time.monotonic() - burst_began
            by_api = {f"api{i + 1}": collections.Counter[int]() for i in range(2)}
            for index, resp in answers:
                by_api[f"api{index + 1}"][resp.status_code] += 1
            accepted = sum(1 for _, r in answers if r.status_code == 201)
            refused = [r for _, r in answers if r.status_code == 429]
            figures["rate_limit"] = {
                "limit": RATE,
                "sent": 2 * RATE,
                "accepted": accepted,
                "refused": len(refused),
                "burst_s": round(burst_s, 2),
                "by_api": {k: dict(v) for k, v in by_api.items()},
                "retry_after": sorted({r.headers.get("Retry-After", "") for r in refused}),
            }
            assert accepted + len(refused) == 2 * RATE, figures["rate_limit"]
            # GCRA's burst is RATE; one more share comes back every 6 s the burst takes.
            assert RATE <= accepted <= RATE + 1 + int(burst_s / (60 / RATE)), figures["rate_limit"]
            for resp in refused:
                assert resp.headers["content-type"].startswith("application/problem+json")
                assert 1 <= int(resp.headers["Retry-After"]) <= 60

            # The workflows on the session's dev server: nothing more for them to do.
            for f in filed:
                await temporal.get_workflow_handle(f"review-{f.application_id}").terminate(
                    "scale-out test done"
                )
    finally:
        await asyncio.to_thread(stop_all, parts)
        await engine.dispose()
        figures["total_s"] = round(time.monotonic() - began, 1)
        print(f"\nscale-out figures: {figures}")
