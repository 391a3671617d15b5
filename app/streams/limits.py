"""A cap on the event streams one caller holds open: each holds a socket and a task of an API process.

The count lives in the broker's Redis, so the cap holds across all API processes behind the port
(``FEDLENS_API_WORKERS``): a sorted set per caller whose members are the open streams, each scored with the time its
lease ends. A process renews its own streams' leases every ``LEASE_S / 3``, so the streams of a killed process
leave the count within ``LEASE_S``. While Redis does not answer, each process counts its own streams.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import redis

from app.errors import DomainError
from app.settings import Settings
from app.tls.redis import redis_client

logger = logging.getLogger(__name__)

LEASE_S = 60.0
KEY_PREFIX = "fedlens:streams:"
REDIS_TIMEOUT_S = 1.0
#: drop expired leases, then add this stream's if fewer than the cap remain; returns 1 when added
ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class TooManyStreams(DomainError):
    status_code = 429


class StreamSlots:
    """Open streams counted per caller id (the signed-in user), across the API processes of one broker."""

    def __init__(self, limit: int, settings: Settings) -> None:
        self.limit = limit
        self._settings = settings
        self._mine: dict[str, str] = {}  # this process's open streams: slot id -> caller
        self._lock = threading.Lock()
        self._renewing = False
        self._releases = ThreadPoolExecutor(1, thread_name_prefix="stream-release")  # off the event loop

    def _redis(self) -> redis.Redis:
        return redis_client(self._settings.broker, self._settings.redis_ca_file, REDIS_TIMEOUT_S)

    def acquire(self, caller: str) -> Slot:
        """A slot for one more stream of ``caller``; TooManyStreams at the cap. Blocking: a Redis round trip."""
        slot_id = uuid.uuid4().hex
        now = time.time()
        try:
            added = self._redis().eval(
                ACQUIRE, 1, KEY_PREFIX + caller, now, self.limit, now + LEASE_S, slot_id, int(2 * LEASE_S)
            )
        except redis.RedisError as error:
            logger.warning("stream count unavailable, counting this process's streams only: %s", error)
            added = self.open(caller) < self.limit
        if not added:
            raise TooManyStreams(
                f"{self.limit} event streams are already open for you: close a dashboard tab or another stream, "
                "then retry"
            )
        with self._lock:
            self._mine[slot_id] = caller
            if not self._renewing:
                self._renewing = True
                threading.Thread(target=self._renew, name="stream-leases", daemon=True).start()
        return Slot(self, slot_id)

    def open(self, caller: str) -> int:
        """This process's open streams of ``caller``."""
        with self._lock:
            return sum(1 for who in self._mine.values() if who == caller)

    def _release(self, slot_id: str) -> None:
        with self._lock:
            caller = self._mine.pop(slot_id, None)
        if caller is not None:  # called on the event loop when a stream ends: Redis is asked from a thread
            self._releases.submit(self._forget, caller, slot_id)

    def _forget(self, caller: str, slot_id: str) -> None:
        try:
            self._redis().zrem(KEY_PREFIX + caller, slot_id)
        except redis.RedisError as error:  # its lease runs out instead
            logger.warning("could not release an event stream's slot: %s", error)

    def _renew(self) -> None:
        """Extend this process's leases every LEASE_S / 3 while it holds any; then stop."""
        while True:
            time.sleep(LEASE_S / 3)
            with self._lock:
                held: dict[str, list[str]] = defaultdict(list)
                for slot_id, caller in self._mine.items():
                    held[caller].append(slot_id)
                if not held:
                    self._renewing = False
                    return
            until = time.time() + LEASE_S
            try:
                with self._redis().pipeline(transaction=False) as pipe:
                    for caller, slot_ids in held.items():
                        pipe.zadd(KEY_PREFIX + caller, dict.fromkeys(slot_ids, until))
                        pipe.expire(KEY_PREFIX + caller, int(2 * LEASE_S))
                    pipe.execute()
            except redis.RedisError as error:
                logger.warning("could not renew event streams' slots: %s", error)


class Slot:
    """One open stream; ``release`` may be called more than once (the stream's end and its garbage collection)."""

    def __init__(self, slots: StreamSlots, slot_id: str) -> None:
        self._slots, self._slot_id, self._held = slots, slot_id, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._slot_id)
