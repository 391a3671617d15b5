"""Leases of running client tasks in Redis: how an orchestrator tells a dead training worker from a slow one.

A training task holds a lease (a Redis key with a time to live) and renews it while it works. If the lease
expires before the task's result is stored, the worker died: the orchestrator sends the client's task again
at once instead of waiting for the broker to redeliver it (``FEDLENS_REDELIVERY_AFTER_S``, ten minutes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

PREFIX = "fedlens:lease:"
STARTED_PREFIX = "fedlens:started:"
STARTED_TTL_S = 7 * 24 * 3600  # outlives any round; the orchestrator deletes it once the round is done


def lease_key(task_id: str) -> str:
    return PREFIX + task_id


def started_key(task_id: str) -> str:
    return STARTED_PREFIX + task_id


class Lease:
    """Held by a task while it runs; renewed every third of its time to live.

    The key is left to expire rather than deleted on exit: the task's result is stored only after the task
    returns, and a deleted lease with no result yet would look like a dead worker.
    """

    def __init__(self, redis: Any, task_id: str, holder: str, ttl_s: float) -> None:
        self.redis, self.key, self.holder = redis, lease_key(task_id), holder
        self.started = started_key(task_id)
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{task_id}", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                self.redis.set(self.key, self.holder, px=self.ttl_ms)
            except Exception:  # a broker hiccup: the next renewal retries; a lapse costs a duplicate task
                logger.exception("renewing %s failed", self.key)

    def __enter__(self) -> Lease:
        with self.redis.pipeline() as pipe:  # one transaction: no moment with a start mark but no lease
            pipe.set(self.started, self.holder, ex=STARTED_TTL_S)
            pipe.set(self.key, self.holder, px=self.ttl_ms)
            pipe.execute()
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def expired(redis: Any, task_ids: Iterable[str]) -> list[str]:
    """Tasks that started and whose lease is gone: their worker died. A task not started yet is never listed."""
    ids = list(task_ids)
    if not ids:
        return []
    values = redis.mget([key for i in ids for key in (started_key(i), lease_key(i))])
    return [i for k, i in enumerate(ids) if values[2 * k] is not None and values[2 * k + 1] is None]


def release(redis: Any, task_ids: Iterable[str]) -> None:
    """Drop the start marks of tasks whose round is over."""
    keys = [started_key(i) for i in task_ids]
    if keys:
        redis.delete(*keys)
