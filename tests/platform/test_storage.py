"""The evidence store (services/storage.py): the contract both stores keep - content stored once per digest,
ranged reads streamed in chunks, nothing for a missing digest - against a folder and against a real
S3-compatible server (moto's, its own process); then documents over HTTP with either store, a 10 MiB upload
streamed in and out (a multipart upload into S3, a ranged GET out of it); an unreachable store is a 503."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from devtools.devstack import free_port
from services.config import Settings
from services.errors import PROBLEM_JSON
from services.storage import CHUNK, PART, LocalStorage, S3Storage, Storage, build_storage
from tests.applications.conftest import Applicant
from tests.conftest import rollback_resources, served
from tests.platform.conftest import S3Server
from tests.support.factories import random_uscc

API = "/api/v1"
MIB = 1024 * 1024


def s3_settings(settings: Settings, server: S3Server, data_dir: Path, **changes: Any) -> Settings:
    return settings.model_copy(
        update={
            "storage_backend": "s3",
            "s3_endpoint_url": server.endpoint_url,
            "s3_bucket": server.bucket,
            "s3_region": server.region,
            "s3_access_key_id": server.access_key_id,
            "s3_secret_access_key": SecretStr(server.secret_access_key),
            "s3_prefix": f"test-{uuid.uuid4().hex[:8]}/",  # each test sees only its own objects
            "data_dir": data_dir,
            **changes,
        }
    )


def s3_storage(server: S3Server, staging: Path) -> S3Storage:
    return S3Storage(
        bucket=server.bucket,
        prefix=f"test-{uuid.uuid4().hex[:8]}/",  # each test sees only its own objects
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key_id=server.access_key_id,
        secret_access_key=server.secret_access_key,
        staging=staging,
    )


@pytest.fixture(params=["local", "s3"])
async def storage(
    request: pytest.FixtureRequest, s3_server: S3Server, tmp_path: Path
) -> AsyncIterator[Storage]:
    store: Storage
    if request.param == "s3":
        store = s3_storage(s3_server, tmp_path / "staging")
    else:
        store = LocalStorage(tmp_path / "documents")
    yield store
    await store.close()


def staged(store: Storage, content: bytes) -> tuple[Path, str]:
    store.staging.mkdir(parents=True, exist_ok=True)
    path = store.staging / uuid.uuid4().hex
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


async def read(store: Storage, digest: str, start: int, length: int) -> bytes:
    chunks = [chunk async for chunk in store.open_range(digest, start, length)]
    assert all(0 < len(chunk) <= CHUNK for chunk in chunks)
    return b"".join(chunks)


async def stored_objects(store: Storage) -> list[str]:
    """What the store holds: file names under the folder, keys under the S3 prefix."""
    if isinstance(store, LocalStorage):
        return sorted(p.name for p in store.root.glob("??/*"))
    assert isinstance(store, S3Storage)
    listing = await (await store.client()).list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)
    return sorted(item["Key"].rsplit("/", 1)[1] for item in listing.get("Contents", []))


# --- the contract ------------------------------------------------------------------------------------------


async def test_content_is_stored_once_per_digest(storage: Storage) -> None:
    content = os.urandom(3000)
    first, digest = staged(storage, content)
    await storage.put(digest, first, len(content))
    again, _ = staged(storage, content)
    await storage.put(digest, again, len(content))
    assert await stored_objects(storage) == [digest]
    assert await storage.size_of(digest) == len(content)
    assert await read(storage, digest, 0, len(content)) == content


async def test_ranged_reads_return_exactly_their_bytes(storage: Storage) -> None:
    content = os.urandom(2 * CHUNK + 123)
    path, digest = staged(storage, content)
    await storage.put(digest, path, len(content))
    for start, length in [(0, 1), (0, len(content)), (CHUNK - 5, 10), (len(content) - 7, 7), (100, 0)]:
        assert await read(storage, digest, start, length) == content[start : start + length], (start, length)


async def test_a_missing_digest_has_no_size_and_a_bad_one_is_refused(storage: Storage) -> None:
    assert await storage.size_of(hashlib.sha256(b"never stored").hexdigest()) is None
    for bad in ("../../etc/passwd", "AB" * 32, "a" * 63):
        with pytest.raises(ValueError, match="SHA-256"):
            await storage.size_of(bad)
    assert await storage.ready() is None


async def test_a_big_upload_goes_in_parts_with_bounded_memory(s3_server: S3Server, tmp_path: Path) -> None:
    store = s3_storage(s3_server, tmp_path)
    content = os.urandom(3 * PART + 5)
    path, digest = staged(store, content)
    try:
        client = await store.client()  # made before measuring: its service model is not the upload's
        tracemalloc.start()
        try:
            await store.put(digest, path, len(content))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # one part read, and the transport's copy of what it has not sent yet: never the whole file
        assert peak < 2.5 * PART < len(content), f"{peak / MIB:.1f} MiB held at the peak"
        head = await client.head_object(Bucket=store.bucket, Key=store.key_of(digest))
        assert head["ContentLength"] == len(content)
        assert head["ETag"].strip('"').endswith("-4")  # a multipart upload of 4 parts
        assert await read(store, digest, PART - 3, 6) == content[PART - 3 : PART + 3]  # across two parts
    finally:
        await store.close()


async def test_an_unreachable_store_is_not_ready(tmp_path: Path) -> None:
    nowhere = S3Server(endpoint_url=f"http://127.0.0.1:{free_port()}", bucket="nowhere")
    store = s3_storage(nowhere, tmp_path)
    try:
        assert (await store.ready() or "").startswith("storage: ")
    finally:
        await store.close()


def test_s3_needs_a_bucket() -> None:
    with pytest.raises(ValidationError, match="GIANTFLOW_S3_BUCKET is required"):
        Settings(storage_backend="s3")
    assert Settings(storage_backend="s3", s3_bucket="documents").s3_prefix == "documents/"


# --- over HTTP ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def api_on(
    configured: Settings, connection: AsyncConnection
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The API with `configured` on the test's rolled-back transaction (no Temporal: documents need none)."""
    from services.app import create_app

    app = create_app(configured, resources_factory=rollback_resources(connection))
    async with served(app) as client:  # the lifespan's end closes the store
        yield client, app


async def asgi_get(app: Any, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], list[bytes]]:
    """A GET straight through the ASGI interface (httpx's transport would join the body): the status, the
    headers and each body message as the app sent it."""
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not sent and not getattr(receive, "done", False):
            receive.done = True  # type: ignore[attr-defined]
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, receive, send)
    start = sent[0]
    return (
        start["status"],
        {k.decode(): v.decode() for k, v in start["headers"]},
        [m["body"] for m in sent[1:] if m.get("body")],
    )


@pytest.fixture(params=["local", "s3"])
async def documents_api(
    request: pytest.FixtureRequest,
    settings: Settings,
    connection: AsyncConnection,
    s3_server: S3Server,
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings, Any]]:
    """The API, its evidence in a folder of this test or under an S3 prefix of this test."""
    if request.param == "s3":
        configured = s3_settings(settings, s3_server, tmp_path)
    else:
        configured = settings.model_copy(update={"data_dir": tmp_path})
    async with api_on(configured, connection) as (api, app):
        yield api, configured, app


async def test_a_10_mib_document_is_streamed_in_and_out(
    documents_api: tuple[httpx.AsyncClient, Settings, Any],
) -> None:
    api, configured, app = documents_api
    applicant = Applicant(api=api, settings=configured, uscc=random_uscc("500103"))
    assert (await applicant.register()).status_code == 201
    content = b"%PDF-1.4\n" + os.urandom(10 * MIB - 9)
    digest = hashlib.sha256(content).hexdigest()
    uploaded = await applicant.upload("financial_statements_3y", content)
    assert uploaded.status_code == 201, uploaded.text
    assert (uploaded.json()["sha256"], uploaded.json()["size"]) == (digest, len(content))
    store = build_storage(configured)
    try:
        assert await store.size_of(digest) == len(content)
        assert list(store.staging.iterdir()) == []  # the staged copy is gone either way
        if isinstance(store, S3Storage):
            head = await (await store.client()).head_object(Bucket=store.bucket, Key=store.key_of(digest))
            assert head["ETag"].strip('"').endswith("-2")  # 8 MiB and 2 MiB parts
    finally:
        await store.close()

    url = f"{API}/documents/{uploaded.json()['id']}/content"
    status, headers, chunks = await asgi_get(app, url, applicant.headers)
    assert status == 200
    assert headers["content-length"] == str(len(content))
    assert headers["etag"] == f'"{digest}"'
    assert hashlib.sha256(b"".join(chunks)).hexdigest() == digest
    assert len(chunks) >= 10 * MIB // CHUNK  # streamed, one chunk at a time
    assert max(map(len, chunks)) <= CHUNK

    first, last = 8 * MIB - 100, 8 * MIB + 99  # across the parts' boundary
    part = await api.get(url, headers={**applicant.headers, "Range": f"bytes={first}-{last}"})
    assert part.status_code == 206
    assert part.content == content[first : last + 1]
    assert part.headers["content-range"] == f"bytes {first}-{last}/{len(content)}"
    tail = await api.get(url, headers={**applicant.headers, "Range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, content[-5:])
    beyond = await api.get(url, headers={**applicant.headers, "Range": f"bytes={len(content)}-"})
    assert (beyond.status_code, beyond.headers["content-type"]) == (416, PROBLEM_JSON)


async def test_an_upload_to_an_unreachable_store_is_a_503_problem(
    settings: Settings, connection: AsyncConnection, s3_server: S3Server, tmp_path: Path
) -> None:
    nowhere = S3Server(endpoint_url=f"http://127.0.0.1:{free_port()}", bucket=s3_server.bucket)
    configured = s3_settings(settings, nowhere, tmp_path)
    async with api_on(configured, connection) as (api, _):
        applicant = Applicant(api=api, settings=configured, uscc=random_uscc("500103"))
        assert (await applicant.register()).status_code == 201
        refused = await applicant.upload("business_licence")
        assert refused.status_code == 503, refused.text
        assert refused.headers["content-type"] == PROBLEM_JSON
        assert list((tmp_path / "documents" / ".staging").iterdir()) == []
