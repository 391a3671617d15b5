"""The per-caller cap on event streams, counted in Redis across API processes (one StreamSlots each)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from app.settings import Settings
from app.streams import limits
from app.streams.limits import StreamSlots, TooManyStreams


def test_two_processes_share_one_cap_and_a_released_stream_frees_its_place(
    settings: Settings, broker: redis.Redis
) -> None:
    first, second = StreamSlots(2, settings), StreamSlots(2, settings)
    caller = str(uuid.uuid4())
    held = [first.acquire(caller), second.acquire(caller)]

    with pytest.raises(TooManyStreams, match="2 event streams are already open"):
        first.acquire(caller)
    other = second.acquire(str(uuid.uuid4()))  # another caller has a cap of its own
    held.pop().release()
    deadline = time.monotonic() + 5
    while True:  # the release reaches Redis from a background thread
        try:
            held.append(first.acquire(caller))
            break
        except TooManyStreams:
            assert time.monotonic() < deadline, "the released stream was never forgotten"
            time.sleep(0.05)

    assert (first.open(caller), second.open(caller)) == (2, 0)
    other.release()


def test_the_streams_of_a_killed_process_leave_the_count_when_their_lease_ends(
    settings: Settings, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "LEASE_S", 1.5)
    caller, watcher = str(uuid.uuid4()), str(uuid.uuid4())
    killed, alive = StreamSlots(1, settings), StreamSlots(1, settings)
    killed.acquire(caller)
    killed._mine.clear()  # its process is gone: nobody renews or releases the lease
    alive.acquire(watcher)

    with pytest.raises(TooManyStreams):
        alive.acquire(caller)
    time.sleep(2.0)  # past the lease; the live process renewed its own stream meanwhile (every 0.5 s)
    alive.acquire(caller)

    assert broker.zcard(limits.KEY_PREFIX + caller) == 1
    ((_, lease_ends),) = broker.zrange(limits.KEY_PREFIX + watcher, 0, -1, withscores=True)
    assert lease_ends > time.time()  # renewed: still counted


def test_a_stream_released_while_its_lease_is_renewed_stays_released(
    settings: Settings, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    slots, caller = StreamSlots(1, settings), str(uuid.uuid4())
    slot = slots.acquire(caller)
    extend = StreamSlots._extend

    def slow_extend(self: StreamSlots, held: dict[str, list[str]]) -> None:
        slot.release()  # the stream ends after the renewal has listed it, before its lease is extended
        time.sleep(0.2)
        extend(self, held)

    monkeypatch.setattr(StreamSlots, "_extend", slow_extend)
    slots._writes.submit(slots._renew).result()
    slots._writes.submit(lambda: None).result()  # the release's turn on the writer thread

    assert broker.zcard(limits.KEY_PREFIX + caller) == 0
    slots.acquire(caller)  # not refused by a lease the renewal brought back


def test_without_redis_each_process_counts_its_own_streams(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"broker_url": "redis://127.0.0.1:9/0"})
    slots, caller = StreamSlots(2, unreachable), "someone"
    slots.acquire(caller)
    slots.acquire(caller)

    with pytest.raises(TooManyStreams):
        slots.acquire(caller)
