"""A small least-recently-used cache of bytes that computes each key once, however many requests miss it at once.

Fifty dashboards that poll in the same instant after a round is stored would otherwise each serialize (or gzip) the
same 250 kB: the first computes, the others wait for it and share the result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class SingleFlightLRU:
    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}

    def get(self, key: Hashable, compute: Callable[[], bytes]) -> bytes:
        """The value of ``key``, from ``compute()`` on a miss; concurrent misses of one key compute it once."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            flight = self._computing.setdefault(key, threading.Lock())
        with flight:
            with self._lock:
                if key in self._entries:  # computed by the caller this one waited for
                    return self._entries[key]
            value = compute()
            with self._lock:
                self._entries[key] = value
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
                self._computing.pop(key, None)
            return value
