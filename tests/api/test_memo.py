"""The single-flight cache behind the rounds endpoint: a burst of misses computes once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from app.memo import SingleFlightLRU


def test_concurrent_misses_of_one_key_compute_it_once_and_share_the_value() -> None:
    cache = SingleFlightLRU()
    calls: list[int] = []
    lock = threading.Lock()

    def slow() -> bytes:
        with lock:
            calls.append(1)
        time.sleep(0.2)
        return b"rounds"

    with ThreadPoolExecutor(20) as pool:
        values = list(pool.map(lambda _: cache.get("run-1", slow), range(20)))

    assert values == [b"rounds"] * 20 and len(calls) == 1


def test_the_least_recently_used_key_goes_first() -> None:
    cache = SingleFlightLRU(size=2)
    cache.get("a", lambda: b"1")
    cache.get("b", lambda: b"2")
    cache.get("a", lambda: b"unused")  # a is now the most recent
    cache.get("c", lambda: b"3")

    assert cache.get("a", lambda: b"again") == b"1"
    assert cache.get("b", lambda: b"recomputed") == b"recomputed"
