"""A stand-in for the server's /api/site/ routes: HTTPS on loopback with certificates made here, recording requests.

Its uploads take chunks and its weights downloads take a Range header as the real API does, in few lines; the tests
of broken transfers run against the real API (test_transfer.py)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import queue
import ssl
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SITE_NAME = "hospital-a"


@dataclass(frozen=True)
class Certificate:
    chain: Path  # the leaf, then the CA that signed it
    key: Path
    fingerprint: str  # SHA-256 of the leaf's DER


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificate(folder: Path, label: str) -> Certificate:
    """A CA of its own and a server certificate for localhost and 127.0.0.1, as ``fedlens up --tls`` makes."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, issuer: str, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
        )

    ca = (
        builder(f"{label} CA", f"{label} CA", ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    leaf = (
        builder("localhost", f"{label} CA", key.public_key())
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    chain, key_file = folder / f"{label}.pem", folder / f"{label}.key"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    fingerprint = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    return Certificate(chain, key_file, fingerprint)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class SiteServerState:
    site_id: uuid.UUID = field(default_factory=uuid.uuid4)
    requests: list[Recorded] = field(default_factory=list)
    tasks: queue.Queue[dict[str, object]] = field(default_factory=queue.Queue)
    blobs: dict[str, bytes] = field(default_factory=dict)
    partials: dict[str, bytes] = field(default_factory=dict)  # uploads under way, by SHA-256
    chunk_bytes: int = 2**20
    results: dict[str, dict[str, object]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads the recording instead
        return

    def _answer(
        self, status: int, payload: object = None, raw: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _weights(self, data: bytes) -> None:
        """The whole file, or from the byte a ``Range: bytes=N-`` header names (206)."""
        start = int(self.headers.get("Range", "bytes=0-")[6:-1] or 0)
        if not start:
            self._answer(200, raw=data)
        else:
            self._answer(206, raw=data[start:], headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})

    def _upload(self, sha256: str, query: dict[str, list[str]], body: bytes) -> None:
        """A chunk of an upload, as app/sites/uploads.py takes it (one site, no limits but the chunk size)."""
        state = self.server.state
        offset, size = int(query["offset"][0]), int(query["size"][0])
        with state.lock:
            held = state.partials.get(sha256, b"")
            if sha256 in state.blobs:
                status = 200
            elif offset != len(held):
                self._answer(409, {"detail": "wrong offset"}, headers={"Upload-Offset": str(len(held))})
                return
            elif offset + len(body) < size:
                state.partials[sha256] = held + body
                status = 202
            elif hashlib.sha256(held + body).hexdigest() == sha256:
                state.blobs[sha256] = held + body
                state.partials.pop(sha256, None)
                status = 201
            else:
                self._answer(400, {"detail": "changed on the way"})
                return
            self._answer(status, self._upload_state(sha256))

    def _upload_state(self, sha256: str) -> dict[str, object]:
        state = self.server.state
        offset = len(state.partials.get(sha256, b""))
        return {"stored": sha256 in state.blobs, "offset": offset, "max_bytes": 2**30, "chunk_bytes": state.chunk_bytes}

    def _route(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state = self.server.state
        with state.lock:
            state.requests.append(Recorded(method, self.path, dict(self.headers.items()), body))
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        if parts == ["api", "site", "enroll"]:
            self._answer(201, {"site_id": str(state.site_id), "name": SITE_NAME})
        elif parts == ["api", "site", "heartbeat"]:
            self._answer(200, {"server_time": time.time()})
        elif parts == ["api", "site", "tasks", "next"]:
            try:
                self._answer(200, state.tasks.get(timeout=0.2))
            except queue.Empty:
                self._answer(204)
        elif parts[:3] == ["api", "site", "weights"] and parts[3] in state.blobs:
            self._weights(state.blobs[parts[3]])
        elif parts[:3] == ["api", "site", "blobs"] and parts[4:] == ["upload"]:
            self._answer(200, self._upload_state(parts[3]))
        elif parts[:3] == ["api", "site", "blobs"] and method == "PUT":
            self._upload(parts[3], parse_qs(query), body)
        elif parts[:3] == ["api", "site", "tasks"] and parts[-1] == "result":
            with state.lock:
                state.results[parts[3]] = json.loads(body)
            self._answer(200, {"accepted": True, "late": False})
        else:
            self._answer(404, {"detail": "not found"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: SiteServerState


class FakeSiteServer:
    """HTTPS on 127.0.0.1 with ``certificate``; ``present`` swaps the certificate for later connections."""

    def __init__(self, certificate: Certificate) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate.chain, certificate.key)
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.state = SiteServerState()
        self.httpd.socket = self.context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def state(self) -> SiteServerState:
        return self.httpd.state

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}"

    def present(self, certificate: Certificate) -> None:
        self.context.load_cert_chain(certificate.chain, certificate.key)

    def __enter__(self) -> FakeSiteServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
