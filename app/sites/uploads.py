"""Resumable uploads of weights files in chunks: a site's partial file, appended to in order and checked whole.

The protocol is tus's in small (and S3 multipart's, without parts): ``GET /api/site/blobs/{sha256}/upload`` says how
many bytes of a site's upload the server holds; ``PUT /api/site/blobs/{sha256}?offset=N&size=S`` appends one signed
chunk at exactly that offset; the chunk that completes the file has the whole file's SHA-256 checked against the
name before the file is moved under it. A partial upload belongs to the site that signed its chunks: it lives in a
folder named by the site's id, which no request can name.
"""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.digest import file_sha256
from app.errors import BadRequest, Conflict, ContentMismatch, PayloadTooLarge
from app.settings import Settings
from app.sites import blobs
from app.sites.protocol import OFFSET_HEADER, UploadState

#: partial uploads one site may hold: an agent sends one file at a time, and one more allows for an abandoned one
PARTIALS_PER_SITE = 2
#: a partial upload or received chunk untouched this long is deleted when a site starts a new upload
STALE_AFTER_S = 24 * 3600.0


class OffsetMismatch(Conflict):
    """A chunk sent at another offset than the bytes the server holds; the answer names those (``Upload-Offset``)."""

    def __init__(self, held: int) -> None:
        detail = f"this upload continues at offset {held}: send the file from there"
        super().__init__(detail, {OFFSET_HEADER: str(held)})
        self.held = held


def changed(received: str, expected: str) -> str:
    return f"the uploaded content has SHA-256 {received}, not {expected}: it was changed on the way"


def too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"a file of {size:,} bytes is over the {limit:,}-byte limit (FEDLENS_MAX_UPLOAD_BYTES)")


def _mtime(path: Path) -> float:
    """When the file was last written; infinitely recent once it is gone (another request removed it)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return math.inf


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def sweep(artifacts: Path, now: float | None = None) -> int:
    """Delete partial uploads and received chunks untouched for ``STALE_AFTER_S`` (an agent gave up, or a server
    process died while a chunk arrived); returns how many. Cheap: a listing of a few small folders."""
    cutoff = (time.time() if now is None else now) - STALE_AFTER_S
    files = (*blobs.partials(artifacts).glob("*/*"), *blobs.incoming(artifacts).glob("*"))
    stale = [path for path in files if _mtime(path) < cutoff]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


@dataclass(frozen=True)
class Upload:
    """One site's upload of the file named ``sha256`` (a valid name: the route checks it before any byte is read)."""

    artifacts: Path
    site_id: uuid.UUID
    sha256: str
    max_bytes: int
    chunk_bytes: int

    @classmethod
    def of(cls, settings: Settings, site_id: uuid.UUID, sha256: str) -> Upload:
        return cls(settings.artifacts, site_id, sha256, settings.max_upload_bytes, settings.max_chunk_bytes)

    @property
    def partial(self) -> Path:
        return blobs.partials(self.artifacts) / str(self.site_id) / self.sha256

    def state(self, offset: int | None = None) -> UploadState:
        stored = blobs.blob_path(self.artifacts, self.sha256).exists()
        held = 0 if stored else _size(self.partial) if offset is None else offset
        return UploadState(stored=stored, offset=held, max_bytes=self.max_bytes, chunk_bytes=self.chunk_bytes)

    def add(self, offset: int, size: int | None, chunk: Path, chunk_sha256: str) -> tuple[UploadState, bool]:
        """Append a received chunk, signed by this upload's site, at ``offset`` of a file of ``size`` bytes (None:
        this chunk is the last); returns the state and whether this chunk stored the file (False: stored before,
        or more to come). The received chunk file is moved or copied, never kept."""
        end = offset + chunk.stat().st_size
        total = end if size is None else size
        if end > total:
            raise BadRequest(f"the chunk ends at byte {end:,}, past the file's size of {total:,} bytes", "offset")
        if total > self.max_bytes:
            raise too_large(total, self.max_bytes)
        if blobs.blob_path(self.artifacts, self.sha256).exists():
            return self.state(), False  # uploads are idempotent: the same content is stored once
        if offset == 0 and end == total:  # the whole file in one request: the old single upload, no partial
            if chunk_sha256 != self.sha256:
                raise ContentMismatch(changed(chunk_sha256, self.sha256))
            created = blobs.keep(self.artifacts, self.sha256, chunk)
            self.partial.unlink(missing_ok=True)
            return self.state(), created
        with self._locked(create=offset == 0) as handle:
            held = 0 if handle is None else os.fstat(handle.fileno()).st_size
            if handle is None or held != offset:
                raise OffsetMismatch(held)
            if held == 0:
                self._make_room()
            with open(chunk, "rb") as source:
                shutil.copyfileobj(source, handle)
            handle.flush()
            if end < total:
                return self.state(end), False
            return self._complete()

    def _complete(self) -> tuple[UploadState, bool]:
        """The whole file is here: stored under its name if its SHA-256 is that name, else discarded (400)."""
        digest = file_sha256(self.partial)
        if digest != self.sha256:
            self.partial.unlink(missing_ok=True)
            raise ContentMismatch(f"{changed(digest, self.sha256)}; the partial upload was discarded, send it again")
        created = blobs.keep(self.artifacts, self.sha256, self.partial)
        return self.state(), created

    @contextmanager
    def _locked(self, *, create: bool) -> Iterator[BinaryIO | None]:
        """The partial file open for appending under an exclusive lock (two chunks never interleave, whichever
        process of the API receives them), or None when there is none to append to.

        After the lock is taken the name must still lead to the locked file: a completed upload is renamed to its
        blob, and nothing may ever be appended to a stored blob.
        """
        path = self.partial
        path.parent.mkdir(parents=True, exist_ok=True)
        if not create and not path.exists():
            yield None
            return
        with open(path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            yield handle if same else None

    def _make_room(self) -> None:
        """A new partial upload: stale ones go (every site's), and this site keeps at most ``PARTIALS_PER_SITE``,
        its least recently written ones deleted first, so that abandoned uploads cannot fill the disk."""
        sweep(self.artifacts)
        others = [p for p in self.partial.parent.iterdir() if p.name != self.sha256]
        for old in sorted(others, key=_mtime, reverse=True)[PARTIALS_PER_SITE - 1 :]:
            old.unlink(missing_ok=True)
