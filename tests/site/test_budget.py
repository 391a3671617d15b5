"""The site's privacy budget: its ledger file, the epsilon it computes, and the tasks it refuses (no TensorFlow)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.sites.protocol import DpSettings, SiteTask, TaskResult, TaskSettings
from worker.engine.checkpoint import Checkpoint, save_checkpoint
from worker.engine.privacy.accounting import PrivacyAccountant
from worker.engine.types import Weights
from worker.site.agent import Agent, failure_text
from worker.site.budget import LEDGER_FILE, DatasetBudget, PrivacyLedger, RunSpend, SiteBudget
from worker.site.connection import SiteClient
from worker.site.datasets import SiteData, TaskRefused, site_config
from worker.site.identity import ServerAddress, SiteError, SiteIdentity
from worker.site.runner import TaskRunner

SAMPLE = DpSettings(level="sample", noise_multiplier=1.1, clip_norm=1.0, delta=1e-5)
CLIENT = DpSettings(level="client", noise_multiplier=0.8, clip_norm=1.0, delta=1e-5)
RUN_A, RUN_B = uuid.uuid4(), uuid.uuid4()


def _task(kind: str = "train", dp: DpSettings | None = SAMPLE, *, run: uuid.UUID = RUN_A, rnd: int = 1) -> SiteTask:
    settings = TaskSettings(image_size=28, model={"batch_size": 16}, local_epochs=2, seed=3, dp=dp)
    return SiteTask(
        id=uuid.uuid4(),
        run_id=run,
        round=rnd,
        client_id="1",
        kind=kind,  # type: ignore[arg-type]
        dataset="ward-a",
        weights_sha256="0" * 64,
        settings=settings,
        deadline=datetime.now(UTC) + timedelta(minutes=10),
    )


def _budget(folder: Path, max_epsilon: float | None, delta: float | None = None) -> SiteBudget:
    return SiteBudget(folder, {"ward-a": DatasetBudget(max_epsilon, delta, train_examples=100)})


def _sample_epsilon(rounds: int, delta: float = 1e-5) -> float:
    """q = 16 / 100, 2 epochs of ceil(100 / 16) = 7 steps: 14 DP-SGD steps a round."""
    return PrivacyAccountant(1.1, 0.16, 14).epsilon(rounds, delta)


def test_the_ledger_file_round_trips_and_is_replaced_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = PrivacyLedger(tmp_path / LEDGER_FILE)
    ledger.record("ward-a", "run-1", RunSpend((1, 2), 0.75, 1e-5))
    ledger.record("ward-b", "run-2", RunSpend((4,), 0.5, 1e-6))

    again = PrivacyLedger(tmp_path / LEDGER_FILE)

    assert again.spends == {
        "ward-a": {"run-1": RunSpend((1, 2), 0.75, 1e-5)},
        "ward-b": {"run-2": RunSpend((4,), 0.5, 1e-6)},
    }
    assert [p.name for p in tmp_path.iterdir()] == [LEDGER_FILE]
    before = (tmp_path / LEDGER_FILE).read_text()

    def crash(source: object, target: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        again.record("ward-a", "run-3", RunSpend((1,), 9.0, 1e-5))
    assert (tmp_path / LEDGER_FILE).read_text() == before  # the old ledger, whole


def test_an_unreadable_ledger_stops_the_site_rather_than_forgetting_what_was_spent(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text("{not json")

    with pytest.raises(SiteError, match="restore it from a backup"):
        PrivacyLedger(tmp_path / LEDGER_FILE)


@pytest.mark.parametrize(
    ("dp", "site_delta", "expected"),
    [
        (SAMPLE, None, lambda: _sample_epsilon(2)),
        (SAMPLE, 1e-7, lambda: _sample_epsilon(2, 1e-7)),  # the site's own delta wins over the run's
        (CLIENT, None, lambda: PrivacyAccountant.client_level(0.8).epsilon(2, 1e-5)),
    ],
)
def test_the_recorded_epsilon_is_the_accountants(
    tmp_path: Path, dp: DpSettings, site_delta: float | None, expected: Callable[[], float]
) -> None:
    budget = _budget(tmp_path, None, site_delta)

    budget.record(_task(dp=dp, rnd=1))
    budget.record(_task(dp=dp, rnd=2))

    spend = PrivacyLedger(tmp_path / LEDGER_FILE).run("ward-a", str(RUN_A))
    assert spend is not None and spend.rounds == (1, 2)
    assert spend.epsilon == pytest.approx(expected(), rel=1e-12)
    assert spend.delta == (site_delta or 1e-5)


def test_training_is_refused_exactly_when_the_next_round_passes_the_budget_over_two_runs(tmp_path: Path) -> None:
    budget = _budget(tmp_path, None)
    for rnd in (1, 2):
        budget.record(_task(run=RUN_A, rnd=rnd))
    for rnd in (1, 2, 3):
        budget.record(_task(run=RUN_B, rnd=rnd))
    budget = _budget(tmp_path, _sample_epsilon(2) + _sample_epsilon(4))  # run A's spend plus 4 rounds of run B

    budget.check(_task(run=RUN_B, rnd=4))  # reaches the budget exactly: allowed
    budget.record(_task(run=RUN_B, rnd=4))
    with pytest.raises(TaskRefused, match="would spend epsilon"):
        budget.check(_task(run=RUN_B, rnd=5))
    with pytest.raises(TaskRefused):
        budget.check(_task(run=RUN_A, rnd=3))  # run A's third round would also pass it
    with pytest.raises(TaskRefused):
        budget.check(_task(run=RUN_B, rnd=4))  # a retry of a recorded round is a second release


def test_a_retried_round_is_counted_again(tmp_path: Path) -> None:
    """DP-SGD's noise is drawn fresh and secret on every try, so each retry releases a new noisy update."""
    budget = _budget(tmp_path, None)

    for rnd in (1, 2, 2):
        budget.record(_task(rnd=rnd))

    spend = PrivacyLedger(tmp_path / LEDGER_FILE).run("ward-a", str(RUN_A))
    assert spend is not None and spend.rounds == (1, 2, 2) and spend.epsilon == _sample_epsilon(3)


def test_under_a_budget_training_without_dp_and_statistics_are_refused_but_evaluation_is_allowed(
    tmp_path: Path,
) -> None:
    budget = _budget(tmp_path, 8.0)

    with pytest.raises(TaskRefused, match="without differential privacy, whose epsilon is unbounded"):
        budget.check(_task("train", dp=None))
    with pytest.raises(TaskRefused, match="BatchNorm moments without noise"):
        budget.check(_task("statistics", dp=None))
    budget.check(_task("evaluate", dp=None))
    budget.check(_task("train", dp=SAMPLE))
    _budget(tmp_path, None).check(_task("train", dp=None))  # no budget set: the site trains as before
    budget.record(_task("train", dp=None))
    budget.record(_task("evaluate", dp=SAMPLE))
    assert not (tmp_path / LEDGER_FILE).exists()  # only DP training rounds are recorded


def test_under_a_budget_a_local_baseline_is_refused_and_without_one_it_runs_and_spends_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(TaskRefused, match="a local baseline trains without differential privacy"):
        _budget(tmp_path, 8.0).check(_task("local", dp=None, rnd=0))
    budget = _budget(tmp_path, None)
    budget.check(_task("local", dp=None, rnd=0))
    budget.record(_task("local", dp=None, rnd=0))
    assert not (tmp_path / LEDGER_FILE).exists()


def test_the_refusal_names_the_dataset_and_the_numbers_but_no_path(tmp_path: Path) -> None:
    budget = _budget(tmp_path, None)
    budget.record(_task(run=RUN_A, rnd=1))
    budget = _budget(tmp_path, 1.0)

    with pytest.raises(TaskRefused) as refused:
        budget.check(_task(run=RUN_B, rnd=1))

    spent, this = _sample_epsilon(1), _sample_epsilon(1)
    assert str(refused.value) == (
        f"dataset 'ward-a' would spend epsilon {spent + this:.2f} of its 1 budget ({spent:.2f} by other runs, "
        f"{this:.2f} by this run in 1 round): this site refuses more training for this run"
    )
    assert failure_text(refused.value) == str(refused.value) and str(tmp_path) not in str(refused.value)


class _FakeRunner:
    """Trains nothing: the agent's hooks around it are what is tested."""

    def __init__(self) -> None:
        self.ran: list[int] = []

    def run(self, task: SiteTask, weights: Weights) -> tuple[Weights | None, TaskResult]:
        self.ran.append(task.round)
        return None, TaskResult(num_examples=70)


class _FakeClient:
    def __init__(self, weights: bytes) -> None:
        self.blob = weights
        self.results: dict[str, TaskResult] = {}

    def weights(self, sha256: str, target: Path) -> None:
        target.write_bytes(self.blob)

    def result(self, task_id: str, result: TaskResult) -> dict[str, object]:
        self.results[task_id] = result
        return {}


def test_the_agent_posts_a_refusal_as_the_tasks_error_and_records_what_it_trained(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = tmp_path / "ward.npz"
    np.savez(images, train_images=rng.integers(0, 256, (100, 8, 8), np.uint8), train_labels=np.arange(100) % 2)
    config = tmp_path / "site.yaml"
    config.write_text(f"datasets: [{{name: ward-a, source: {{format: npz, path: {images}}}, max_epsilon: 9}}]\n")
    folder = tmp_path / "site"
    folder.mkdir()
    data = SiteData(site_config(config, []), folder)
    data.prepare()
    global_weights = tmp_path / "global.npz"
    save_checkpoint(Checkpoint(0, [np.zeros(3, np.float32)]), global_weights, durable=False)
    blob = global_weights.read_bytes()
    server = ServerAddress("http://127.0.0.1:9", "127.0.0.1", 9, False)
    identity = SiteIdentity(folder, server, "site-id", "ward", None, Ed25519PrivateKey.generate())
    runner = _FakeRunner()
    agent = Agent(identity, data, cast(TaskRunner, runner))
    client = _FakeClient(blob)
    tasks = [_task("train", None)] + [_task(rnd=rnd) for rnd in range(1, 10)]
    tasks = [t.model_copy(update={"weights_sha256": hashlib.sha256(blob).hexdigest()}) for t in tasks]

    for task in tasks:
        agent._handle(cast(SiteClient, client), task)

    errors = [client.results[str(t.id)].error for t in tasks]
    assert errors[0] is not None and "without differential privacy" in errors[0]
    # 70 training examples, q = 16 / 70, 10 steps a round: epsilon 5.41, 7.16, 8.57, then 9.82 after round 4
    assert [e is None for e in errors] == [False, True, True, True] + [False] * 6 and runner.ran == [1, 2, 3]
    assert all("would spend epsilon 9.82 of its 9 budget" in str(e) for e in errors[4:])
    recorded = json.loads((folder / LEDGER_FILE).read_text())["datasets"]["ward-a"][str(RUN_A)]
    assert recorded["rounds"] == [1, 2, 3] and recorded["epsilon"] == pytest.approx(8.573, abs=1e-3)
