"""fedlens up's supervisor restarts a dead child with exponential back-off, logs it, and stops every child."""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time

import pytest

from app.health.supervisor import Child, Supervisor


def command(*args: str) -> Child:
    return Child(args[0], lambda: subprocess.Popen(list(args)))


def run_until(supervisor: Supervisor, done: threading.Event, timeout_s: float = 10) -> None:
    """Check the children until ``done`` is set from outside, then stop them."""
    deadline = time.monotonic() + timeout_s
    try:
        while not done.is_set() and time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.01)
    finally:
        supervisor.stop()


def test_a_killed_child_is_started_again_and_the_restart_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    child = command("sleep", "30")
    supervisor = Supervisor([child], first_backoff_s=0.05)
    supervisor.start()
    assert child.process is not None
    first = child.process
    try:
        first.send_signal(signal.SIGKILL)
        first.wait()
        with caplog.at_level(logging.WARNING):
            deadline = time.monotonic() + 5
            while child.process is first and time.monotonic() < deadline:
                supervisor.check()
                time.sleep(0.01)
        assert child.process is not first and child.process.poll() is None
        assert child.restarts == 1
        assert "sleep exited (code -9); restart 1 in 0.05 s" in caplog.text
    finally:
        supervisor.stop()
    assert child.process.poll() is not None, "stop() ends the child"


def test_a_child_that_keeps_dying_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    child = command("false")
    supervisor = Supervisor([child], first_backoff_s=0.02, max_backoff_s=0.1, stable_after_s=60)
    supervisor.start()
    done = threading.Event()
    threading.Timer(1.0, done.set).start()

    run_until(supervisor, done)

    assert child.history[:5] == [0.02, 0.04, 0.08, 0.1, 0.1]


def test_a_child_that_stayed_up_long_enough_is_restarted_after_the_first_delay_again() -> None:
    child = command("false")
    supervisor = Supervisor([child], first_backoff_s=0.02, max_backoff_s=0.1, stable_after_s=0)
    supervisor.start()
    done = threading.Event()
    threading.Timer(0.5, done.set).start()

    run_until(supervisor, done)

    assert len(child.history) >= 3 and set(child.history) == {0.02}


def test_a_child_that_cannot_start_is_tried_again_later() -> None:
    attempts: list[float] = []

    def start() -> subprocess.Popen[bytes]:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("redis-server did not open its socket")
        return subprocess.Popen(["sleep", "30"])

    child = Child("redis", start)
    supervisor = Supervisor([child], first_backoff_s=0.02)
    supervisor.start()
    done = threading.Event()
    threading.Timer(0.5, done.set).start()

    run_until(supervisor, done)

    assert len(attempts) == 3 and child.history == [0.02, 0.04]


def test_stop_ends_the_children_last_started_first() -> None:
    ended: list[str] = []

    class Recorded(subprocess.Popen[bytes]):
        def terminate(self) -> None:
            ended.append(str(self.args[1]))
            super().terminate()

    children = [Child(name, lambda n=name: Recorded(["sleep", n])) for name in ("31", "32", "33")]
    supervisor = Supervisor(children)
    supervisor.start()

    supervisor.stop()

    assert ended == ["33", "32", "31"]
