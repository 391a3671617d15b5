"""The real API served by uvicorn over TLS on loopback, on a database of its own: what an agent meets in production."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from app.sites import blobs, registry
from tests.api.factories import add_experiment, add_run
from tests.api.sites import add_task
from tests.services import database_name, ensure_database, postgres_url, redis_url
from tests.site.fake_server import Certificate
from worker.site.enrollment import enroll
from worker.site.identity import SiteIdentity

DATABASE = database_name("fedlens_site")


@dataclass(frozen=True)
class LiveServer:
    url: str
    port: int
    settings: Settings
    engine: Engine
    certificate: Certificate

    def enroll(self, folder: Path) -> SiteIdentity:
        """A new site, enrolled by the agent's own code with the certificate's fingerprint."""
        with Session(self.engine) as session:
            invitation = registry.create_site(session=session, name=f"hospital-{uuid.uuid4().hex[:8]}")
        fingerprint = self.certificate.fingerprint
        return enroll(
            server=self.url, token=invitation.token, fingerprint=fingerprint, folder=folder, insecure_http=False
        )

    def publish(self, data: bytes, site: SiteIdentity, folder: Path) -> str:
        """Global weights as the orchestrator publishes them, with a task that lets ``site`` download them."""
        path = folder / f"global-{uuid.uuid4().hex}.npz"
        path.write_bytes(data)
        sha256 = blobs.put_file(self.settings.artifacts, path)
        with Session(self.engine) as session:
            add_task(session, site.site_id, add_run(session, add_experiment(session)).id, sha256)
        return sha256


@contextmanager
def live_server(certificate: Certificate, folder: Path) -> Iterator[LiveServer]:
    """The app on a fresh database, without its lifespan (no watchdog), until the block ends."""
    ensure_database(DATABASE, fresh=True)
    url = postgres_url(DATABASE)
    upgrade(url)
    settings = Settings(database_url=url, broker_url=redis_url("api"), data_dir=folder)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        ssl_certfile=str(certificate.chain),
        ssl_keyfile=str(certificate.key),
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    engine = create_engine(url)
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield LiveServer(f"https://127.0.0.1:{port}", port, settings, engine, certificate)
    finally:
        server.should_exit = True
        thread.join(15)
        listener.close()
        engine.dispose()
