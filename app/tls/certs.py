"""fedlens' own certificate authority: a CA kept in the data directory signs the API's server certificate."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 397  # the longest validity browsers accept for a server certificate
RENEW_BEFORE = timedelta(days=30)
CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY = "ca.pem", "ca.key", "server.pem", "server.key"


class CertificateError(Exception):
    """A certificate or key given by the user cannot be used; the message says which and why."""


@dataclass(frozen=True)
class ServerCert:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the server certificate, what a site agent pins
    ca: Path | None = None  # fedlens' own CA, for clients that verify the chain instead of pinning


def fingerprint(cert: x509.Certificate) -> str:
    """Colon-separated SHA-256 of the DER certificate, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def default_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """Names a client may use to reach this machine: loopback, the host name, the bound address, and ``extra``."""
    hosts = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn(), *extra]
    if bind_host not in ("0.0.0.0", "::", ""):
        hosts.append(bind_host)
    return list(dict.fromkeys(h for h in hosts if h))


def _write_private(path: Path, data: bytes) -> None:
    """Create the file with mode 0600 before any byte is written, so a key is never readable by others."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _write_public(path: Path, data: bytes) -> None:
    """Write to a temporary file, then rename: a process that trusts the CA (a test, a supervisor, a site's setup)
    may read the file as soon as it exists, and must never find it empty or half written."""
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedlens"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def ensure_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA in ``folder``, created on first use; it is what clients trust, so it is kept, never renewed here."""
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(
                f"{CA_KEY} in the TLS folder is not an EC key: remove both CA files to make a new CA"
            )
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"fedlens CA {socket.gethostname()}")
    cert = (
        _builder(name, name, key, CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _key_pem(key))
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _usable(cert_path: Path, hosts: list[str], ca: x509.Certificate) -> bool:
    """True if the stored server certificate was issued by this CA, names every host and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        named = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    return (
        cert.issuer == ca.subject
        and set(_san(hosts)) <= set(named)
        and cert.not_valid_after_utc - datetime.now(UTC) > RENEW_BEFORE
    )


def ensure_server(folder: Path, hosts: list[str]) -> ServerCert:
    """The CA and a server certificate for ``hosts`` in ``folder``.

    The certificate is kept across restarts, so its fingerprint stays what sites pinned; it is issued anew only
    when a host is missing from it or it expires within RENEW_BEFORE.
    """
    ca_cert, ca_key = ensure_ca(folder)
    cert_path, key_path = folder / SERVER_CERT, folder / SERVER_KEY
    if not (key_path.exists() and _usable(cert_path, hosts, ca_cert)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(_name(hosts[0]), ca_cert.subject, key, SERVER_DAYS)
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(key_path, _key_pem(key))
        _write_public(
            cert_path, cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
        )
    leaf = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return ServerCert(cert_path, key_path, fingerprint(leaf), folder / CA_CERT)


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def given_server(cert_path: Path, key_path: Path) -> ServerCert:
    """A certificate and key the operator supplies, checked to belong together before the server starts."""
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as error:
        raise CertificateError(f"cannot read {error.filename}: {error.strerror}") from error
    except ValueError as error:
        raise CertificateError(
            f"--tls-cert must be a PEM certificate chain and --tls-key an unencrypted PEM key: {error}"
        ) from error
    if _spki(chain[0].public_key()) != _spki(key.public_key()):
        raise CertificateError("--tls-key is not the private key of the first certificate in --tls-cert")
    return ServerCert(cert_path, key_path, fingerprint(chain[0]))


def server_cert(*, tls: bool, cert: Path | None, key: Path | None, folder: Path, hosts: list[str]) -> ServerCert | None:
    """The certificate the API serves: the operator's (``cert``/``key``), else with ``tls`` one from fedlens' own
    CA in ``folder`` for ``hosts``; None for plain HTTP."""
    if (cert is None) != (key is None):
        raise CertificateError("give both --tls-cert and --tls-key (FEDLENS_TLS_CERT, FEDLENS_TLS_KEY), or neither")
    if cert is not None and key is not None:
        return given_server(cert, key)
    return ensure_server(folder, hosts) if tls else None


def served_fingerprint(*, tls: bool, cert: Path | None, folder: Path) -> str | None:
    """The fingerprint of the certificate the API serves (the operator's, else the one in ``folder``), which a site
    agent pins when it enrolls; None when the API serves plain HTTP or has not made its certificate yet."""
    path = cert if cert is not None else (folder / SERVER_CERT if tls else None)
    if path is None or not path.exists():
        return None
    return fingerprint(x509.load_pem_x509_certificates(path.read_bytes())[0])
