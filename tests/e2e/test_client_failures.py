"""Clients that fail on the real service: training workers that die, clients that do not answer in time."""

from __future__ import annotations

import signal
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.conftest import POSTGRES_REDIS_ONLY, tiny_config
from tests.e2e.stack import ClientTask, Stack, wait_for

pytestmark = pytest.mark.slow


@POSTGRES_REDIS_ONLY
def test_training_worker_killed_mid_task_is_replaced_and_its_client_trains(stack: Stack) -> None:
    """The dead worker's task is sent again once its lease lapses, not after the broker's ten-minute redelivery."""
    run_id = stack.launch(tiny_config(rounds=4))["federated"]["id"]
    stack.wait_round(run_id, 1)

    killed = stack.kill_during_task("train", run_id, lambda task: task.kind == "update")
    stack.start_worker("train", name="train-2")
    done = stack.wait_status(run_id, {"succeeded", "failed"}, timeout_s=120)

    assert done["status"] == "succeeded", done["error"]
    rounds = stack.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    assert [r["number"] for r in rounds] == [1, 2, 3, 4]
    assert all(c["status"] == "trained" for r in rounds for c in r["clients"])
    again = [
        t
        for t in stack.client_tasks(run_id, "train-2")
        if (t.round, t.client, t.kind) == (killed.round, killed.client, "update")
    ]
    assert len(again) == 1 and again[0].task_id != killed.task_id, "the killed client's task is sent again"
    assert "died; sent its task again" in (stack.folder / "runs.log").read_text()


def updates_of(stack: Stack, run_id: str, rnd: int, client: str) -> list[ClientTask]:
    return [t for t in stack.client_tasks(run_id) if (t.round, t.client, t.kind) == (rnd, client, "update")]


@POSTGRES_REDIS_ONLY
def test_a_client_whose_worker_dies_three_times_fails_its_round_and_the_run_goes_on(stack: Stack) -> None:
    run_id = stack.launch(tiny_config(rounds=3))["federated"]["id"]

    killed: list[ClientTask] = []
    worker = "train"
    for death in (1, 2, 3):  # each replacement takes client 1's task of round 2 again, and dies with it
        killed.append(
            stack.kill_during_task(worker, run_id, lambda t: (t.round, t.client, t.kind) == (2, "1", "update"))
        )
        worker = f"train-{death + 1}"
        stack.start_worker("train", name=worker)
    done = stack.wait_status(run_id, {"succeeded", "failed"}, timeout_s=180)

    assert done["status"] == "succeeded", done["error"]
    rounds = stack.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    statuses = {r["number"]: {c["id"]: c["status"] for c in r["clients"]} for r in rounds}
    trained = {"1": "trained", "2": "trained", "3": "trained"}
    assert statuses == {1: trained, 2: trained | {"1": "failed"}, 3: trained}
    failed = next(c for c in rounds[1]["clients"] if c["id"] == "1")
    assert "died 3 times" in failed["error"]
    attempts = {t.task_id for t in updates_of(stack, run_id, 2, "1")}
    assert attempts == {t.task_id for t in killed} and len(attempts) == 3, "no fourth attempt after the third death"
    assert len(updates_of(stack, run_id, 3, "1")) == 1


def seconds_between(earlier: str, later: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


@POSTGRES_REDIS_ONLY
def test_the_client_timeout_bounds_each_round_and_fails_the_run_whose_clients_stop_answering(stack: Stack) -> None:
    timeout_s = 20  # above a first round's cold start of the training worker on a loaded 2-core machine (10 s was not)
    stack.kill("runs", signal.SIGTERM)
    stack.start_worker("runs", name="runs-2", env={"FEDLENS_CLIENT_TIMEOUT_S": str(timeout_s)})
    run_id = stack.launch(tiny_config(rounds=40))["federated"]["id"]

    def rounds() -> list[dict[str, Any]]:
        return list(stack.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"])

    def past_one_timeout() -> bool:
        """Rounds went on well past one timeout after round 1 (2 s spare for the server's own work in a
        round): the deadline is per round, not per run."""
        assert (run := stack.run(run_id))["status"] == "running", run["error"]
        stored = rounds()
        return seconds_between(stored[0]["finished_at"], stored[-1]["finished_at"]) > timeout_s + 2

    stack.wait_round(run_id, 1)
    wait_for(past_one_timeout, 120, "rounds to go on for longer than the client timeout")
    stack.kill("train", signal.SIGTERM)  # it finishes the task in hand; then nobody listens on the train queue
    done = stack.wait_status(run_id, {"succeeded", "failed"}, timeout_s=120)

    assert done["status"] == "failed"
    stored = rounds()
    assert 2 <= len(stored) < 40
    assert done["error"] == (
        f"ClientTimeout: round {len(stored) + 1}: clients did not answer within {timeout_s} s; "
        "is a worker listening on the 'train' queue?"
    )
    assert seconds_between(stored[-1]["finished_at"], done["finished_at"]) >= timeout_s, "given up before the timeout"
