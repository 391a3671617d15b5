"""Several runs at once: a short run finishes while a long one is still training, on real worker processes."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.conftest import tiny_config
from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow


def test_a_one_round_run_finishes_while_a_long_run_is_still_running(stack: Stack) -> None:
    stack.kill("runs", signal.SIGTERM)
    stack.start_worker("runs", name="orchestrators", concurrency=2)  # as `fedlens up` starts them, two processes
    long_id = stack.launch(tiny_config(rounds=200))["federated"]["id"]
    stack.wait_round(long_id, 1)

    short_id = stack.launch(tiny_config(rounds=1))["federated"]["id"]
    short = stack.wait_status(short_id, {"succeeded", "failed", "cancelled"}, timeout_s=300)

    long = stack.run(long_id)
    assert short["status"] == "succeeded", short["error"]
    assert long["status"] == "running" and long["current_round"] < 200
    stack.http.post(f"/api/runs/{long_id}/cancel")
    assert stack.wait_status(long_id, {"cancelled"})["current_round"] < 200
