"""Run-change notifications over the broker's Redis, so event streams wake at once instead of polling.

The database stays the only source of truth: a notification only says "look again" (app/streams/hub.py).
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache
from pathlib import Path

import redis

from app.settings import Settings
from app.tls.redis import redis_ssl

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "fedlens:run:"


def channel(run_id: uuid.UUID) -> str:
    return f"{CHANNEL_PREFIX}{run_id}"


def redis_url(broker: str) -> str:
    """Celery spells a Redis unix socket ``redis+socket://PATH``; redis-py spells it ``unix://PATH``."""
    return broker.replace("redis+socket://", "unix://", 1)


@lru_cache
def _publisher(broker: str, ca_file: Path | None) -> redis.Redis:
    return redis.Redis.from_url(redis_url(broker), socket_timeout=2, **(redis_ssl(broker, ca_file) or {}))


def notify(settings: Settings, run_id: uuid.UUID) -> None:
    """Tell the run's watchers that it changed (a round stored, a status set); best effort."""
    try:
        _publisher(settings.broker, settings.redis_ca_file).publish(channel(run_id), b"changed")
    except redis.RedisError as exc:
        logger.warning("could not notify the watchers of run %s: %s", run_id, exc)
