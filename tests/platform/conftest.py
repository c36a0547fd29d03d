"""A real S3-compatible server for the object-storage tests: moto's standalone server, its own process on a
free loopback port, for the whole session; a bucket made in it through aiobotocore, as any client would."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from devtools.devstack import free_port


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str
    region: str = "us-east-1"
    access_key_id: str = "giantflow-test"
    secret_access_key: str = "giantflow-test-secret"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's server (``python -m moto.server``) on 127.0.0.1, stopped when the session ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto's server exited with {process.returncode}")
            try:
                httpx.get(f"{url}/moto-api/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not answer within 30 s") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
async def s3_server(s3_endpoint: str) -> S3Server:
    """The server with an empty bucket of this session's own."""
    from aiobotocore.session import get_session

    server = S3Server(endpoint_url=s3_endpoint, bucket=f"giantflow-{uuid.uuid4().hex[:12]}")
    async with get_session().create_client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
    ) as client:
        await client.create_bucket(Bucket=server.bucket)
    return server
