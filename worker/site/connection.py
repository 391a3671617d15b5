"""Signed requests to the site's server over the pinned certificate: one method per endpoint of /api/site/."""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from pydantic import BaseModel

from app.digest import file_sha256
from app.sites.protocol import (
    OFFSET_HEADER,
    Heartbeat,
    SiteTask,
    TaskResult,
    UploadState,
    body_sha256,
    sign,
)
from worker.site.identity import (
    CONNECT_TIMEOUT_S,
    ServerAddress,
    SiteError,
    SiteIdentity,
    agent_version,
    certificate_fingerprint,
    mismatch,
    presented_certificate,
)

REQUEST_TIMEOUT_S = 120.0  # a weights file of a few MB on a slow hospital uplink
#: an upload goes in chunks of this size (or the server's limit, if smaller): the most a broken connection loses
CHUNK_BYTES = 8 * 2**20
#: what the agent reads of a file at a time, to hash it or to send it
READ_BYTES = 2**20
#: the largest global weights file the agent writes to its disk
MAX_DOWNLOAD_BYTES = 2**30
#: 409 answers (another offset) in a row that an upload follows before it gives up
MAX_OFFSET_CONFLICTS = 3
#: statuses worth asking again: the server is down or busy, or the site's key is (perhaps briefly) not accepted
RETRY_STATUSES = frozenset({401, 408, 425, 429})


class ServerRefused(SiteError):
    """The server answered with an error status; ``detail`` is its short explanation."""

    def __init__(self, what: str, status: int, detail: str) -> None:
        super().__init__(f"{what}: the server answered {status}: {detail}")
        self.status = status


class OffsetConflict(ServerRefused):
    """A chunk went to another offset than the server's copy of the upload ends at; ``offset`` is where it ends."""

    def __init__(self, what: str, detail: str, offset: int) -> None:
        super().__init__(what, 409, detail)
        self.offset = offset


def is_transient(error: Exception) -> bool:
    """Errors that asking again later can cure: network, server, certificate (logged loudly) or key trouble."""
    if isinstance(error, ServerRefused):
        return error.status >= 500 or error.status in RETRY_STATUSES
    return isinstance(error, httpx.TransportError | SiteError)


def response_detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return (detail if isinstance(detail, str) else response.text)[:300] or response.reason_phrase


def _certificate_refused(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def explain_certificate_failure(server: ServerAddress, pinned: str | None, reason: str) -> SiteError:
    """Why the pinned certificate did not verify: another certificate (named by fingerprint), or a name/date."""
    try:
        presented = certificate_fingerprint(presented_certificate(server))
    except (OSError, ValueError):
        return SiteError(f"{server.url}: the TLS handshake failed ({reason})")
    if pinned is not None and presented != pinned:
        return mismatch(server, pinned, presented)
    return SiteError(f"{server.url}: the pinned certificate does not verify ({reason}); check the host name and date")


def new_http_client(server: ServerAddress, tls: ssl.SSLContext | None) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        verify=tls if tls is not None else True,
        timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        headers={"User-Agent": f"fedlens-site/{agent_version()}"},
    )


def send(
    http: httpx.Client, server: ServerAddress, pinned: str | None, request: httpx.Request, *, stream: bool = False
) -> httpx.Response:
    """Send, turning a certificate failure into a message that names the fingerprint the server showed."""
    try:
        return http.send(request, stream=stream)
    except httpx.ConnectError as error:
        if _certificate_refused(error):
            raise explain_certificate_failure(server, pinned, str(error)) from error
        raise


class SiteClient:
    """One connection pool to the server; every request is signed over its method, target and body hash.

    Weights files travel without being held whole in memory: an upload goes in signed chunks of ``chunk_bytes``
    and a download streams to a file; either resumes after a broken connection where the bytes that arrived end.
    """

    def __init__(self, identity: SiteIdentity, chunk_bytes: int = CHUNK_BYTES) -> None:
        self.identity = identity
        self.chunk_bytes = chunk_bytes
        self._http = new_http_client(identity.server, identity.tls())

    def close(self) -> None:
        self._http.close()

    def _send(
        self,
        method: str,
        target: str,
        digest: str,
        headers: dict[str, str],
        content: bytes | Iterator[bytes] = b"",
        *,
        stream: bool = False,
    ) -> httpx.Response:
        """``target`` is the path with its query exactly as sent and ``digest`` the body's SHA-256: the server
        verifies the signature over both."""
        signed = sign(self.identity.key, self.identity.site_id, method, target, digest) | headers
        request = self._http.build_request(method, target, content=content, headers=signed)
        return send(self._http, self.identity.server, self.identity.fingerprint, request, stream=stream)

    def request(
        self, what: str, method: str, target: str, *, body: bytes = b"", content_type: str = "application/json"
    ) -> httpx.Response:
        response = self._send(method, target, body_sha256(body), {"Content-Type": content_type} if body else {}, body)
        if response.status_code >= 400:
            raise refusal(what, response)
        return response

    def _post(self, what: str, target: str, message: BaseModel) -> httpx.Response:
        return self.request(what, "POST", target, body=message.model_dump_json().encode())

    def heartbeat(self, beat: Heartbeat) -> None:
        self._post("heartbeat", "/api/site/heartbeat", beat)

    def next_task(self, wait_s: int) -> SiteTask | None:
        """Long poll: the server holds the request up to ``wait_s`` seconds; None when there is no work."""
        response = self.request("polling for work", "GET", f"/api/site/tasks/next?wait={wait_s}")
        return None if response.status_code == 204 else SiteTask.model_validate_json(response.content)

    def weights(self, sha256: str, target: Path) -> None:
        """Stream the global weights file with this SHA-256 to ``target``, hashing as it arrives, through
        ``target``.part: after a broken connection the next call asks only for the bytes after those in the .part
        file (an HTTP Range request). A file whose SHA-256 is not ``sha256`` is deleted and refused."""
        partial = target.with_name(target.name + ".part")
        with open(partial, "ab+") as file:
            file.seek(0)
            digest = hashlib.file_digest(file, "sha256")
            held = file.tell()
        what = "downloading global weights"
        ask = {"Range": f"bytes={held}-"} if held else {}
        with self._stream(what, f"/api/site/weights/{sha256}", ask) as response:
            if response.status_code != 416:  # 416: the .part file holds every byte already
                if not held or response.headers.get("Content-Range", "").split("-")[0] != f"bytes {held}":
                    digest, held = hashlib.sha256(), 0  # the whole file came: start again
                with open(partial, "ab" if held else "wb") as file:
                    for block in response.iter_bytes():
                        held += len(block)
                        if held > MAX_DOWNLOAD_BYTES:
                            partial.unlink()
                            raise SiteError(f"{what}: the file is over {MAX_DOWNLOAD_BYTES:,} bytes; refused")
                        file.write(block)
                        digest.update(block)
        if digest.hexdigest() != sha256:
            partial.unlink()
            raise SiteError(f"the global weights received do not match their SHA-256 {sha256}")
        os.replace(partial, target)

    @contextmanager
    def _stream(self, what: str, target: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """A signed GET whose body is read as it arrives; 416 (a range past the end) is the caller's to handle."""
        response = self._send("GET", target, body_sha256(b""), headers, stream=True)
        try:
            if response.status_code >= 400 and response.status_code != 416:
                response.read()
                raise refusal(what, response)
            yield response
        finally:
            response.close()

    def upload_state(self, sha256: str) -> UploadState:
        response = self.request("asking how much of an upload arrived", "GET", f"/api/site/blobs/{sha256}/upload")
        return UploadState.model_validate_json(response.content)

    def upload(self, path: Path) -> str:
        """Store a weights file by its SHA-256 (idempotent on the server) and return that hash. The file goes in
        chunks, each signed over its own bytes, from where the server's copy ends: calling again after a broken
        connection resumes, and a file the server holds already is not sent at all. A chunk is read from disk
        twice, to sign it and to send it, so the agent never holds more than a read buffer of the model."""
        sha256, size = file_sha256(path), path.stat().st_size
        state = self.upload_state(sha256)
        step, offset, conflicts = min(self.chunk_bytes, state.chunk_bytes), state.offset, 0
        while not state.stored:
            if offset >= size:
                raise SiteError(f"uploading weights: the server holds {offset:,} bytes of a {size:,}-byte file")
            try:
                state = self._chunk(path, sha256, offset, min(step, size - offset), size)
            except OffsetConflict as conflict:  # another request of ours got there first: go on from there
                conflicts += 1
                if conflicts > MAX_OFFSET_CONFLICTS:
                    raise
                offset = conflict.offset
                continue
            conflicts = 0
            if not state.stored and state.offset <= offset:
                raise SiteError(f"uploading weights: the server's copy did not grow past byte {offset:,}")
            offset = state.offset
        return sha256

    def _chunk(self, path: Path, sha256: str, offset: int, length: int, size: int) -> UploadState:
        digest = hashlib.sha256()
        for block in file_part(path, offset, length):
            digest.update(block)
        target = f"/api/site/blobs/{sha256}?offset={offset}&size={size}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        response = self._send("PUT", target, digest.hexdigest(), headers, file_part(path, offset, length))
        if response.status_code >= 400:
            raise refusal("uploading weights", response)
        return UploadState.model_validate_json(response.content)

    def result(self, task_id: str, result: TaskResult) -> dict[str, object]:
        """The server's answer: whether it accepted the result, and whether it came late."""
        answer = self._post("sending a task result", f"/api/site/tasks/{task_id}/result", result).json()
        return answer if isinstance(answer, dict) else {}


def file_part(path: Path, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of the file from ``offset``, in blocks of ``READ_BYTES``."""
    with open(path, "rb") as file:
        file.seek(offset)
        while length > 0 and (block := file.read(min(READ_BYTES, length))):
            length -= len(block)
            yield block


def refusal(what: str, response: httpx.Response) -> ServerRefused:
    """The error for an answer of 400 or more; a 409 that names the server's offset of an upload is a conflict."""
    detail = response_detail(response)
    offset = response.headers.get(OFFSET_HEADER, "")
    if response.status_code == 409 and offset.isdigit():
        return OffsetConflict(what, detail, int(offset))
    return ServerRefused(what, response.status_code, detail)
