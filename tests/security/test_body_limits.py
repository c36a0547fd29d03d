"""Request bodies are limited as they stream, whatever their framing: a chunked body (no Content-Length) is
cut off at the limit with a 413 problem and never read further, JSON and multipart alike; and the API
process's memory stays flat under a 200 MB chunked body (a real uvicorn process, its peak RSS read from
/proc)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bench.body_limit import peak_rss_mib, send_chunked
from devtools.devstack import free_port
from services.app import MAX_BODY_BYTES
from services.config import Settings
from tests.conftest import BIN_DIR, TEST_SECRET, bearer, make_token
from tests.support.factories import random_uscc

PROBLEM = "application/problem+json"
CHUNK = 64 * 1024


class Feed:
    """A chunked request body of `total` bytes that counts how much of it was pulled."""

    def __init__(self, total: int, head: bytes = b"", fill: bytes = b" ") -> None:
        self.total, self.head, self.fill, self.sent = total, head, fill, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.head:
            self.sent += len(self.head)
            yield self.head
        while self.sent < self.total:
            chunk = self.fill * min(CHUNK, self.total - self.sent)
            self.sent += len(chunk)
            yield chunk


def _assert_413(resp: httpx.Response, limit: int) -> None:
    assert resp.status_code == 413, f"{resp.status_code} {resp.text[:300]}"
    assert resp.headers["content-type"] == PROBLEM
    assert resp.json()["status"] == 413
    assert str(limit) in resp.json()["detail"]
    assert resp.headers.get("x-request-id")


async def test_a_chunked_json_body_over_the_limit_is_a_413_and_read_no_further(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    admin = bearer(make_token(settings, "admin", "admin-chunked"))
    for headers in ({}, admin):  # unauthenticated and authenticated: the body is refused first
        feed = Feed(20 * 1024 * 1024, head=b'{"name": "')
        resp = await api_rollback.post(
            "/api/v1/enterprises", headers={**headers, "Content-Type": "application/json"}, content=feed
        )
        _assert_413(resp, MAX_BODY_BYTES)
        assert feed.sent <= MAX_BODY_BYTES + CHUNK + len(feed.head), f"read {feed.sent} bytes"


async def test_a_chunked_multipart_upload_over_the_limit_is_a_413_and_read_no_further(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    uscc = random_uscc()
    owner = bearer(make_token(settings, "enterprise", f"enterprise-{uscc}", uscc=uscc))
    head = (
        b'--b\r\nContent-Disposition: form-data; name="kind"\r\n\r\nbusiness_licence\r\n'
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n%PDF-1.4 "
    )
    feed = Feed(50 * 1024 * 1024, head=head, fill=b"x")
    resp = await api_rollback.post(
        "/api/v1/documents",
        headers={**owner, "Content-Type": "multipart/form-data; boundary=b"},
        content=feed,
    )
    limit = settings.max_upload_bytes + 64 * 1024
    _assert_413(resp, limit)
    assert feed.sent <= limit + CHUNK + len(head), f"read {feed.sent} bytes"


async def test_a_chunked_body_within_the_limit_is_served(
    api_rollback: httpx.AsyncClient, settings: Settings
) -> None:
    uscc = random_uscc()
    owner = bearer(make_token(settings, "enterprise", f"enterprise-{uscc}", uscc=uscc))
    body = (
        f'{{"uscc": "{uscc}", "name": "Chunked Co", "region_code": "500103", "industry": "x", '
        f'"founded_on": "2012-01-01"}}'
    ).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    resp = await api_rollback.post(
        "/api/v1/enterprises", headers={**owner, "Content-Type": "application/json"}, content=chunks()
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "Chunked Co"


# --- a real API process: its memory under a 200 MB chunked body -------------------------------------------


@pytest.fixture
def api_process(migrated: str, tmp_path: Path) -> Iterator[tuple[str, psutil.Process]]:
    """`giantflow api` as its own process on the session's database (Temporal unreachable: not needed)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIANTFLOW_")}
    env.update(
        {
            "GIANTFLOW_ENVIRONMENT": "test",
            "GIANTFLOW_DATABASE_URL": migrated,
            "GIANTFLOW_JWT_SECRET": TEST_SECRET,
            "GIANTFLOW_API_PORT": str(port),
            "GIANTFLOW_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "GIANTFLOW_DATA_DIR": str(tmp_path),
            "GIANTFLOW_LOG_LEVEL": "WARNING",
        }
    )
    with (tmp_path / "api.out").open("w") as out:
        process = subprocess.Popen(
            [str(BIN_DIR / "giantflow"), "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            assert process.poll() is None, (tmp_path / "api.out").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the API never answered /healthz")
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.slow
def test_the_api_process_memory_stays_flat_under_a_200_mb_chunked_body(
    api_process: tuple[str, psutil.Process],
) -> None:
    url, process = api_process
    before = peak_rss_mib(process.pid)
    host, port = url.removeprefix("http://").split(":")
    status, sent = send_chunked(host, int(port), "/api/v1/enterprises", 200 * 1024 * 1024)
    assert status == 413
    assert sent < 200 * 1024 * 1024, "the server read the whole 200 MB body"
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    grown = peak_rss_mib(process.pid) - before
    assert grown < 32, f"peak RSS grew by {grown:.0f} MiB (from {before:.0f} MiB)"
