"""The whole service with real processes: API, broker, orchestrator and training workers, database."""

from __future__ import annotations

import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import POSTGRES_REDIS_ONLY, tiny_config
from tests.e2e.stack import Stack, wait_for
from worker.engine.checkpoint import load_checkpoint
from worker.engine.digest import weights_sha256
from worker.engine.privacy.accounting import PrivacyAccountant

pytestmark = pytest.mark.slow


def round_numbers(stack: Stack, run_id: str) -> list[int]:
    return [r["number"] for r in stack.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]]


def test_launched_experiment_trains_streams_rounds_and_compares(stack: Stack) -> None:
    config = tiny_config(intermittent={"approach": "keep-last", "events": [{"client": 3, "leaves": 3}]})
    config["centralized"] = {"enabled": True, "epochs": 2}
    launched = stack.launch(config)
    run_id = launched["federated"]["id"]

    events = list(stack.events(run_id))

    rounds = [data for kind, data in events if kind == "round"]
    assert [r["number"] for r in rounds] == [1, 2, 3]
    assert events[-1] == ("end", {"status": "succeeded"})
    assert rounds[-1]["metrics"]["test.auc"] > 0.8
    assert [(c["id"], c["status"], c["event"]) for c in rounds[2]["clients"]] == [
        ("1", "trained", None),
        ("2", "trained", None),
        ("3", "kept", "left"),
    ]
    central_id = launched["centralized"]["id"]
    central = stack.wait_status(central_id, {"succeeded", "failed"})
    assert central["status"] == "succeeded", central["error"]
    table = stack.http.get("/api/compare", params={"runs": f"{run_id},{central_id}"}).json()
    assert [row["kind"] for row in table] == ["federated", "centralized"]
    assert table[0]["rounds"] == 3 and table[1]["rounds"] == 2
    assert table[0]["time_reduction"] is not None and table[0]["auc"] > 0.8
    model = stack.http.get(f"/api/runs/{run_id}/model")
    assert model.status_code == 200 and len(model.content) > 1_000_000


@POSTGRES_REDIS_ONLY
def test_orchestrator_killed_after_round_k_resumes_at_round_k_plus_1_from_the_stored_checkpoint(
    stack: Stack,
) -> None:
    """Storing a round twice is a no-op, so rounds [1..N] alone cannot tell a resume from a restart: count the
    client tasks that really trained each round, and follow the global weights from round to round."""
    run_id = stack.launch(tiny_config(rounds=6))["federated"]["id"]
    stack.wait_round(run_id, 2)

    stack.kill("runs", signal.SIGKILL)
    before = stack.stored_rounds(run_id)  # with no orchestrator alive, nothing more is stored
    k = max(before)
    checkpoint = load_checkpoint(Path(before[k].checkpoint))  # later rounds delete it
    stack.start_worker("runs", name="runs-2")
    done = stack.wait_status(run_id, {"succeeded", "failed"})

    assert done["status"] == "succeeded", done["error"]
    stored = stack.stored_rounds(run_id)
    assert sorted(stored) == [1, 2, 3, 4, 5, 6]
    assert weights_sha256(checkpoint.weights) == before[k].weights_sha256 == stored[k].weights_sha256
    updates = [t for t in stack.client_tasks(run_id) if t.kind == "update"]
    per_round = Counter(t.round for t in updates)
    # Round k+1 may also have been started by the killed orchestrator; every other round trained once per client.
    assert {r: n for r, n in per_round.items() if r != k + 1} == {r: 3 for r in range(1, 7) if r != k + 1}
    assert per_round[k + 1] >= 3
    resumed = {t.weights_sha256 for t in updates if t.round == k + 1}
    assert resumed == {before[k].weights_sha256}, "round k+1 must start from the checkpoint of round k"
    for task in updates:
        if task.round > 1:
            assert task.weights_sha256 == stored[task.round - 1].weights_sha256, task


@POSTGRES_REDIS_ONLY
def test_a_run_whose_orchestrator_died_recovers_with_no_api_running(stack: Stack) -> None:
    """Orchestrators run the stale-run watchdog too: recovery does not wait on an API process."""
    run_id = stack.launch(tiny_config(rounds=5))["federated"]["id"]
    stack.wait_round(run_id, 2)

    stack.kill("api", signal.SIGTERM)
    stack.kill("runs", signal.SIGKILL)
    stack.start_worker("runs", name="runs-2")
    status, rounds = wait_for(
        lambda: (state := stack.run_in_database(run_id))[0] in {"succeeded", "failed"} and state, 120, "the run"
    )

    assert (status, rounds) == ("succeeded", [1, 2, 3, 4, 5])


@POSTGRES_REDIS_ONLY
def test_api_restart_during_a_run_loses_nothing(stack: Stack) -> None:
    run_id = stack.launch(tiny_config(rounds=5))["federated"]["id"]
    stack.wait_round(run_id, 1)

    stack.kill("api", signal.SIGTERM)
    stack.start_api()
    done = stack.wait_status(run_id, {"succeeded", "failed"})

    assert done["status"] == "succeeded", done["error"]
    assert round_numbers(stack, run_id) == [1, 2, 3, 4, 5]
    replayed = [data["number"] for kind, data in stack.events(run_id) if kind == "round"]
    assert replayed == [1, 2, 3, 4, 5]


@POSTGRES_REDIS_ONLY
def test_cancel_stops_a_running_run_and_resume_finishes_it(stack: Stack) -> None:
    run_id = stack.launch(tiny_config(rounds=8))["federated"]["id"]
    stack.wait_round(run_id, 1)

    assert stack.http.post(f"/api/runs/{run_id}/cancel").status_code == 200
    cancelled = stack.wait_status(run_id, {"cancelled", "succeeded", "failed"}, timeout_s=60)

    assert cancelled["status"] == "cancelled"
    done_before = round_numbers(stack, run_id)
    assert done_before == list(range(1, len(done_before) + 1)) and len(done_before) < 8
    assert stack.http.post(f"/api/runs/{run_id}/cancel").status_code == 409
    assert stack.http.post(f"/api/runs/{run_id}/resume").status_code == 200
    done = stack.wait_status(run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert round_numbers(stack, run_id) == list(range(1, 9))


@POSTGRES_REDIS_ONLY
def test_final_gallery_is_written_and_any_round_is_explained_on_request(stack: Stack) -> None:
    run_id = stack.launch(tiny_config(rounds=4))["federated"]["id"]
    done = stack.wait_status(run_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]

    def gallery(**params: int) -> dict[str, Any] | None:
        body: dict[str, Any] = stack.http.get(f"/api/runs/{run_id}/gradcam", params=params).json()
        return body if body["status"] in {"ready", "failed"} else None

    final = wait_for(gallery, 60, "the final model's gallery")
    stack.start_worker("check")
    requested = stack.http.post(f"/api/runs/{run_id}/gradcam", params={"round": 1})  # its checkpoint is dropped
    first = wait_for(lambda: gallery(round=1), 120, "the gallery of round 1")

    assert (final["status"], final["round"], final["error"]) == ("ready", 4, None)
    assert {item["category"] for item in final["items"]} >= {"TP", "TN"}
    png = stack.http.get(f"/api/runs/{run_id}/gradcam/{final['items'][0]['file']}")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert requested.status_code == 202
    assert (first["status"], first["round"], first["rounds"]) == ("ready", 1, [1, 4]), first["error"]


@POSTGRES_REDIS_ONLY
def test_a_private_run_trains_through_celery_and_stops_at_its_epsilon_target(stack: Stack) -> None:
    """DP-SGD in the training workers, the secure sum in the orchestrator, and the budget's stop as a note."""
    smallest = PrivacyAccountant(1.0, 32 / 65, 3)  # the smallest client (65 examples) has the largest epsilon
    config = tiny_config(rounds=4)
    config["model"] |= {"batch_size": 32}
    target = smallest.epsilon(2) * 1.001
    config["privacy"] = {
        "secure_aggregation": {"threshold": 2},
        "dp": {"level": "sample", "noise_multiplier": 1.0, "target_epsilon": target},
    }
    run_id = stack.launch(config)["federated"]["id"]
    run = stack.wait_status(run_id, {"succeeded", "failed"})
    assert run["status"] == "succeeded", run["error"]
    rounds = stack.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    assert len(rounds) == 2 and run["note"].startswith("stopped before round 3: it would take site")
    assert min(c["samples"] for c in rounds[0]["clients"]) == 65
    for r in rounds:
        for c in r["clients"]:
            accountant = PrivacyAccountant(1.0, 32 / c["samples"], -(-c["samples"] // 32))
            assert r["privacy"]["sites"][c["id"]] == pytest.approx(accountant.epsilon(r["number"]))
    assert rounds[-1]["privacy"]["epsilon"] <= target
