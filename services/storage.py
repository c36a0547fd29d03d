"""Where evidence content lives, by SHA-256: one interface, ``Storage``, and two stores behind it.

- ``LocalStorage``: a folder on this host, ``{data_dir}/documents/ab/abcdef...`` (the embedded default; one
  API process, or replicas sharing the folder).
- ``S3Storage``: a bucket of any S3-compatible server (AWS S3, MinIO), keys ``{prefix}ab/abcdef...`` - the
  folder's layout, so ``aws s3 sync var/documents s3://bucket/documents --exclude '.staging/*'`` moves a
  local store there. Every API replica serves every document.

Content is stored once per digest however many documents name it (``put`` of a digest already stored does
nothing) and never held whole in memory: an upload is staged to a local file (``staging``, per process) and
sent from it in parts of ``PART`` bytes, one at a time (an upload holds about two parts at its peak: the one
read and the socket's copy of what it has not sent yet); a download is one ranged GET streamed in chunks, so
a 206 reads only its bytes. An unreachable store is a 503 problem (``ServiceUnavailable``), never a
truncated answer.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from services.errors import ServiceUnavailable

if TYPE_CHECKING:
    from aiobotocore.session import ClientCreatorContext
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

    from services.config import Settings

CHUNK = 512 * 1024  # what a download holds in memory at a time
PART = 8 * 1024 * 1024  # a multipart upload's part (S3 wants at least 5 MiB but for the last)
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _checked(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"{digest!r} is not a SHA-256 in hex")
    return digest


class Storage(Protocol):
    """Content by SHA-256 (hex). ``staging`` is this process's folder for uploads being received."""

    @property
    def staging(self) -> Path: ...

    async def put(self, digest: str, staged: Path, size: int) -> None:
        """Store the `size` bytes of the file `staged` (their SHA-256 is `digest`); nothing if already there.
        The staged file may be moved away; the caller removes whatever is left of it."""
        ...

    async def size_of(self, digest: str) -> int | None:
        """The stored content's size, None when nothing is stored under `digest`."""
        ...

    def open_range(self, digest: str, start: int, length: int) -> AsyncIterator[bytes]:
        """`length` bytes of the content from byte `start`, in chunks (at most ``CHUNK`` bytes each)."""
        ...

    async def ready(self) -> str | None:
        """None when the store can be used, else why not (for ``/readyz``)."""
        ...

    async def close(self) -> None: ...


def build_storage(settings: Settings) -> Storage:
    """The store the settings name (``storage_backend``); S3's client connects on first use."""
    staging = settings.data_dir / "documents" / ".staging"
    if settings.storage_backend == "s3":
        return S3Storage.from_settings(settings, staging=staging)
    return LocalStorage(settings.data_dir / "documents", staging=staging)


class LocalStorage:
    """A folder, ``root/ab/abcdef...``; staged files are moved in (``staging`` on the same filesystem)."""

    def __init__(self, root: Path, *, staging: Path | None = None) -> None:
        self.root = root
        self._staging = staging or root / ".staging"

    @property
    def staging(self) -> Path:
        return self._staging

    def path_of(self, digest: str) -> Path:
        return self.root / _checked(digest)[:2] / digest

    async def put(self, digest: str, staged: Path, size: int) -> None:
        target = self.path_of(digest)
        if await self.size_of(digest) == size:
            return  # the same digest: the same content
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.replace(target)

    async def size_of(self, digest: str) -> int | None:
        try:
            return os.stat(self.path_of(digest)).st_size
        except FileNotFoundError:
            return None

    async def open_range(self, digest: str, start: int, length: int) -> AsyncIterator[bytes]:
        """Each chunk read in a worker thread with ``os.pread``: a slow disk never stalls the event loop."""
        path = self.path_of(digest)
        fd = os.open(path, os.O_RDONLY)
        try:
            offset, end = start, start + length
            while offset < end:
                chunk = await anyio.to_thread.run_sync(os.pread, fd, min(CHUNK, end - offset), offset)
                if not chunk:
                    raise OSError(f"{path} ended at byte {offset} of {end}")
                offset += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def ready(self) -> str | None:
        return None

    async def close(self) -> None:
        return None


class S3Storage:
    """A bucket of an S3-compatible server through aiobotocore: keys ``{prefix}ab/abcdef...``. One client
    (one connection pool) per process, made on first use and closed by ``close``."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "documents/",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        staging: Path,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._staging = staging
        self._endpoint_url, self._region = endpoint_url, region
        self._credentials = (access_key_id, secret_access_key)
        self._client: S3Client | None = None
        self._exits = AsyncExitStack()
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings, *, staging: Path) -> S3Storage:
        assert settings.s3_bucket is not None  # Settings refuses s3 without a bucket
        secret = settings.s3_secret_access_key
        return cls(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            staging=staging,
        )

    @property
    def staging(self) -> Path:
        return self._staging

    def key_of(self, digest: str) -> str:
        return f"{self.prefix}{_checked(digest)[:2]}/{digest}"

    async def client(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await self._exits.enter_async_context(self._new_client())
            return self._client

    def _new_client(self) -> ClientCreatorContext[S3Client]:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(
            connect_timeout=3,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,  # a download holds one while it streams
            # MinIO and most self-hosted servers want bucket names in the path, not the host
            s3={"addressing_style": "path" if self._endpoint_url else "auto"},
        )
        key_id, secret = self._credentials
        return get_session().create_client(
            "s3",
            region_name=self._region,
            endpoint_url=self._endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=config,
        )

    async def put(self, digest: str, staged: Path, size: int) -> None:
        key = self.key_of(digest)
        if await self.size_of(digest) == size:
            return
        with _unavailable("store the document"):
            client = await self.client()
            if size <= PART:
                body = await anyio.to_thread.run_sync(staged.read_bytes)
                await client.put_object(Bucket=self.bucket, Key=key, Body=body)
                return
            upload = await client.create_multipart_upload(Bucket=self.bucket, Key=key)
            upload_id = upload["UploadId"]
            try:
                parts: list[CompletedPartTypeDef] = []
                with staged.open("rb") as source:
                    for number in range(1, 10_001):  # S3 takes at most 10,000 parts
                        part = await anyio.to_thread.run_sync(source.read, PART)
                        if not part:
                            break
                        sent = await client.upload_part(
                            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
                        )
                        del part  # before the next is read: one part in memory at a time
                        parts.append({"PartNumber": number, "ETag": sent["ETag"]})
                await client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
            except BaseException:
                # the parts sent so far are dropped (a bucket lifecycle rule catches any an abort misses)
                with anyio.CancelScope(shield=True), suppress(Exception):
                    await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                raise

    async def size_of(self, digest: str) -> int | None:
        from botocore.exceptions import ClientError

        with _unavailable("read the document"):
            client = await self.client()
            try:
                head = await client.head_object(Bucket=self.bucket, Key=self.key_of(digest))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
        return head["ContentLength"]

    async def open_range(self, digest: str, start: int, length: int) -> AsyncIterator[bytes]:
        """One GET with ``Range: bytes=start-last``, its body read ``CHUNK`` bytes at a time."""
        if length <= 0:
            return
        client = await self.client()
        answer = await client.get_object(
            Bucket=self.bucket, Key=self.key_of(digest), Range=f"bytes={start}-{start + length - 1}"
        )
        received = 0
        async with answer["Body"] as body:
            async for chunk in body.iter_chunks(CHUNK):
                received += len(chunk)
                yield chunk
        if received != length:
            raise OSError(f"{self.key_of(digest)} sent {received} of the {length} bytes asked for")

    async def ready(self) -> str | None:
        try:
            async with asyncio.timeout(3):
                await (await self.client()).head_bucket(Bucket=self.bucket)
        except Exception as exc:
            return f"storage: {type(exc).__name__}"
        return None

    async def close(self) -> None:
        self._client = None
        await self._exits.aclose()


@contextmanager
def _unavailable(doing: str) -> Iterator[None]:
    """Failures to reach the store (connection, timeout, a 5xx, a refusal) as a 503 problem."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable(f"The document store is unavailable: could not {doing}.") from exc
