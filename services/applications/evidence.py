"""The evidence file store: uploaded files kept on disk by content, ``{data_dir}/documents/ab/abcdef...``
(the SHA-256 in hex), each stored once however many documents name it. An upload is streamed to a staging
file while it is hashed, never held whole in memory, and moved into place only when its document is
written."""

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

CHUNK = 1024 * 1024


class Readable(Protocol):
    """An upload as the framework hands it over (``fastapi.UploadFile``)."""

    async def read(self, size: int = -1) -> bytes: ...


def stored_path(data_dir: Path, digest: str) -> Path:
    return data_dir / "documents" / digest[:2] / digest


@dataclass
class StagedUpload:
    """An upload written to a staging file: its name and media type as the client gave them, its size and
    digest. Use it as a context manager: the staging file is removed on leaving unless ``keep`` moved it."""

    data_dir: Path
    path: Path
    filename: str
    content_type: str
    size: int
    sha256: str

    def keep(self) -> None:
        """Move the content into the store (a file already there with this digest is the same content)."""
        target = stored_path(self.data_dir, self.sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            self.path.unlink(missing_ok=True)
        else:
            self.path.replace(target)

    def __enter__(self) -> StagedUpload:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.path.unlink(missing_ok=True)


async def stage(
    upload: Readable, *, data_dir: Path, filename: str, content_type: str, limit: int
) -> StagedUpload:
    """Stream `upload` to a staging file, hashing it on the way; more than `limit` bytes is a 413."""
    folder = data_dir / "documents" / ".staging"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / uuid.uuid4().hex
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
        data_dir=data_dir,
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

    path: Path
    size: int
    sha256: str
    content_type: str
    filename: str

    def answer(
        self,
        *,
        range_header: str | None,
        if_none_match: str | None,
        if_range: str | None,
        disposition: str = "attachment",
    ) -> Response:
        """The answer to a GET of its content (``services.files.serve_file``: ETag, one range)."""
        return serve_file(
            self.path,
            size=self.size,
            digest=self.sha256,
            media_type=self.content_type,
            filename=self.filename,
            range_header=range_header,
            if_none_match=if_none_match,
            if_range=if_range,
            disposition=disposition,
        )
