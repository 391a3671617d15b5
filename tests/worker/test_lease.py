"""Task leases on the real Redis: a live task is never taken for dead, a dead one is noticed within its TTL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.services import redis_url
from worker.lease import Lease, expired, release

TTL_S = 0.3


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url("worker")) as r:
        yield r


def test_a_task_holding_its_lease_longer_than_the_ttl_is_not_expired(client: redis.Redis) -> None:
    task = str(uuid.uuid4())
    with Lease(client, task, "worker-a", TTL_S):
        time.sleep(4 * TTL_S)
        assert expired(client, [task]) == []


def test_a_lease_no_longer_renewed_expires_after_its_ttl(client: redis.Redis) -> None:
    task = str(uuid.uuid4())
    lease = Lease(client, task, "worker-a", TTL_S)
    with lease:
        pass
    assert expired(client, [task]) == [], "a lease outlives its task so a late result is not taken for a death"
    time.sleep(TTL_S + 0.1)
    assert expired(client, [task]) == [task]


def test_a_task_not_started_yet_is_never_expired(client: redis.Redis) -> None:
    queued, running = str(uuid.uuid4()), str(uuid.uuid4())
    with Lease(client, running, "worker-a", TTL_S):
        assert expired(client, [queued, running]) == []


def test_release_forgets_finished_tasks(client: redis.Redis) -> None:
    task = str(uuid.uuid4())
    with Lease(client, task, "worker-a", TTL_S):
        pass
    release(client, [task])
    time.sleep(TTL_S + 0.1)
    assert expired(client, [task]) == []
