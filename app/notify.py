"""Run-change notifications over the broker's Redis, so event streams wake at once instead of polling.

The database stays the only source of truth: a notification only says "look again" (app/streams/hub.py).
"""

from __future__ import annotations

import logging
import uuid

import redis

from app.settings import Settings
from app.tls.redis import redis_client

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "fedlens:run:"
PUBLISH_TIMEOUT_S = 2  # best effort: a stalled broker must not hold a round up


def channel(run_id: uuid.UUID) -> str:
    return f"{CHANNEL_PREFIX}{run_id}"


def notify(settings: Settings, run_id: uuid.UUID) -> None:
    """Tell the run's watchers that it changed (a round stored, a status set); best effort."""
    try:
        redis_client(settings.broker, settings.redis_ca_file, PUBLISH_TIMEOUT_S).publish(channel(run_id), b"changed")
    except redis.RedisError as exc:
        logger.warning("could not notify the watchers of run %s: %s", run_id, exc)
