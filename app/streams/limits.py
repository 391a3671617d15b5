"""A cap on the event streams one caller holds open: each holds a socket and a task of the API process."""

from __future__ import annotations

import threading
from collections import Counter

from app.errors import DomainError


class TooManyStreams(DomainError):
    status_code = 429


class StreamSlots:
    """Open streams counted per caller id (the signed-in user once authentication keys it, else the address)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> Slot:
        with self._lock:
            if self._open[caller] >= self.limit:
                raise TooManyStreams(
                    f"{self.limit} event streams are already open for you: close a dashboard tab or another "
                    "stream, then retry"
                )
            self._open[caller] += 1
        return Slot(self, caller)

    def open(self, caller: str) -> int:
        with self._lock:
            return self._open[caller]

    def _release(self, caller: str) -> None:
        with self._lock:
            self._open[caller] -= 1
            if self._open[caller] <= 0:
                del self._open[caller]


class Slot:
    """One open stream; ``release`` may be called more than once (the stream's end and its garbage collection)."""

    def __init__(self, slots: StreamSlots, caller: str) -> None:
        self._slots, self._caller, self._held = slots, caller, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots._release(self._caller)
