"""Evidence files: an upload streamed to a staging file while it is hashed, never held whole in memory, and
put into the store (``services.storage``: a folder, ``{data_dir}/documents/ab/abcdef...``, or an S3 bucket;
by SHA-256, each content stored once however many documents name it) only when its document is written."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

import anyio
from fastapi import Response

from services.errors import PayloadTooLarge
from services.files import serve_file
from services.storage import Storage

CHUNK = 1024 * 1024


class Readable(Protocol):
    """An upload as the framework hands it over (``fastapi.UploadFile``)."""

    async def read(self, size: int = -1) -> bytes: ...


@dataclass
class StagedUpload:
    """An upload written to a staging file: its name and media type as the client gave them, its size and
    digest. Use it as a context manager: the staging file is removed on leaving unless ``keep`` moved it."""

    storage: Storage
    path: Path
    filename: str
    content_type: str
    size: int
    sha256: str

    async def keep(self) -> None:
        """Put the content into the store (content already there with this digest is the same content)."""
        await self.storage.put(self.sha256, self.path, self.size)

    def __enter__(self) -> StagedUpload:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.path.unlink(missing_ok=True)


async def stage(
    upload: Readable, *, storage: Storage, filename: str, content_type: str, limit: int
) -> StagedUpload:
    """Stream `upload` to a staging file (in ``storage.staging``), hashing it on the way; more than `limit`
    bytes is a 413."""
    storage.staging.mkdir(parents=True, exist_ok=True)
    path = storage.staging / uuid.uuid4().hex
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("wb") as out:
            while chunk := await upload.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"An evidence file may be at most {limit} bytes.")
                await anyio.to_thread.run_sync(_hash_and_write, digest, out, chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return StagedUpload(
        storage=storage,
        path=path,
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=digest.hexdigest(),
    )


def _hash_and_write(digest: hashlib._Hash, out: BinaryIO, chunk: bytes) -> None:
    digest.update(chunk)
    out.write(chunk)


@dataclass(frozen=True, slots=True)
class DocumentFile:
    """A document's content in the store, with what its download is labelled by."""

    storage: Storage
    size: int
    sha256: str
    content_type: str
    filename: str

    async def answer(
        self,
        *,
        range_header: str | None,
        if_none_match: str | None,
        if_range: str | None,
        disposition: str = "attachment",
    ) -> Response:
        """The answer to a GET of its content (``services.files.serve_file``: ETag, one range)."""
        return await serve_file(
            self.storage,
            self.sha256,
            size=self.size,
            media_type=self.content_type,
            filename=self.filename,
            range_header=range_header,
            if_none_match=if_none_match,
            if_range=if_range,
            disposition=disposition,
        )
