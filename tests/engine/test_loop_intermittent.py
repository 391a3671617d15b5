"""run_federated with a scripted executor: who counts in each round, the global weights, resume and cancel."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.run_config import RunConfig
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.experiment import presence_for
from worker.engine.loop import Cancelled, run_federated
from worker.engine.strategy import strategy_for
from worker.engine.thresholds import grid_counts
from worker.engine.types import (
    ClientEvaluation,
    ClientEvent,
    ClientFailure,
    ClientStatus,
    ClientUpdate,
    EvalMetrics,
    RocCurve,
    RoundResult,
    Weights,
)

T, K, A, F = ClientStatus.TRAINED, ClientStatus.KEPT, ClientStatus.ABSENT, ClientStatus.FAILED
SAMPLES = {"1": 10, "2": 30, "3": 60}
SCHEDULE = [{"client": 3, "joins": 3}, {"client": 2, "leaves": 5}]  # 3 trains from round 3; 2 is gone from round 5
METRICS = EvalMetrics(
    loss=0.4,
    accuracy=0.8,
    auc=0.9,
    sensitivity=0.75,
    specificity=0.85,
    precision=0.8,
    f1=0.77,
    samples=40,
    roc=RocCurve(fpr=[0.0, 1.0], tpr=[0.0, 1.0], thresholds=[1.0, 0.0]),
)

# Who trains: rounds 1-2 clients 1, 2; rounds 3-4 clients 1, 2, 3; rounds 5-6 clients 1, 3.
ASKED = {1: ["1", "2"], 2: ["1", "2"], 3: ["1", "2", "3"], 4: ["1", "2", "3"], 5: ["1", "3"], 6: ["1", "3"]}
STATUS = {
    "drop": {1: [T, T, A], 2: [T, T, A], 3: [T, T, T], 4: [T, T, T], 5: [T, A, T], 6: [T, A, T]},
    "keep-last": {1: [T, T, A], 2: [T, T, A], 3: [T, T, T], 4: [T, T, T], 5: [T, K, T], 6: [T, K, T]},
}
EVENTS = {3: {"3": ClientEvent.JOINED}, 5: {"2": ClientEvent.LEFT}}
# Each client sends np.full(2, id); the global weights are their mean weighted by num_examples.
GLOBAL = {
    "drop": {
        1: (1 * 10 + 2 * 30) / 40,
        2: (1 * 10 + 2 * 30) / 40,
        3: (1 * 10 + 2 * 30 + 3 * 60) / 100,
        4: (1 * 10 + 2 * 30 + 3 * 60) / 100,
        5: (1 * 10 + 3 * 60) / 70,
        6: (1 * 10 + 3 * 60) / 70,
    },
    # keep-last: client 2's round-4 update (all 2s, 30 examples) keeps counting in rounds 5 and 6
    "keep-last": {1: 1.75, 2: 1.75, 3: 2.5, 4: 2.5, 5: 2.5, 6: 2.5},
}


# Each client's validation labels and scores (one positive, one negative).
VALIDATION = {
    "1": (np.array([1, 0]), np.array([0.91, 0.72])),
    "2": (np.array([1, 0]), np.array([0.95, 0.62])),
    "3": (np.array([1, 0]), np.array([0.68, 0.05])),
}
# Youden's threshold of the pooled validation counts, by who evaluated: the middle of the widest plateau of the best J.
# Clients 1 and 2: J = 1 on (0.72, 0.91] -> 0.815. All three: J = 2/3 on (0.62, 0.68] and on the wider (0.72, 0.91]
# -> 0.815. Clients 2 and 3: J = 1 on (0.62, 0.68] -> 0.65. Clients 1 and 3: J = 1 on (0.05, 0.68] -> 0.365.
YOUDEN = {("1", "2"): 0.815, ("1", "2", "3"): 0.815, ("2", "3"): 0.65, ("1", "3"): 0.365}


class FakeExecutor:
    """Client ``c`` returns ``c + carry * incoming`` in the first layer and passes the other layers through."""

    def __init__(self, carry: float = 0.0, fail: tuple[int, str] | None = None) -> None:
        self.carry = carry
        self.fail = fail
        self.trained: list[tuple[int, list[str]]] = []
        self.calibrated: list[tuple[int, list[str], Weights]] = []
        self.evaluations: list[tuple[int, list[str]]] = []

    def train(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate | ClientFailure]:
        self.trained.append((rnd, list(client_ids)))
        outcomes: list[ClientUpdate | ClientFailure] = []
        for cid in client_ids:
            if (rnd, cid) == self.fail:
                outcomes.append(ClientFailure(cid, "out of memory"))
                continue
            first = np.full(2, float(cid)) + self.carry * weights[0]
            outcomes.append(ClientUpdate(cid, [first, *weights[1:]], SAMPLES[cid], {"train.seconds": 0.5 * int(cid)}))
        return outcomes

    def evaluate(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientEvaluation]:
        """Client ``c`` holds VALIDATION[c] as its validation part and as its own test part."""
        self.evaluations.append((rnd, list(client_ids)))
        return [
            ClientEvaluation(cid, grid_counts(*VALIDATION[cid]), grid_counts(*VALIDATION[cid])) for cid in client_ids
        ]

    def batchnorm_statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate]:
        """Client ``c`` measures mean ``c`` and variance ``c / 2`` in its one BatchNorm layer."""
        self.calibrated.append((rnd, list(client_ids), list(weights)))
        return [
            ClientUpdate(cid, [np.full(2, float(cid)), np.full(2, int(cid) / 2)], SAMPLES[cid], {"seconds": 0.25})
            for cid in client_ids
        ]


class Recorder:
    def __init__(self) -> None:
        self.results: list[RoundResult] = []
        self.checkpoints: list[Checkpoint] = []
        self.evaluated: list[Weights] = []
        self.thresholds: list[float] = []

    def evaluate(self, weights: Weights, threshold: float) -> EvalMetrics:
        self.evaluated.append(weights)
        self.thresholds.append(threshold)
        return METRICS

    def on_round(self, result: RoundResult, checkpoint: Checkpoint) -> None:
        self.results.append(result)
        self.checkpoints.append(checkpoint)

    def statuses(self) -> dict[int, list[ClientStatus]]:
        return {r.round: [c.status for c in r.clients] for r in self.results}


def config(
    approach: str = "drop",
    *,
    batchnorm: str = "local",
    availability: float = 1.0,
    events: list[dict[str, int]] | None = None,
    seed: int = 42,
) -> RunConfig:
    return RunConfig.model_validate(
        {
            "seed": seed,
            "model": {"batchnorm": batchnorm},
            "federation": {
                "clients": 3,
                "rounds": 6,
                "intermittent": {
                    "approach": approach,
                    "availability": availability,
                    "events": SCHEDULE if events is None else events,
                },
            },
        }
    )


def run(
    cfg: RunConfig,
    executor: FakeExecutor,
    recorder: Recorder,
    *,
    initial: Weights | None = None,
    start: Checkpoint | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    slots: Sequence[int] = (),
) -> Weights:
    return run_federated(
        cfg,
        executor,
        recorder.evaluate,
        initial=initial or [np.zeros(2)],
        strategy=strategy_for(cfg.federation.intermittent.approach),
        presence=presence_for(cfg),
        samples=SAMPLES,
        batchnorm_slots=slots,
        on_round=recorder.on_round,
        start=start,
        should_stop=should_stop,
    )


@pytest.mark.parametrize("approach", ["drop", "keep-last"])
def test_each_round_reports_every_client_with_its_status(approach: str) -> None:
    recorder, executor = Recorder(), FakeExecutor()
    run(config(approach), executor, recorder)
    assert recorder.statuses() == STATUS[approach]
    assert executor.trained == list(ASKED.items())
    for result in recorder.results:
        assert [c.client_id for c in result.clients] == ["1", "2", "3"]
        assert [c.samples for c in result.clients] == [10, 30, 60]
        for c in result.clients:
            fresh = c.client_id in ASKED[result.round]
            trained = {k: v for k, v in c.metrics.items() if not k.startswith("global.")}
            assert trained == ({"train.seconds": 0.5 * int(c.client_id)} if fresh else {})
            assert any(k.startswith("global.") for k in c.metrics) == fresh


@pytest.mark.parametrize("approach", ["drop", "keep-last"])
def test_join_and_leave_events_are_reported_on_their_rounds(approach: str) -> None:
    recorder = Recorder()
    run(config(approach), FakeExecutor(), recorder)
    events = {r.round: {c.client_id: c.event for c in r.clients if c.event} for r in recorder.results}
    assert events == {rnd: EVENTS.get(rnd, {}) for rnd in range(1, 7)}


@pytest.mark.parametrize("approach", ["drop", "keep-last"])
def test_global_weights_are_the_sample_weighted_mean_of_counted_clients(approach: str) -> None:
    recorder = Recorder()
    final = run(config(approach), FakeExecutor(), recorder)
    for result, checkpoint, evaluated in zip(recorder.results, recorder.checkpoints, recorder.evaluated, strict=True):
        expected = np.full(2, GLOBAL[approach][result.round])
        np.testing.assert_allclose(checkpoint.weights[0], expected, err_msg=f"round {result.round}")
        np.testing.assert_allclose(evaluated[0], expected, err_msg=f"round {result.round}")
        assert checkpoint.round == result.round
        assert result.metrics == METRICS
    np.testing.assert_allclose(final[0], np.full(2, GLOBAL[approach][6]))


def test_keep_last_checkpoints_hold_the_departed_clients_update() -> None:
    recorder = Recorder()
    run(config("keep-last"), FakeExecutor(), recorder)
    state = {u.client_id: (float(u.weights[0][0]), u.num_examples) for u in recorder.checkpoints[-1].strategy_state}
    assert state == {"1": (1.0, 10), "2": (2.0, 30), "3": (3.0, 60)}


def test_round_reports_slowest_client_and_bytes_exchanged() -> None:
    recorder = Recorder()
    run(config("keep-last"), FakeExecutor(), recorder)
    layer_bytes = 2 * 8  # one float64 layer of two values
    assert [r.train_s for r in recorder.results] == [1.0, 1.0, 1.5, 1.5, 1.5, 1.5]
    assert [r.bytes_sent for r in recorder.results] == [layer_bytes * len(ASKED[rnd]) for rnd in range(1, 7)]
    assert [r.bytes_received for r in recorder.results] == [layer_bytes * len(ASKED[rnd]) for rnd in range(1, 7)]
    assert all(r.calibration_s == 0.0 for r in recorder.results)


def test_local_batchnorm_runs_no_statistics_pass() -> None:
    executor = FakeExecutor()
    run(config(batchnorm="local"), executor, Recorder())
    assert executor.calibrated == []


def test_federated_batchnorm_sets_pooled_moments_in_the_global_weights() -> None:
    recorder, executor = Recorder(), FakeExecutor()
    initial = [np.zeros(2), np.zeros(2), np.ones(2)]  # dense layer, BatchNorm moving mean, moving variance
    run(config("keep-last", batchnorm="federated"), executor, recorder, initial=initial, slots=[1])
    # only the clients that trained measure, under the freshly averaged weights
    assert [(rnd, ids) for rnd, ids, _ in executor.calibrated] == list(ASKED.items())
    np.testing.assert_allclose(executor.calibrated[0][2][0], np.full(2, 1.75))
    # round 1: clients 1 (10 examples, mean 1, var 0.5) and 2 (30, mean 2, var 1)
    mean1 = (10 * 1 + 30 * 2) / 40
    var1 = (10 * (0.5 + 1**2) + 30 * (1.0 + 2**2)) / 40 - mean1**2  # 4.125 - 3.0625
    # round 5: clients 1 (10, mean 1, var 0.5) and 3 (60, mean 3, var 1.5); kept client 2 does not measure
    mean5 = (10 * 1 + 60 * 3) / 70
    var5 = (10 * (0.5 + 1**2) + 60 * (1.5 + 3**2)) / 70 - mean5**2  # 181 / 98
    for rnd, mean, var in ((1, mean1, var1), (5, mean5, var5)):
        weights = recorder.checkpoints[rnd - 1].weights
        np.testing.assert_allclose(weights[0], np.full(2, GLOBAL["keep-last"][rnd]))
        np.testing.assert_allclose(weights[1], np.full(2, mean))
        np.testing.assert_allclose(weights[2], np.full(2, var))
        np.testing.assert_array_equal(recorder.evaluated[rnd - 1][1], weights[1])
    np.testing.assert_allclose(var1, 1.0625)
    np.testing.assert_allclose(var5, 181 / 98)
    assert [r.calibration_s for r in recorder.results] == [0.25] * 6


@pytest.mark.parametrize(("approach", "status", "expected"), [("drop", F, 1.0), ("keep-last", K, 1.75)])
def test_failed_client_is_reported_and_only_its_kept_update_counts(
    approach: str, status: ClientStatus, expected: float
) -> None:
    """Under keep-last the failed client's status says its last update counted; its error says why it is not fresh."""
    recorder = Recorder()
    run(config(approach), FakeExecutor(fail=(2, "2")), recorder)
    second = recorder.results[1].clients[1]
    assert (second.status, second.error) == (status, "out of memory")
    assert recorder.results[1].clients[0].status == T
    # drop: client 1 alone; keep-last: client 2's round-1 update (value 2, 30 examples) still counts
    np.testing.assert_allclose(recorder.checkpoints[1].weights[0], np.full(2, expected))


def test_a_client_that_fails_before_its_first_update_is_failed_under_keep_last() -> None:
    recorder = Recorder()
    run(config("keep-last"), FakeExecutor(fail=(1, "2")), recorder)
    first = recorder.results[0].clients[1]
    assert (first.status, first.error) == (F, "out of memory")  # nothing of it to keep yet


def test_partial_availability_is_deterministic_and_drops_some_present_clients() -> None:
    cfg = config(availability=0.5)
    first, second = Recorder(), Recorder()
    executor = FakeExecutor()
    run(cfg, executor, first)
    run(cfg, FakeExecutor(), second)
    assert first.statuses() == second.statuses()
    present = {rnd: set(ids) for rnd, ids in ASKED.items()}
    asked = {rnd: set(ids) for rnd, ids in executor.trained}
    assert all(asked.get(rnd, set()) <= present[rnd] for rnd in present)
    missed = [(rnd, cid) for rnd in present for cid in present[rnd] - asked.get(rnd, set())]
    assert missed, "availability 0.5 should make some present client miss some round"
    for rnd, cid in missed:
        assert first.statuses()[rnd][int(cid) - 1] == A


def test_partial_availability_differs_between_seeds() -> None:
    patterns = []
    for seed in (1, 2, 3):
        executor = FakeExecutor()
        run(config(availability=0.5, events=[], seed=seed), executor, Recorder())
        patterns.append(executor.trained)
    assert len({repr(p) for p in patterns}) > 1


@pytest.mark.parametrize("approach", ["drop", "keep-last"])
@pytest.mark.parametrize("stop_after", [3, 4])  # after round 4 only keep-last's state still holds client 2's update
def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(approach: str, stop_after: int, tmp_path: Path) -> None:
    cfg = config(approach)
    whole = Recorder()
    expected = run(cfg, FakeExecutor(carry=0.5), whole)

    interrupted = Recorder()
    with pytest.raises(Cancelled):
        run(cfg, FakeExecutor(carry=0.5), interrupted, should_stop=lambda: len(interrupted.results) == stop_after)
    assert [r.round for r in interrupted.results] == list(range(1, stop_after + 1))
    save_checkpoint(interrupted.checkpoints[-1], tmp_path / "checkpoint.npz")

    resumed = Recorder()
    executor = FakeExecutor(carry=0.5)
    final = run(cfg, executor, resumed, initial=[np.full(2, 99.0)], start=load_checkpoint(tmp_path / "checkpoint.npz"))
    rest = list(range(stop_after + 1, 7))
    assert [r.round for r in resumed.results] == rest
    assert [rnd for rnd, _ in executor.trained] == rest
    assert resumed.statuses() == {rnd: whole.statuses()[rnd] for rnd in rest}
    for ours, theirs in zip(resumed.checkpoints, whole.checkpoints[stop_after:], strict=True):
        np.testing.assert_array_equal(ours.weights[0], theirs.weights[0])
    np.testing.assert_array_equal(final[0], expected[0])


def test_keep_last_resume_needs_the_strategy_state() -> None:
    cfg = config("keep-last")
    whole = Recorder()
    expected = run(cfg, FakeExecutor(carry=0.5), whole)
    stateless = Checkpoint(4, whole.checkpoints[3].weights)  # the same weights, but client 2's last update forgotten
    final = run(cfg, FakeExecutor(carry=0.5), Recorder(), start=stateless)
    assert not np.allclose(final[0], expected[0])


def test_should_stop_cancels_before_the_next_round() -> None:
    recorder, executor = Recorder(), FakeExecutor()
    with pytest.raises(Cancelled, match="cancelled before round 3"):
        run(config(), executor, recorder, should_stop=lambda: len(recorder.results) == 2)
    assert [r.round for r in recorder.results] == [1, 2]
    assert [rnd for rnd, _ in executor.trained] == [1, 2]


def test_should_stop_before_the_first_round_trains_nothing() -> None:
    recorder, executor = Recorder(), FakeExecutor()
    with pytest.raises(Cancelled, match="cancelled before round 1"):
        run(config(), executor, recorder, should_stop=lambda: True)
    assert recorder.results == []
    assert executor.trained == []


def test_each_round_is_evaluated_at_the_youden_threshold_of_the_clients_that_trained() -> None:
    executor, recorder = FakeExecutor(), Recorder()
    run(config(), executor, recorder)

    assert [ids for _, ids in executor.evaluations] == [ids for _, ids in executor.trained]
    for (rnd, trained), threshold, result in zip(executor.trained, recorder.thresholds, recorder.results, strict=True):
        assert threshold == pytest.approx(YOUDEN[tuple(sorted(trained))]), f"round {rnd}"
        rows = {c.client_id: c.metrics for c in result.clients}
        for cid in trained:  # the global model on the client's own test part, at the round's threshold
            own_positive, own_negative = VALIDATION[cid][1]
            assert rows[cid]["global.sensitivity"] == (1.0 if own_positive >= threshold else 0.0)
            assert rows[cid]["global.specificity"] == (1.0 if own_negative < threshold else 0.0)
            assert rows[cid]["global.n_positive"] == 1 and rows[cid]["global.n_negative"] == 1


def test_a_fixed_threshold_is_used_as_given() -> None:
    recorder = Recorder()
    fixed = {"evaluation": {"threshold": {"method": "fixed", "value": 0.3}}}
    cfg = RunConfig.model_validate(config().model_dump() | fixed)
    run(cfg, FakeExecutor(), recorder)
    assert set(recorder.thresholds) == {0.3}


@pytest.mark.parametrize("announced", [{3: (4, 60)}, {4: (2, 60)}], ids=["before its round", "after its round"])
def test_a_client_that_joins_the_open_run_trains_from_its_join_round_and_counts_from_then(
    announced: dict[int, tuple[int, int]],
) -> None:
    """Client 3 joins at round 4: announced before round 3 (a site added while round 3 trains), or announced late
    for a round that has passed, when it trains from the round it is seen."""
    cfg = config(events=[])
    cfg.federation.clients = 2
    recorder, executor = Recorder(), FakeExecutor()
    samples = {"1": 10, "2": 30}
    run_federated(
        cfg,
        executor,
        recorder.evaluate,
        initial=[np.zeros(2)],
        strategy=strategy_for("drop"),
        presence=presence_for(cfg),
        samples=samples,
        batchnorm_slots=(),
        on_round=recorder.on_round,
        newcomers=lambda rnd: {"3": announced[rnd]} if rnd in announced else {},
    )

    assert [ids for _, ids in executor.trained] == [["1", "2"]] * 3 + [["1", "2", "3"]] * 3
    assert samples == SAMPLES
    by_round = {r.round: {c.client_id: (c.status, c.event) for c in r.clients} for r in recorder.results}
    assert by_round[2] == {"1": (T, None), "2": (T, None)}
    assert by_round[4]["3"] == (T, ClientEvent.JOINED)
    assert recorder.checkpoints[3].weights[0][0] == pytest.approx((1 * 10 + 2 * 30 + 3 * 60) / 100)


class ColdEvaluations(FakeExecutor):
    """Each evaluation lands on a worker that had not run this run yet and pays its start-up there."""

    def evaluate(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientEvaluation]:
        time.sleep(0.2)
        return [replace(e, startup_s=0.2 if rnd == 1 else 0.0) for e in super().evaluate(rnd, weights, client_ids)]


def test_an_evaluations_start_up_is_counted_as_start_up_not_as_evaluation() -> None:
    recorder = Recorder()
    run(config(events=[]), ColdEvaluations(), recorder)

    first, second = recorder.results[:2]
    assert first.startup_s == pytest.approx(0.2) and first.evaluation_s < 0.1
    assert second.startup_s == 0.0 and second.evaluation_s >= 0.2
