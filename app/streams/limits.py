"""A cap on the event streams one caller holds open: each holds a socket and a task of an API process.

The count lives in the broker's Redis, so the cap holds across all API processes behind the port
(``FEDLENS_API_WORKERS``): a sorted set per caller whose members are the open streams, each scored with the time its
lease ends (Redis's clock, so processes on other hosts agree). A process renews its own streams' leases every
``LEASE_S / 3``, so the streams of a killed process leave the count within ``LEASE_S``. While Redis does not answer,
each process counts its own streams.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

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
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1e6
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(2 * tonumber(ARGV[2])))
return 1
"""
#: extend the leases of the streams named in ARGV[2..] by ARGV[1] seconds
RENEW = """
local now = redis.call('TIME')
local ends = tonumber(now[1]) + tonumber(now[2]) / 1e6 + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], ends, ARGV[i]) end
redis.call('EXPIRE', KEYS[1], math.ceil(2 * tonumber(ARGV[1])))
return 1
"""


class TooManyStreams(DomainError):
    status_code = 429


class StreamSlots:
    """Open streams counted per caller id (the signed-in user), across the API processes of one broker.

    Releases and renewals go to Redis from one thread, in order: a renewal can never bring back a stream released
    before it, and the event loop never waits for Redis."""

    def __init__(self, limit: int, settings: Settings) -> None:
        self.limit = limit
        self._settings = settings
        self._mine: dict[str, str] = {}  # this process's open streams: slot id -> caller
        self._lock = threading.Lock()
        self._renewing = False
        self._renewals_failing = False
        self._writes = ThreadPoolExecutor(1, thread_name_prefix="stream-slots")

    def _redis(self) -> redis.Redis:
        return redis_client(self._settings.broker, self._settings.redis_ca_file, REDIS_TIMEOUT_S)

    def acquire(self, caller: str) -> Slot:
        """A slot for one more stream of ``caller``; TooManyStreams at the cap. Blocking: a Redis round trip."""
        slot_id = uuid.uuid4().hex
        try:
            added = self._redis().register_script(ACQUIRE)(
                keys=[KEY_PREFIX + caller], args=[self.limit, LEASE_S, slot_id]
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
                renewer = threading.Thread(target=_renew_while_held, args=(weakref.ref(self),), daemon=True)
                renewer.start()
        return Slot(self, slot_id)

    def open(self, caller: str) -> int:
        """This process's open streams of ``caller``."""
        with self._lock:
            return sum(1 for who in self._mine.values() if who == caller)

    def _release(self, slot_id: str) -> None:
        with self._lock:
            caller = self._mine.pop(slot_id, None)
        if caller is None:
            return
        with suppress(RuntimeError):  # raised while the interpreter exits: the lease runs out instead
            self._writes.submit(self._forget, caller, slot_id)

    def _forget(self, caller: str, slot_id: str) -> None:
        try:
            self._redis().zrem(KEY_PREFIX + caller, slot_id)
        except redis.RedisError as error:  # its lease runs out instead
            logger.warning("could not release an event stream's slot: %s", error)

    def _renew(self) -> bool:
        """Extend the leases of the streams open now; False, and no longer renewing, when there are none."""
        with self._lock:
            held: dict[str, list[str]] = defaultdict(list)
            for slot_id, caller in self._mine.items():
                held[caller].append(slot_id)
            if not held:  # under the lock: a stream acquired from now on starts a renewer of its own
                self._renewing = False
        self._extend(held)
        return bool(held)

    def _extend(self, held: dict[str, list[str]]) -> None:
        try:
            renew = self._redis().register_script(RENEW)
            for caller, slot_ids in held.items():
                renew(keys=[KEY_PREFIX + caller], args=[LEASE_S, *slot_ids])
        except redis.RedisError as error:
            if not self._renewals_failing:  # one line per outage
                logger.warning("could not renew event streams' slots: %s", error)
            self._renewals_failing = True
        else:
            self._renewals_failing = False


def _renew_while_held(slots_ref: weakref.ref[StreamSlots]) -> None:
    """Every LEASE_S / 3, have the writer thread renew the process's leases; stop once it holds none, or once its
    StreamSlots is gone with its app. Holds no reference in between, so an app that was dropped can be collected."""
    while True:
        time.sleep(LEASE_S / 3)
        slots = slots_ref()
        if slots is None:
            return
        try:
            if not slots._writes.submit(slots._renew).result():
                return
        except BaseException:
            with slots._lock:
                slots._renewing = False
            raise
        del slots


class Slot:
    """One open stream; ``release`` may be called more than once (the stream's end and its garbage collection)."""

    def __init__(self, slots: StreamSlots, slot_id: str) -> None:
        self._slots, self._slot_id, self._held = slots, slot_id, True

    def release(self) -> None:
        if self._held:
            self._slots._release(self._slot_id)
            self._held = False
