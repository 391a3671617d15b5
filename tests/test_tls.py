"""TLS of the API: fedlens' own CA and server certificate, and ``fedlens api --tls`` / ``--tls-cert`` serving HTTPS."""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from app.tls.certs import CertificateError, ensure_server, fingerprint, server_cert
from tests.e2e.stack import ROOT, free_port, wait_for
from tests.services import redis_url

HOSTS = ["localhost", "127.0.0.1"]


def served_fingerprint(port: int) -> str:
    return fingerprint(x509.load_pem_x509_certificate(ssl.get_server_certificate(("127.0.0.1", port)).encode()))


def test_the_ca_and_server_key_are_private_and_the_certificate_verifies_for_each_host(tmp_path: Path) -> None:
    cert = ensure_server(tmp_path / "tls", HOSTS)

    for key in (tmp_path / "tls" / "ca.key", cert.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert cert.ca is not None
    context = ssl.create_default_context(cafile=cert.ca)
    chain = x509.load_pem_x509_certificates(cert.cert.read_bytes())
    assert fingerprint(chain[0]) == cert.fingerprint and len(cert.fingerprint) == 32 * 3 - 1
    names = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(v) for v in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1"}
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_the_server_certificate_is_kept_until_a_host_is_added_and_the_ca_always(tmp_path: Path) -> None:
    first = ensure_server(tmp_path, HOSTS)
    ca = (tmp_path / "ca.pem").read_bytes()

    assert ensure_server(tmp_path, HOSTS).fingerprint == first.fingerprint  # what sites pinned stays valid
    assert ensure_server(tmp_path, ["localhost"]).fingerprint == first.fingerprint
    widened = ensure_server(tmp_path, [*HOSTS, "fedlens.example"])
    assert widened.fingerprint != first.fingerprint
    assert (tmp_path / "ca.pem").read_bytes() == ca


def test_a_key_that_does_not_match_the_certificate_is_refused(tmp_path: Path) -> None:
    one, other = ensure_server(tmp_path / "one", HOSTS), ensure_server(tmp_path / "other", HOSTS)

    with pytest.raises(CertificateError, match="not the private key"):
        server_cert(tls=False, cert=one.cert, key=other.key, folder=tmp_path, hosts=HOSTS)
    with pytest.raises(CertificateError, match="both --tls-cert and --tls-key"):
        server_cert(tls=False, cert=one.cert, key=None, folder=tmp_path, hosts=HOSTS)
    assert server_cert(tls=False, cert=None, key=None, folder=tmp_path, hosts=HOSTS) is None


@contextmanager
def fedlens_api(tmp_path: Path, *args: str, workers: int = 1) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """A `fedlens api` process (of ``workers`` processes) on a free port, its console log and its process."""
    port = free_port()
    env = os.environ | {
        "FEDLENS_API_WORKERS": str(workers),
        "FEDLENS_DATA_DIR": str(tmp_path / "data"),
        "FEDLENS_DATABASE_URL": f"sqlite:///{tmp_path / 'fedlens.db'}",
        "FEDLENS_BROKER_URL": redis_url("api"),
        "FEDLENS_REQUIRED_WORKERS": "[]",  # no workers here: the API and its certificate are under test
    }
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        command = [sys.executable, "-m", "worker.cli", "api", "--port", str(port), *args]
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield port, log, process
    finally:
        process.terminate()
        process.wait(15)


def printed(log: Path, label: str) -> str:
    found = re.search(rf"^{label}: (\S+)$", log.read_text(), flags=re.MULTILINE)
    return found.group(1) if found else ""


def test_api_tls_serves_https_with_its_own_ca_and_prints_the_fingerprint_it_serves(tmp_path: Path) -> None:
    with fedlens_api(tmp_path, "--tls") as (port, log, _process):
        fingerprint_line = wait_for(lambda: printed(log, "TLS certificate SHA-256 fingerprint"), 30, "the fingerprint")
        ca = Path(printed(log, r"TLS certificate authority \(give it to clients that verify\)"))
        assert ca == (tmp_path / "data" / "tls" / "ca.pem").resolve()
        with httpx.Client(base_url=f"https://localhost:{port}", verify=ssl.create_default_context(cafile=ca)) as https:
            wait_for(lambda: _answers(https), 30, "the API over HTTPS")
            assert https.get("/healthz").status_code == 200
        assert served_fingerprint(port) == fingerprint_line
        assert f"fedlens on https://127.0.0.1:{port}" in log.read_text()
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # no plain HTTP on the TLS port


def test_api_serves_the_certificate_and_key_it_is_given(tmp_path: Path) -> None:
    given = ensure_server(tmp_path / "operator", HOSTS)

    with fedlens_api(tmp_path, "--tls-cert", str(given.cert), "--tls-key", str(given.key)) as (port, log, _process):
        assert given.ca is not None
        with httpx.Client(verify=ssl.create_default_context(cafile=given.ca)) as https:
            wait_for(lambda: _answers(https, f"https://127.0.0.1:{port}"), 30, "the API over HTTPS")
        assert served_fingerprint(port) == given.fingerprint == printed(log, "TLS certificate SHA-256 fingerprint")
        assert not (tmp_path / "data" / "tls").exists()  # no CA of its own when given a certificate


def test_api_refuses_to_start_with_a_key_of_another_certificate(tmp_path: Path) -> None:
    one, other = ensure_server(tmp_path / "one", HOSTS), ensure_server(tmp_path / "other", HOSTS)
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "api", "--tls-cert", str(one.cert), "--tls-key", str(other.key)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--tls-key is not the private key of the first certificate in --tls-cert" in result.stderr
    assert "Traceback" not in result.stderr


def _answers(client: httpx.Client, base: str = "") -> bool:
    try:
        return client.get(f"{base}/healthz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def test_api_workers_answer_keep_alive_requests_without_the_delayed_ack_wait(tmp_path: Path) -> None:
    """Two API processes behind one port (FEDLENS_API_WORKERS=2): each keep-alive request is answered at once, not
    after the client's 40 ms delayed ACK (uvicorn leaves Nagle on for its worker processes' sockets: app/nodelay.py)."""
    with (
        fedlens_api(tmp_path, workers=2) as (port, _log, _process),
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        wait_for(lambda: _answers(http), 60, "the API")
        seconds = []
        for _ in range(10):
            began = time.perf_counter()
            http.get("/healthz")
            seconds.append(time.perf_counter() - began)

    assert min(seconds) < 0.03, seconds  # with Nagle on, every one waits about 0.04 s


def test_the_api_processes_end_with_their_killed_manager_so_a_restarted_api_gets_the_port(tmp_path: Path) -> None:
    """`fedlens up` restarts an API whose process was SIGKILLed; with FEDLENS_API_WORKERS=2 that process is uvicorn's
    manager, whose worker processes would otherwise keep serving the port and block the new API."""
    with (
        fedlens_api(tmp_path, workers=2) as (port, _log, manager),
        httpx.Client(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        wait_for(lambda: _answers(http), 60, "the API")
        manager.kill()
        manager.wait(10)
        wait_for(lambda: not _answers(http), 15, "the API processes to end with their manager")
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(("127.0.0.1", port))  # free again: a restarted API can listen on it
