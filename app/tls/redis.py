"""fedlens' Redis clients: TLS options for a ``rediss://`` broker in the one spelling that Celery (kombu), its result
backend and redis-py all accept, so every client verifies the server the same way, and one cached client per use."""

from __future__ import annotations

import ssl
from functools import lru_cache
from pathlib import Path
from typing import Any

import redis


def redis_url(broker: str) -> str:
    """Celery spells a Redis unix socket ``redis+socket://PATH``; redis-py spells it ``unix://PATH``."""
    return broker.replace("redis+socket://", "unix://", 1)


@lru_cache
def redis_client(broker: str, ca_file: Path | None, timeout_s: float) -> redis.Redis:
    """A client of the broker's Redis whose connects and replies time out after ``timeout_s``, shared (with its
    connection pool) by every caller that passes the same arguments."""
    options = redis_ssl(broker, ca_file) or {}
    return redis.Redis.from_url(
        redis_url(broker), socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **options
    )


def redis_ssl(broker: str, ca_file: Path | None) -> dict[str, Any] | None:
    """None for a plain broker; for ``rediss://``, require a certificate that chains to ``ca_file`` (default: the
    system's CAs) and names the host of the URL. The password travels in the URL (``rediss://:PASSWORD@host``)."""
    if not broker.startswith("rediss://"):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if ca_file is not None:
        options["ssl_ca_certs"] = str(ca_file)
    return options
