"""Task leases on the real Redis: a live task is never taken for dead, a dead one is noticed within its TTL.

The TTL is seconds long, not a fraction of one, so that a loaded machine that runs the renewal thread late
(it renews every third of the TTL) still renews in time; waits poll for a state with a generous deadline.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.e2e.stack import wait_for
from tests.services import redis_url
from worker.lease import Lease, expired, lease_key, release

TTL_S = 2.0
DEADLINE_S = 30.0


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url("worker")) as r:
        yield r


def test_a_task_holding_its_lease_longer_than_the_ttl_is_not_expired(client: redis.Redis) -> None:
    task = str(uuid.uuid4())
    began = time.monotonic()
    with Lease(client, task, "worker-a", TTL_S):
        checks = 0
        while time.monotonic() - began < 2 * TTL_S:  # two TTLs: without renewals the lease would be gone
            assert expired(client, [task]) == [], f"taken for dead after {time.monotonic() - began:.1f} s"
            checks += 1
            time.sleep(0.05)
    assert checks > 10


def test_a_lease_no_longer_renewed_expires_after_its_ttl(client: redis.Redis) -> None:
    task = str(uuid.uuid4())
    began = time.monotonic()
    with Lease(client, task, "worker-a", TTL_S):
        pass
    assert expired(client, [task]) == [], "a lease outlives its task so a late result is not taken for a death"

    wait_for(lambda: expired(client, [task]) == [task], DEADLINE_S, "the lease to lapse", interval_s=0.05)

    assert time.monotonic() - began >= TTL_S, "expired before its TTL"


def test_a_task_not_started_yet_is_never_expired(client: redis.Redis) -> None:
    queued, running = str(uuid.uuid4()), str(uuid.uuid4())
    with Lease(client, running, "worker-a", TTL_S):
        assert expired(client, [queued, running]) == []


def test_release_forgets_finished_tasks(client: redis.Redis) -> None:
    task = str(uuid.uuid4())
    with Lease(client, task, "worker-a", TTL_S):
        pass
    release(client, [task])

    wait_for(lambda: not client.exists(lease_key(task)), DEADLINE_S, "the lease to lapse", interval_s=0.05)

    assert expired(client, [task]) == []
