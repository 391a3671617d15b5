"""Content-addressed weights files: ``<artifacts>/blobs/<sha256>``, written once, checked on every read."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from app.digest import file_sha256

SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BlobError(ValueError):
    """An upload that is too large or whose content does not match its name."""


def blob_path(artifacts: Path, sha256: str) -> Path:
    if not SHA256.fullmatch(sha256):
        raise BlobError("a blob is named by the SHA-256 of its content: 64 lowercase hex characters")
    return artifacts / "blobs" / sha256[:2] / sha256


def put_file(artifacts: Path, source: Path) -> str:
    """Store a local file (the server's global weights) under its hash; returns the hash."""
    sha = file_sha256(source)
    target = blob_path(artifacts, sha)
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
    return sha


async def receive(artifacts: Path, chunks: AsyncIterator[bytes], *, max_bytes: int) -> tuple[str, Path]:
    """Stream an upload to a temporary file beside the store, hashing as it arrives: (sha256, temporary path).

    The caller checks the hash against the name and the signature, then calls ``keep``; nothing half-written or
    unverified ever appears under a blob name.
    """
    folder = artifacts / "blobs" / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=folder, delete=False)  # noqa: SIM115 - closed below, renamed by keep()
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > max_bytes:
                raise BlobError(f"the upload exceeds {max_bytes // 2**20} MiB")
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
