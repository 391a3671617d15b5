"""One subscription to change notifications per API process, fanned out to every request that waits on a channel:
the event streams of a run, the long poll of a site's agent.

A stream per Redis connection does not scale: 500 streams held 500 connections and 500 polling loops, and the API
stopped answering. Here one pattern subscription wakes the waiters of a channel, and the streams of a run share one
database read per change. The database stays the source of truth: every watched channel is looked at again every
``recheck_s`` (every ``FALLBACK_S`` while Redis does not answer), so a lost notification costs a delay, never an
event or a task.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis import asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from app.notify import CHANNEL_PREFIX
from app.settings import Settings
from app.tls.redis import redis_ssl, redis_url

logger = logging.getLogger(__name__)

FALLBACK_S = 1.0  # how often waiters look at the database while Redis does not answer
LINGER_S = 10.0  # the subscription outlives its last waiter this long: an agent's next long poll finds it open
T = TypeVar("T")


def hub_client_name() -> str:
    """The name of a hub's Redis connection in ``CLIENT LIST``: one per API process is what scaling relies on."""
    return f"fedlens-events-{os.getpid()}"


class Feed:
    """What the waiters of one channel share: a version bumped on every notification or recheck, and the reads made
    for the current version, so that 500 viewers of a run cost one query per change, not 500."""

    def __init__(self) -> None:
        self.version = 0
        self.watchers = 0
        self._changed = asyncio.Event()
        self._reads: dict[int, asyncio.Future[Any]] = {}

    def bump(self) -> None:
        self.version += 1
        self._reads.clear()
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: int, timeout_s: float) -> int:
        """The version after the next change, or ``seen`` if nothing changed within ``timeout_s``."""
        if self.version == seen:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout_s)
        return self.version

    async def read(self, since: int, load: Callable[[int], T]) -> T:
        """``load(since)`` in a worker thread, once per version and ``since`` however many streams ask."""
        future = self._reads.get(since)
        if future is None:
            future = asyncio.ensure_future(run_in_threadpool(load, since))
            self._reads[since] = future
        result: T = await asyncio.shield(future)
        return result


class Hub:
    """The notifications of one broker for the waiters of one event loop; subscribed while any request watches."""

    def __init__(self, broker: str, ca_file: Path | None, recheck_s: float) -> None:
        self.broker, self.ca_file, self.recheck_s = broker, ca_file, recheck_s
        self.feeds: dict[str, Feed] = {}
        self.subscribed = False
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: asyncio.TimerHandle | None = None

    @asynccontextmanager
    async def watch(self, channel: str) -> AsyncIterator[Feed]:
        """The feed of one channel (``app.notify.channel`` or ``site_channel``), bumped on each notification."""
        feed = self.feeds.setdefault(channel, Feed())
        feed.watchers += 1
        if self._unsubscribe is not None:
            self._unsubscribe.cancel()
            self._unsubscribe = None
        if self._task is None:
            self._task = asyncio.create_task(self._listen())
        try:
            yield feed
        finally:
            feed.watchers -= 1
            if not feed.watchers:
                del self.feeds[channel]
            if not self.feeds and self._task is not None:
                self._unsubscribe = asyncio.get_running_loop().call_later(LINGER_S, self._stop)

    def _stop(self) -> None:
        self._unsubscribe = None
        if not self.feeds and self._task is not None:
            self._task.cancel()
            self._task = None

    def _bump_all(self) -> None:
        for feed in self.feeds.values():
            feed.bump()

    def _bump(self, channel: bytes) -> None:
        feed = self.feeds.get(channel.decode(errors="replace"))
        if feed is not None:
            feed.bump()

    async def _listen(self) -> None:
        while True:
            try:
                await self._subscribed()
            except (redis.RedisError, OSError) as error:
                logger.warning("notifications unavailable, waiters look every %.0f s: %s", FALLBACK_S, error)
            self.subscribed = False
            self._bump_all()
            await asyncio.sleep(FALLBACK_S)

    async def _subscribed(self) -> None:
        client = aioredis.Redis.from_url(
            redis_url(self.broker), client_name=hub_client_name(), **(redis_ssl(self.broker, self.ca_file) or {})
        )
        pubsub = client.pubsub()
        loop = asyncio.get_running_loop()
        try:
            await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
            self.subscribed = True
            self._bump_all()  # what changed while no subscription was open
            recheck_at = loop.time() + self.recheck_s
            while True:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=max(0.0, recheck_at - loop.time())
                )
                if message is not None:
                    self._bump(message["channel"])
                if loop.time() >= recheck_at:
                    self._bump_all()
                    recheck_at = loop.time() + self.recheck_s
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            await client.aclose()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, Path | None, float], Hub]] = (
    weakref.WeakKeyDictionary()
)


def hub_for(settings: Settings) -> Hub:
    """The hub of the running event loop: uvicorn runs one loop per process, test clients one per request."""
    hubs = _hubs.setdefault(asyncio.get_running_loop(), {})
    key = (settings.broker, settings.redis_ca_file, settings.stream_recheck_s)
    if key not in hubs:
        hubs[key] = Hub(*key)
    return hubs[key]
