"""Run-change notifications over the broker's Redis, so event streams wake at once instead of polling.

The database stays the only source of truth: a notification only says "look again". A lost one (Redis
restarting, a subscriber joining late) costs a stream at most ``FALLBACK_S`` of delay, never an event.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator
from functools import lru_cache

import redis
from redis import asyncio as aioredis

logger = logging.getLogger(__name__)

FALLBACK_S = 1.0  # a stream looks at the database at least this often, notified or not
RETRY_S = 0.25  # how often it looks while Redis does not answer


def channel(run_id: uuid.UUID) -> str:
    return f"fedlens:run:{run_id}"


def redis_url(broker: str) -> str:
    """Celery spells a Redis unix socket ``redis+socket://PATH``; redis-py spells it ``unix://PATH``."""
    return broker.replace("redis+socket://", "unix://", 1)


@lru_cache
def _publisher(broker: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url(broker), socket_timeout=2)


def notify(broker: str, run_id: uuid.UUID) -> None:
    """Tell the run's watchers that it changed (a round stored, a status set); best effort."""
    try:
        _publisher(broker).publish(channel(run_id), b"changed")
    except redis.RedisError as exc:
        logger.warning("could not notify the watchers of run %s: %s", run_id, exc)


async def changes(broker: str, run_id: uuid.UUID) -> AsyncGenerator[None, None]:
    """Yields each time the run may have changed: on a notification, or after ``FALLBACK_S`` without one."""
    client = aioredis.Redis.from_url(redis_url(broker))
    pubsub = client.pubsub()
    try:
        subscribed = await _subscribe(pubsub, channel(run_id))
        while True:
            if subscribed:
                try:
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=FALLBACK_S)
                except redis.RedisError:
                    subscribed = False
            else:
                await asyncio.sleep(RETRY_S)
                subscribed = await _subscribe(pubsub, channel(run_id))
            yield
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        await client.aclose()


async def _subscribe(pubsub: aioredis.client.PubSub, name: str) -> bool:
    try:
        await pubsub.subscribe(name)
    except redis.RedisError as exc:
        logger.warning("event stream falls back to polling: %s", exc)
        return False
    return True
