"""/healthz: each part of the service (database, broker, orchestrators, training and check workers) in one answer.

It is anonymous and polled, so it is fast (one SELECT, one Redis round trip) and says what is missing without
saying why in detail: connection errors, with their hosts and paths, go to the log only.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import text

from app.db import session_factory
from app.health.heartbeats import PARTS, client_for, last_beats
from app.settings import Settings

logger = logging.getLogger(__name__)


def _database(settings: Settings) -> bool:
    try:
        with session_factory(settings)() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        logger.warning("health check: the database does not answer", exc_info=True)
        return False
    return True


def _workers(beats: dict[str, float], window_s: float, now: float) -> dict[str, Any]:
    alive = [at for at in beats.values() if now - at <= window_s]
    last = max(beats.values(), default=None)
    return {
        "status": "ok" if alive else "missing",
        "alive": len(alive),
        "last_heartbeat": datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds") if last else None,
        "last_heartbeat_age_s": round(now - last, 1) if last else None,
    }


def report(settings: Settings) -> tuple[bool, dict[str, Any]]:
    """(healthy, report): healthy when the database and the broker answer and every required queue
    (``FEDLENS_REQUIRED_WORKERS``) has a worker whose last beat is within three heartbeat periods."""
    body: dict[str, Any] = {"database": "ok" if _database(settings) else "unreachable"}
    window_s = 3 * settings.heartbeat_s
    try:
        beats = last_beats(client_for(settings.broker, settings.redis_ca_file), PARTS)
        body["broker"] = "ok"
    except redis.RedisError:
        logger.warning("health check: the broker does not answer", exc_info=True)
        beats = {}
        body["broker"] = "unreachable"
    now = time.time()
    missing = [part for part in ("database", "broker") if body[part] != "ok"]
    for queue, part in PARTS.items():
        if queue in beats:
            body[part] = _workers(beats[queue], window_s, now)
            if queue in settings.required_workers and body[part]["status"] != "ok":
                missing.append(f"{part} (none beat in the last {window_s:g} s)")
    body["missing"] = missing
    body["status"] = "ok" if not missing else "unavailable"
    return not missing, body
