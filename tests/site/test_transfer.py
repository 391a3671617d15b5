"""Weights files between the agent and the real API over TLS, through a proxy that breaks the connection mid-transfer:
the agent's next try resumes where the bytes that arrived end, and never keeps a file whose SHA-256 is wrong."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.sites import blobs
from tests.site.fake_server import Certificate
from tests.site.live_server import LiveServer, live_server
from tests.site.proxy import CuttingProxy
from worker.site.connection import SiteClient
from worker.site.identity import SiteError, SiteIdentity

CHUNK = 256 * 2**10
DATA = os.urandom(3 * 2**20 + 12345)  # 12 full chunks and a short one
SHA = hashlib.sha256(DATA).hexdigest()
#: bytes a transfer sends besides the file's: TLS records and handshakes, request and response headers, JSON answers
OVERHEAD = 64 * 2**10


@pytest.fixture(scope="module")
def live(
    certificates: tuple[Certificate, Certificate], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with live_server(certificates[0], tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture
def proxy(live: LiveServer) -> Iterator[CuttingProxy]:
    relay = CuttingProxy(live.port)
    yield relay
    relay.close()


@pytest.fixture
def site(live: LiveServer, tmp_path: Path) -> SiteIdentity:
    return live.enroll(tmp_path / "site")


@pytest.fixture
def client(site: SiteIdentity, proxy: CuttingProxy) -> Iterator[SiteClient]:
    """The agent's client of ``site``, through the proxy."""
    through = dataclasses.replace(site.server, port=proxy.port, url=proxy.url)
    connection = SiteClient(dataclasses.replace(site, server=through), chunk_bytes=CHUNK)
    yield connection
    connection.close()


def test_an_upload_broken_off_resumes_from_the_chunks_the_server_holds(
    client: SiteClient, proxy: CuttingProxy, live: LiveServer, tmp_path: Path
) -> None:
    path = tmp_path / "update.npz"
    path.write_bytes(DATA)
    proxy.cut_after("up", 5 * CHUNK + 1000)

    with pytest.raises(httpx.TransportError):
        client.upload(path)
    held = client.upload_state(SHA).offset
    before = proxy.relayed["up"]
    stored = client.upload(path)
    sent = proxy.relayed["up"] - before

    assert proxy.cuts == 1
    assert 3 * CHUNK <= held <= 5 * CHUNK and held % CHUNK == 0  # whole chunks only, the broken one discarded
    assert stored == SHA and blobs.blob_path(live.settings.artifacts, SHA).read_bytes() == DATA
    assert len(DATA) - held <= sent < len(DATA) - held + OVERHEAD


def test_a_stored_file_is_not_sent_again(client: SiteClient, proxy: CuttingProxy, tmp_path: Path) -> None:
    path = tmp_path / "update.npz"
    path.write_bytes(DATA)
    client.upload(path)
    before = proxy.relayed["up"]

    assert client.upload(path) == SHA
    assert proxy.relayed["up"] - before < OVERHEAD


def test_a_download_broken_off_resumes_with_a_range_request(
    client: SiteClient, proxy: CuttingProxy, live: LiveServer, site: SiteIdentity, tmp_path: Path
) -> None:
    sha = live.publish(DATA, site, tmp_path)
    target = tmp_path / "cache" / f"{sha}.npz"
    target.parent.mkdir()
    proxy.cut_after("down", 2**20)

    with pytest.raises(httpx.TransportError):
        client.weights(sha, target)
    held = target.with_name(target.name + ".part").stat().st_size
    before = proxy.relayed["down"]
    client.weights(sha, target)
    received = proxy.relayed["down"] - before

    assert proxy.cuts == 1 and 0 < held < len(DATA)
    assert target.read_bytes() == DATA and not target.with_name(target.name + ".part").exists()
    assert len(DATA) - held <= received < len(DATA) - held + OVERHEAD


def test_a_download_whose_content_is_not_its_name_is_refused_and_not_kept(
    client: SiteClient, live: LiveServer, site: SiteIdentity, tmp_path: Path
) -> None:
    sha = live.publish(DATA, site, tmp_path)
    blobs.blob_path(live.settings.artifacts, sha).write_bytes(DATA[:-1] + b"!")  # changed on the server's disk
    target = tmp_path / f"{sha}.npz"

    with pytest.raises(SiteError, match="do not match their SHA-256"):
        client.weights(sha, target)

    assert list(tmp_path.glob(f"{sha}*")) == []


def test_the_agent_holds_a_weights_file_in_memory_neither_to_upload_it_nor_to_download_it(
    client: SiteClient, live: LiveServer, site: SiteIdentity, tmp_path: Path
) -> None:
    """The peaks are this process's, the server's buffers included (about 2 MiB, whatever the file's size): a
    file of 8 MiB held whole would pass the bound alone."""
    large = DATA * 3
    for content in (DATA[:10], large):  # imports and buffers of the first transfers are not measured
        path = tmp_path / f"update-{len(content)}.npz"
        path.write_bytes(content)
        sha = live.publish(content[::-1], site, tmp_path)
        tracemalloc.start()
        try:
            client.upload(path)
            uploading = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            client.weights(sha, tmp_path / f"{sha}.npz")
            downloading = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert uploading < len(large) / 2 and downloading < len(large) / 2
