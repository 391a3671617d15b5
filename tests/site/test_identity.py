"""Enrollment, the site's key on disk, certificate pinning against a real TLS server, and request signatures."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from app.sites.protocol import SIGNATURE_HEADER, Enroll, Hardware, Heartbeat, body_sha256, verify
from tests.site.conftest import TOKEN
from tests.site.fake_server import SITE_NAME, Certificate, FakeSiteServer
from worker.cli import main
from worker.site.connection import SiteClient
from worker.site.identity import KEY_FILE, SITE_FILE, PinMismatch, SiteError, SiteIdentity, load_identity


def _colons(fingerprint: str) -> str:
    """As openssl prints it: upper case, a colon between bytes."""
    return ":".join(fingerprint[i : i + 2] for i in range(0, 64, 2)).upper()


def _enroll(url: str, fingerprint: str, folder: Path) -> Result:
    return CliRunner().invoke(
        main, ["site", "enroll", "--server", url, "--token", TOKEN, "--fingerprint", fingerprint, "--dir", str(folder)]
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_enrollment_pins_the_certificate_and_keeps_the_key_private(
    server: FakeSiteServer,
    certificates: tuple[Certificate, Certificate],
    tmp_path: Path,
) -> None:
    folder = tmp_path / "site"

    result = _enroll(server.url, _colons(certificates[0].fingerprint), folder)

    assert result.exit_code == 0, result.output
    record = json.loads((folder / SITE_FILE).read_text())
    assert record == {
        "server": server.url,
        "site_id": str(server.state.site_id),
        "name": SITE_NAME,
        "fingerprint": certificates[0].fingerprint,
    }
    assert (_mode(folder), _mode(folder / KEY_FILE)) == (0o700, 0o600)
    identity = load_identity(folder)
    sent = Enroll.model_validate_json(server.state.requests[-1].body)
    raw_public = identity.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert (sent.token, base64.b64decode(sent.public_key)) == (TOKEN, raw_public)
    secrets = [
        identity.key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
        identity.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).splitlines()[1],
    ]
    exposed = b"".join(r.body + str(r.headers).encode() for r in server.state.requests)
    exposed += (folder / SITE_FILE).read_bytes() + result.output.encode()
    for secret in [*secrets, base64.b64encode(secrets[0])]:
        assert secret not in exposed
    assert TOKEN not in result.output


def test_a_wrong_fingerprint_is_refused_before_the_token_is_sent(
    server: FakeSiteServer, certificates: tuple[Certificate, Certificate], tmp_path: Path
) -> None:
    result = _enroll(server.url, certificates[1].fingerprint, tmp_path / "site")

    assert result.exit_code == 2
    assert "fingerprint mismatch" in result.output
    assert certificates[0].fingerprint in result.output and certificates[1].fingerprint in result.output
    assert server.state.requests == []
    assert not (tmp_path / "site" / SITE_FILE).exists()


def test_a_swapped_certificate_is_refused_on_a_later_request(
    server: FakeSiteServer, certificates: tuple[Certificate, Certificate], enrolled: SiteIdentity
) -> None:
    client = SiteClient(load_identity(enrolled.folder))
    beat = Heartbeat(agent_version="test", hardware=Hardware(cpus=1, memory_gb=1), datasets=[])
    client.heartbeat(beat)
    served = len(server.state.requests)

    server.present(certificates[1])
    with pytest.raises(PinMismatch, match="fingerprint mismatch") as refused:
        client.heartbeat(beat)

    assert certificates[1].fingerprint in str(refused.value)
    assert len(server.state.requests) == served  # nothing reached the impostor
    client.close()


def test_signed_requests_verify_and_an_upload_signs_each_chunk(
    server: FakeSiteServer, enrolled: SiteIdentity, tmp_path: Path
) -> None:
    client = SiteClient(enrolled, chunk_bytes=8000)
    data = b"weights file bytes " * 1000  # 19,000 bytes: chunks at 0, 8,000 and 16,000
    (tmp_path / "update.npz").write_bytes(data)

    client.heartbeat(Heartbeat(agent_version="test", hardware=Hardware(cpus=1, memory_gb=1), datasets=[]))
    assert client.next_task(1) is None
    sha256 = client.upload(tmp_path / "update.npz")
    client.close()

    assert sha256 == hashlib.sha256(data).hexdigest() and server.state.blobs[sha256] == data
    signed = server.state.requests[1:]  # after the enrollment
    assert [(r.method, r.path, len(r.body)) for r in signed] == [
        ("POST", "/api/site/heartbeat", len(signed[0].body)),
        ("GET", "/api/site/tasks/next?wait=1", 0),
        ("GET", f"/api/site/blobs/{sha256}/upload", 0),
        ("PUT", f"/api/site/blobs/{sha256}?offset=0&size=19000", 8000),
        ("PUT", f"/api/site/blobs/{sha256}?offset=8000&size=19000", 8000),
        ("PUT", f"/api/site/blobs/{sha256}?offset=16000&size=19000", 3000),
    ]
    public = base64.b64encode(enrolled.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    for request in signed:
        verify(public, request.headers, request.method, request.path, body_sha256(request.body))
    tampered = dict(signed[3].headers)
    tampered[SIGNATURE_HEADER] = signed[4].headers[SIGNATURE_HEADER]
    with pytest.raises(ValueError, match="wrong signature"):
        verify(public, tampered, "PUT", signed[3].path, body_sha256(signed[3].body))


def test_plain_http_is_refused_unless_asked_for(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["site", "enroll", "--server", "http://127.0.0.1:9", "--token", TOKEN, "--dir", str(tmp_path / "s")]
    )

    assert result.exit_code == 2 and "https only" in result.output
    assert not (tmp_path / "s").exists()


def test_a_key_readable_by_others_is_refused(enrolled: SiteIdentity) -> None:
    (enrolled.folder / KEY_FILE).chmod(0o644)

    with pytest.raises(SiteError, match="chmod 600"):
        load_identity(enrolled.folder)
