"""TLS options for a ``rediss://`` broker, in the one spelling that Celery (kombu), its result backend and redis-py
all accept, so every Redis client of fedlens verifies the server the same way."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


def redis_ssl(broker: str, ca_file: Path | None) -> dict[str, Any] | None:
    """None for a plain broker; for ``rediss://``, require a certificate that chains to ``ca_file`` (default: the
    system's CAs) and names the host of the URL. The password travels in the URL (``rediss://:PASSWORD@host``)."""
    if not broker.startswith("rediss://"):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if ca_file is not None:
        options["ssl_ca_certs"] = str(ca_file)
    return options
