"""A stand-in for the server's /api/site/ routes: HTTPS on loopback with certificates made here, recording requests."""

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
    results: dict[str, dict[str, object]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet: the test reads the recording instead
        return

    def _answer(self, status: int, payload: object = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        state = self.server.state
        with state.lock:
            state.requests.append(Recorded(method, self.path, dict(self.headers.items()), body))
        parts = self.path.split("?")[0].strip("/").split("/")
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
            self._answer(200, raw=state.blobs[parts[3]])
        elif parts[:3] == ["api", "site", "blobs"] and hashlib.sha256(body).hexdigest() == parts[3]:
            with state.lock:
                status = 200 if parts[3] in state.blobs else 201
                state.blobs[parts[3]] = body
            self._answer(status, {"sha256": parts[3]})
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
