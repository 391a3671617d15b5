"""A fake site server over real TLS on loopback, and an enrolled site against it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.site.fake_server import Certificate, FakeSiteServer, make_certificate
from worker.site.enrollment import enroll
from worker.site.identity import SiteIdentity

TOKEN = "one-time-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """``fedlens site`` installs the service's JSON log handler; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certificate, Certificate]:
    """The server's certificate, and another one for localhost (a man in the middle's, or a replaced one)."""
    folder = tmp_path_factory.mktemp("certificates")
    return make_certificate(folder, "server"), make_certificate(folder, "intruder")


@pytest.fixture
def server(certificates: tuple[Certificate, Certificate]) -> Iterator[FakeSiteServer]:
    with FakeSiteServer(certificates[0]) as running:
        yield running


@pytest.fixture
def enrolled(server: FakeSiteServer, certificates: tuple[Certificate, Certificate], tmp_path: Path) -> SiteIdentity:
    return enroll(
        server=server.url,
        token=TOKEN,
        fingerprint=certificates[0].fingerprint,
        folder=tmp_path / "site",
        insecure_http=False,
    )
