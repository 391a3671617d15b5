"""Signed requests to the site's server over the pinned certificate: one method per endpoint of /api/site/."""

from __future__ import annotations

import ssl

import httpx
from pydantic import BaseModel

from app.sites.protocol import Heartbeat, SiteTask, TaskResult, body_sha256, sign
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
#: statuses worth asking again: the server is down or busy, or the site's key is (perhaps briefly) not accepted
RETRY_STATUSES = frozenset({401, 408, 425, 429})


class ServerRefused(SiteError):
    """The server answered with an error status; ``detail`` is its short explanation."""

    def __init__(self, what: str, status: int, detail: str) -> None:
        super().__init__(f"{what}: the server answered {status}: {detail}")
        self.status = status


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


def send(http: httpx.Client, server: ServerAddress, pinned: str | None, request: httpx.Request) -> httpx.Response:
    """Send, turning a certificate failure into a message that names the fingerprint the server showed."""
    try:
        return http.send(request)
    except httpx.ConnectError as error:
        if _certificate_refused(error):
            raise explain_certificate_failure(server, pinned, str(error)) from error
        raise


class SiteClient:
    """One connection pool to the server; every request is signed over its method, target and body hash."""

    def __init__(self, identity: SiteIdentity) -> None:
        self.identity = identity
        self._http = new_http_client(identity.server, identity.tls())

    def close(self) -> None:
        self._http.close()

    def request(
        self, what: str, method: str, target: str, *, body: bytes = b"", content_type: str = "application/json"
    ) -> httpx.Response:
        """``target`` is the path with its query exactly as sent: the server verifies the signature over it."""
        headers = sign(self.identity.key, self.identity.site_id, method, target, body_sha256(body))
        if body:
            headers["Content-Type"] = content_type
        request = self._http.build_request(method, target, content=body, headers=headers)
        response = send(self._http, self.identity.server, self.identity.fingerprint, request)
        if response.status_code >= 400:
            raise ServerRefused(what, response.status_code, response_detail(response))
        return response

    def _post(self, what: str, target: str, message: BaseModel) -> httpx.Response:
        return self.request(what, "POST", target, body=message.model_dump_json().encode())

    def heartbeat(self, beat: Heartbeat) -> None:
        self._post("heartbeat", "/api/site/heartbeat", beat)

    def next_task(self, wait_s: int) -> SiteTask | None:
        """Long poll: the server holds the request up to ``wait_s`` seconds; None when there is no work."""
        response = self.request("polling for work", "GET", f"/api/site/tasks/next?wait={wait_s}")
        return None if response.status_code == 204 else SiteTask.model_validate_json(response.content)

    def weights(self, sha256: str) -> bytes:
        """The global weights file with this SHA-256 (WeightsCache checks the hash before it is read)."""
        return self.request("downloading global weights", "GET", f"/api/site/weights/{sha256}").content

    def upload(self, data: bytes) -> str:
        """Store a weights file by its SHA-256 (idempotent on the server); returns that hash."""
        sha256 = body_sha256(data)
        target = f"/api/site/blobs/{sha256}"
        self.request("uploading weights", "PUT", target, body=data, content_type="application/octet-stream")
        return sha256

    def result(self, task_id: str, result: TaskResult) -> dict[str, object]:
        """The server's answer: whether it accepted the result, and whether it came late."""
        answer = self._post("sending a task result", f"/api/site/tasks/{task_id}/result", result).json()
        return answer if isinstance(answer, dict) else {}
