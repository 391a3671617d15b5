"""A site's identity on disk: its Ed25519 key, the pinned server certificate and site.json."""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import stat
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

KEY_FILE = "site.key"
CERT_FILE = "server.pem"
SITE_FILE = "site.json"
CONNECT_TIMEOUT_S = 15.0


class SiteError(Exception):
    """A problem the operator must fix; the message says what, and never holds a key or a token."""


class PinMismatch(SiteError):
    """The server showed another certificate than the pinned one: a man in the middle, or a re-keyed server."""


def agent_version() -> str:
    try:
        return version("fedlens")
    except PackageNotFoundError:
        return "unknown"


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lower-case hex digits; colons and case as openssl or a browser print them."""
    hexed = text.replace(":", "").strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", hexed) is None:
        raise SiteError("--fingerprint must be the SHA-256 of the server's certificate: 64 hex digits, colons allowed")
    return hexed


def certificate_fingerprint(pem: str) -> str:
    """SHA-256 of the certificate's DER bytes, as ``openssl x509 -noout -fingerprint -sha256`` prints it."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@dataclass(frozen=True)
class ServerAddress:
    url: str  # scheme://host:port, no path
    host: str
    port: int
    tls: bool


def parse_server(url: str, *, insecure_http: bool) -> ServerAddress:
    """The server's origin; plain http only when asked for (tests), and no path, so signed targets are exact."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SiteError(f"--server {url!r}: expected https://host:port")
    if parts.scheme == "http" and not insecure_http:
        raise SiteError(f"{url}: the site agent talks to its server over https only (--insecure-http is for tests)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise SiteError(f"--server {url!r}: give the server's origin only (https://host:port), no path or query")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ServerAddress(f"{parts.scheme}://{host}:{port}", parts.hostname, port, parts.scheme == "https")


def presented_certificate(address: ServerAddress) -> str:
    """The certificate the server shows now, unverified: only ever compared with a pinned fingerprint."""
    return ssl.get_server_certificate((address.host, address.port), timeout=CONNECT_TIMEOUT_S)


def pinned_context(pem: str) -> ssl.SSLContext:
    """Trust exactly the pinned certificate (as its own trust anchor) and check the host name against it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # certificate and host name checks on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=pem)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def mismatch(address: ServerAddress, pinned: str, presented: str) -> PinMismatch:
    return PinMismatch(
        f"certificate fingerprint mismatch: {address.url} presents a certificate with SHA-256 {presented}, but "
        f"this site pinned {pinned}; someone may be intercepting the connection (or the server's certificate "
        "was replaced: then enroll again with the new fingerprint)"
    )


@dataclass(frozen=True)
class SiteIdentity:
    """Everything the agent needs to reach its server and sign requests; ``key`` never leaves this process."""

    folder: Path
    server: ServerAddress
    site_id: str
    name: str
    fingerprint: str | None  # None only for a test server over plain http
    key: Ed25519PrivateKey = field(repr=False)

    def tls(self) -> ssl.SSLContext | None:
        if self.fingerprint is None:
            return None
        return pinned_context((self.folder / CERT_FILE).read_text())


def make_folder(folder: Path) -> None:
    """The site's folder, readable by its owner only (it holds the private key and the split)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start, so the key is never readable by others, even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)


def load_key(folder: Path) -> Ed25519PrivateKey:
    """The site's key; refused, as ssh does, when others may read it."""
    path = folder / KEY_FILE
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise SiteError(f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}")
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SiteError(f"{path} is not an Ed25519 key")
    return key


def load_or_create_key(folder: Path) -> Ed25519PrivateKey:
    """A new key, or the one a failed enrollment already created in this folder."""
    if (folder / KEY_FILE).exists():
        return load_key(folder)
    key = Ed25519PrivateKey.generate()
    _write_private(folder / KEY_FILE, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key


def write_identity(folder: Path, server: ServerAddress, site_id: str, name: str, fingerprint: str | None) -> None:
    record = {"server": server.url, "site_id": site_id, "name": name, "fingerprint": fingerprint}
    (folder / SITE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def load_identity(folder: Path, *, insecure_http: bool = False) -> SiteIdentity:
    """The enrolled identity in ``folder``; a site enrolled over http runs only with ``insecure_http`` too."""
    path = folder / SITE_FILE
    if not path.is_file():
        raise SiteError(f"{folder} holds no enrolled site: run fedlens site enroll first")
    record = json.loads(path.read_text())
    server = parse_server(record["server"], insecure_http=insecure_http)
    fingerprint = record.get("fingerprint")
    if server.tls and (fingerprint is None or not (folder / CERT_FILE).is_file()):
        raise SiteError(f"{folder} has no pinned server certificate: enroll again")
    if server.tls and certificate_fingerprint((folder / CERT_FILE).read_text()) != fingerprint:
        raise SiteError(f"{folder / CERT_FILE} does not match the fingerprint in {SITE_FILE}: enroll again")
    return SiteIdentity(folder, server, str(record["site_id"]), str(record["name"]), fingerprint, load_key(folder))
