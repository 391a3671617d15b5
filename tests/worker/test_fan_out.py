"""A round's fan-out while the broker restarts: the tasks are queued once it answers again, within the round's wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kombu.exceptions import OperationalError

from worker import celery_executor
from worker.celery_executor import FanOut


class Signature:
    def __init__(self, broker: Broker, args: list[Any]) -> None:
        self.broker, self.args = broker, args

    def apply_async(self) -> str:
        if self.broker.refusals:
            self.broker.refusals -= 1
            raise OperationalError("Error 111 connecting to redis.sock. Connection refused.")
        self.broker.queued.append(self.args)
        return f"task-{len(self.broker.queued)}"


class Broker:
    """Celery's face of a broker that refuses ``refusals`` sends, as a restarting Redis does."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.queued: list[list[Any]] = []
        self.backend = type("Backend", (), {"client": None})()

    def signature(self, task: str, *, args: list[Any], queue: str) -> Signature:
        return Signature(self, args)


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(celery_executor, "BROKER_RETRY_S", 0.0)


def test_a_fan_out_during_a_broker_restart_queues_each_task_once_it_answers() -> None:
    broker = Broker(refusals=2)

    fan_out = FanOut(broker, "train", ["run", 1], Path("g.npz"), "0" * 64, ["1", "2"], broker_wait_s=60)  # type: ignore[arg-type]

    assert [args[2] for args in broker.queued] == ["1", "2"], "each client's task queued exactly once"
    assert fan_out.sends == {"1": 1, "2": 1}


def test_a_broker_down_longer_than_the_wait_fails_the_round() -> None:
    with pytest.raises(OperationalError):
        FanOut(Broker(refusals=10**9), "train", ["run", 1], Path("g.npz"), "0" * 64, ["1"], broker_wait_s=0.01)  # type: ignore[arg-type]
