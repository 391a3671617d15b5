"""Content-addressed weights files: ``<artifacts>/blobs/<sha256>``, written once, checked on every read."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from app.digest import file_sha256
from app.errors import PayloadTooLarge

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobError(ValueError):
    """A blob name that is not a SHA-256."""


def check_name(sha256: str) -> None:
    if not SHA256.fullmatch(sha256):
        raise BlobError("a blob is named by the SHA-256 of its content: 64 lowercase hex characters")


def blob_path(artifacts: Path, sha256: str) -> Path:
    check_name(sha256)
    return artifacts / "blobs" / sha256[:2] / sha256


def incoming(artifacts: Path) -> Path:
    """Files being received or written, before they are checked and moved under their name."""
    return artifacts / "blobs" / "incoming"


def partials(artifacts: Path) -> Path:
    """Sites' partial uploads, a folder per site (app.sites.uploads)."""
    return artifacts / "blobs" / "partial"


def put_file(artifacts: Path, source: Path) -> str:
    """Store a local file (the server's global weights) under its hash; returns the hash."""
    sha = file_sha256(source)
    target = blob_path(artifacts, sha)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    return sha


async def receive(artifacts: Path, chunks: AsyncIterator[bytes], *, max_bytes: int) -> tuple[str, Path]:
    """Stream a request body to a temporary file beside the store, hashing as it arrives: (sha256, temporary path).

    The caller checks the signature over that hash, then appends the file to an upload or keeps it under its name
    (app.sites.uploads); nothing half-written or unverified ever appears under a blob name.
    """
    folder = incoming(artifacts)
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=folder, delete=False)  # noqa: SIM115 - closed below, renamed by keep()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the request body is over the {max_bytes:,}-byte limit")
            digest.update(chunk)
            handle.write(chunk)
    except BaseException:
        handle.close()
        Path(handle.name).unlink(missing_ok=True)
        raise
    handle.close()
    return digest.hexdigest(), Path(handle.name)


def keep(artifacts: Path, sha256: str, temporary: Path) -> bool:
    """Move a verified upload to its name; False if that content was stored already (uploads are idempotent)."""
    target = blob_path(artifacts, sha256)
    if target.exists():
        temporary.unlink(missing_ok=True)
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temporary, target)
    return True
