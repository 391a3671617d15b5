"""Change notifications over the broker's Redis, so event streams and site long polls wake at once instead of
polling.

The database stays the only source of truth: a notification only says "look again" (app/streams/hub.py).
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import suppress

import redis

from app.settings import Settings
from app.tls.redis import redis_client

logger = logging.getLogger(__name__)

CHANNEL_PREFIX = "fedlens:"
PUBLISH_TIMEOUT_S = 2  # best effort: a stalled broker must not hold a round up


def channel(run_id: uuid.UUID) -> str:
    """Where a run's changes are announced (its event streams listen)."""
    return f"{CHANNEL_PREFIX}run:{run_id}"


def site_channel(site_id: uuid.UUID) -> str:
    """Where new tasks for a site are announced (its agent's long poll listens)."""
    return f"{CHANNEL_PREFIX}site:{site_id}"


def answers_channel(run_id: uuid.UUID) -> str:
    """Where a site's answer to one of the run's tasks is announced (the orchestrator waiting for it listens)."""
    return f"{CHANNEL_PREFIX}answers:{run_id}"


def publish(settings: Settings, *channels: str) -> None:
    """Say "look again" on each channel; best effort, a lost message only costs the listener's recheck delay."""
    try:
        client = redis_client(settings.broker, settings.redis_ca_file, PUBLISH_TIMEOUT_S)
        for name in channels:
            client.publish(name, b"changed")
    except redis.RedisError as exc:
        logger.warning("could not notify %s: %s", ", ".join(channels), exc)


def notify(settings: Settings, run_id: uuid.UUID) -> None:
    """Tell the run's watchers that it changed (a round stored, a status set)."""
    publish(settings, channel(run_id))


class Subscription:
    """A blocking wait on one channel, for a worker that polls the database: ``wait`` returns at the first
    notification or after ``timeout_s``, and the caller looks at the database after each wait, which stays the only
    source of truth. While Redis fails, the subscription is retried only every ``RETRY_S`` and each wait just sleeps
    ``timeout_s``, so the caller keeps its own pace (and the log gets one line per outage)."""

    RETRY_S = 10.0

    def __init__(self, settings: Settings, name: str) -> None:
        self._settings, self._name = settings, name
        self._pubsub: redis.client.PubSub | None = None
        self._retry_at = 0.0
        self._failing = False

    def open(self) -> None:
        """Subscribe now (if not yet), so that a message published from here on ends the next wait."""
        if self._pubsub is not None or time.monotonic() < self._retry_at:
            return
        try:
            pubsub = redis_client(self._settings.broker, self._settings.redis_ca_file, PUBLISH_TIMEOUT_S).pubsub
            subscription = pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]  # left untyped
            subscription.subscribe(self._name)
        except redis.RedisError as exc:
            self._failed(exc)
            return
        self._pubsub = subscription
        if self._failing:
            logger.info("notifications on %s are back", self._name)
            self._failing = False

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.open()
        try:
            while self._pubsub is not None and (left := deadline - time.monotonic()) > 0:
                if self._pubsub.get_message(timeout=left) is not None:  # None: timed out, or a subscribe reply
                    while self._pubsub.get_message(timeout=0) is not None:  # one look serves every message so far
                        pass
                    return
        except redis.RedisError as exc:
            self._failed(exc)
        time.sleep(max(0.0, deadline - time.monotonic()))

    def _failed(self, exc: redis.RedisError) -> None:
        if not self._failing:
            logger.warning("no notifications on %s, polling the database instead: %s", self._name, exc)
            self._failing = True
        self._retry_at = time.monotonic() + self.RETRY_S
        self.close()

    def close(self) -> None:
        if self._pubsub is not None:
            with suppress(redis.RedisError):
                self._pubsub.close()
            self._pubsub = None
