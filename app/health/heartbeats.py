"""Worker heartbeats in the broker's Redis: one hash per queue, worker name -> time of its last beat.

A beat is one HSET, so a dead worker simply stops beating; /healthz reads three small hashes per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import redis

from app.tls.redis import redis_client

logger = logging.getLogger(__name__)

KEY_PREFIX = "fedlens:heartbeats:"
FORGET_AFTER_S = 24 * 3600  # a worker silent this long is dropped from its queue's hash
#: What /healthz calls the workers of each queue.
PARTS = {"runs": "orchestrators", "train": "training_workers", "check": "check_workers"}


def key(queue: str) -> str:
    return KEY_PREFIX + queue


def client_for(broker: str, ca_file: Path | None) -> redis.Redis:
    """Short timeouts: a health check must answer quickly when the broker does not."""
    return redis_client(broker, ca_file, timeout_s=1)


def last_beats(client: redis.Redis, queues: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per queue, each worker's last beat (Unix time); raises redis.RedisError when the broker does not answer."""
    names = list(queues)
    with client.pipeline(transaction=False) as pipe:
        for queue in names:
            pipe.hgetall(key(queue))
        found = pipe.execute()
    return {q: {k.decode(): float(v) for k, v in beats.items()} for q, beats in zip(names, found, strict=True)}


class Heartbeat:
    """Beat for ``name`` on each of ``queues`` every ``period_s`` in a daemon thread; ``stop`` says goodbye, so a
    worker that shuts down cleanly is missing at once rather than after the health check's window."""

    def __init__(self, client: redis.Redis, name: str, queues: Iterable[str], period_s: float) -> None:
        self.client, self.name, self.queues, self.period_s = client, name, list(queues), period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{name}", daemon=True)

    def beat(self) -> None:
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for queue in self.queues:
                pipe.hset(key(queue), self.name, now)
            pipe.execute()

    def _loop(self) -> None:
        beats = 0
        while True:
            try:
                self.beat()
                if beats % 1000 == 0:
                    self._forget_silent()
                beats += 1
            except redis.RedisError as exc:  # the broker is restarting: the next beat retries
                logger.warning("heartbeat of %s failed: %s", self.name, exc)
            if self._stop.wait(self.period_s):
                return

    def _forget_silent(self) -> None:
        for queue, beats in last_beats(self.client, self.queues).items():
            silent = [name for name, at in beats.items() if at < time.time() - FORGET_AFTER_S]
            if silent:
                self.client.hdel(key(queue), *silent)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        try:
            for queue in self.queues:
                self.client.hdel(key(queue), self.name)
        except redis.RedisError as exc:
            logger.warning("could not withdraw the heartbeat of %s: %s", self.name, exc)
