"""The federated and centralized training loops; they report each finished round to a callback."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from app.run_config import RunConfig
from worker.engine.aggregate import pooled_moments, weights_nbytes, with_batchnorm_statistics
from worker.engine.checkpoint import Checkpoint
from worker.engine.client import KerasTrainer
from worker.engine.data import Dataset
from worker.engine.executor import Executor
from worker.engine.experiment import CENTRAL_FIT, derive_seed
from worker.engine.presence import Membership, Presence
from worker.engine.strategy import Aggregate, Strategy
from worker.engine.thresholds import GridCounts, choose_threshold, empty_counts, roc_curve, summary_at
from worker.engine.types import (
    ClientEvaluation,
    ClientFailure,
    ClientRound,
    ClientStatus,
    ClientUpdate,
    EvalMetrics,
    RocCurve,
    RoundPrivacy,
    RoundResult,
    Weights,
)

#: The global model on the server-held common test set, at an operating threshold.
Evaluate = Callable[[Weights, float], EvalMetrics]
#: Called once a round is complete, with its checkpoint; persist both, then return.
OnRound = Callable[[RoundResult, Checkpoint], None]
#: Pools the clients' (id, BatchNorm moments, examples) of a round into the moments of their union.
PoolMoments = Callable[[int, Sequence[tuple[str, Weights, int]]], Weights]
#: Asked before each round: clients that joined the open run since the last call, each with its join round (the
#: loop counts it from this round if that has passed) and its number of training images.
Newcomers = Callable[[int], Mapping[str, tuple[int, int]]]


def pool_in_clear(rnd: int, stats: Sequence[tuple[str, Weights, int]]) -> Weights:
    return pooled_moments([(moments, n) for _, moments, n in stats])


class Cancelled(Exception):
    """The run was asked to stop; every round before this one is complete and reported."""


class BudgetSpent(Exception):
    """The next round would take the run's epsilon above its target; every round before it is complete and
    ``weights`` are the global model after the last of them."""

    def __init__(self, reason: str, weights: Weights) -> None:
        super().__init__(reason)
        self.weights = weights


class SecureAggregator(Protocol):
    """Rounds whose updates the server only ever sees summed (secure aggregation over real sites)."""

    def train(
        self, rnd: int, weights: Weights, client_ids: Sequence[str]
    ) -> tuple[Aggregate | None, list[ClientUpdate], list[ClientFailure]]:
        """The new global weights from the sum of the sites' changes; per site, what the server received (its
        masked vector, sample count and metrics), and the sites that failed."""
        ...

    def statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> tuple[Weights, list[ClientUpdate]]:
        """The pooled BatchNorm moments under ``weights`` and, per site, what the server received."""
        ...


class PrivacyBudget(Protocol):
    """The (epsilon, delta) a differentially private run spends, round by round."""

    def stop_before(self, rnd: int, client_ids: Sequence[str]) -> str | None:
        """Why round ``rnd`` with these clients must not run (it would exceed the target epsilon), else None."""
        ...

    def spend(self, rnd: int, trained: Sequence[str]) -> RoundPrivacy:
        """Count round ``rnd``, in which ``trained`` released an update, and say what has been spent."""
        ...

    def state(self) -> dict[str, float]:
        """What a checkpoint keeps so that a resumed run counts every completed round once."""
        ...

    def restore(self, state: dict[str, float]) -> None: ...


def _client_rounds(
    rnd: int,
    presence: Presence,
    samples: dict[str, int],
    aggregate: Aggregate | None,
    updates: Sequence[ClientUpdate],
    failures: Sequence[ClientFailure],
    evaluations: Sequence[ClientEvaluation],
    threshold: float,
) -> list[ClientRound]:
    """Each client's row; ``global.*`` metrics are the new global model on the client's own test set.

    A client that failed (a site that went offline or answered late) but whose last update the strategy counted
    (keep-last) is recorded as kept, with its failure as the reason: the status says what the global model holds.
    """
    fresh = {u.client_id: u for u in updates}
    failed = {f.client_id: f.error for f in failures}
    evaluated = {e.client_id: e for e in evaluations}
    counted = aggregate.counted if aggregate else {}
    rows = []
    for member in presence.members:
        cid = member.client_id
        status = counted.get(cid, ClientStatus.ABSENT)
        if cid in failed and status != ClientStatus.KEPT:
            status = ClientStatus.FAILED
        metrics = dict(fresh[cid].metrics) if cid in fresh else {}
        roc = None
        if cid in evaluated and evaluated[cid].test.n_positive + evaluated[cid].test.n_negative:
            own = evaluated[cid].test
            metrics |= {f"global.{k}": v for k, v in summary_at(own, threshold).items()}
            if min(own.n_positive, own.n_negative) > 0:
                fpr, tpr = roc_curve(own)
                roc = RocCurve(fpr, tpr, [])
        rows.append(ClientRound(cid, status, samples[cid], member.event(rnd), metrics, failed.get(cid), roc))
    return rows


def operating_threshold(cfg: RunConfig, validation: GridCounts | None, previous: float) -> float:
    """The threshold the config asks for, chosen on pooled validation counts; ``previous`` when they lack a
    class (nobody answered this round)."""
    spec = cfg.evaluation.threshold
    if spec.method == "fixed":
        return spec.value
    if validation is None or min(validation.n_positive, validation.n_negative) == 0:
        return previous
    return choose_threshold(validation, spec.method, target=spec.target_sensitivity)


def _global_weights(
    cfg: RunConfig,
    executor: Executor,
    rnd: int,
    weights: Weights,
    result: Aggregate | None,
    updates: Sequence[ClientUpdate],
    slots: Sequence[int],
    pool: PoolMoments,
    secure: SecureAggregator | None,
) -> tuple[Weights, list[ClientUpdate], float]:
    """(new global weights, BatchNorm statistics used, seconds spent pooling them).

    With only kept updates the global model would not change, so the current weights stay. A
    statistics pass that nobody answers keeps the averaged moments of the clients' own updates.
    """
    if result is None or not updates:
        return weights, [], 0.0
    if cfg.model.batchnorm != "federated" or not slots:  # GroupNorm (under DP) has no statistics to pool
        return result.weights, [], 0.0
    trained = [u.client_id for u in updates]
    if secure is not None:
        started = time.perf_counter()
        moments, received = secure.statistics(rnd, result.weights, trained)
        return with_batchnorm_statistics(result.weights, slots, moments), received, time.perf_counter() - started
    stats = executor.batchnorm_statistics(rnd, result.weights, trained)
    if not stats:
        return result.weights, [], 0.0
    pooled = time.perf_counter()
    moments = pool(rnd, [(s.client_id, s.weights, s.num_examples) for s in stats])
    return with_batchnorm_statistics(result.weights, slots, moments), stats, time.perf_counter() - pooled


def run_federated(
    cfg: RunConfig,
    executor: Executor,
    evaluate: Evaluate,
    *,
    initial: Weights,
    strategy: Strategy,
    presence: Presence,
    samples: dict[str, int],
    batchnorm_slots: Sequence[int],
    on_round: OnRound,
    start: Checkpoint | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    privacy: PrivacyBudget | None = None,
    pool_moments: PoolMoments = pool_in_clear,
    secure: SecureAggregator | None = None,
    newcomers: Newcomers | None = None,
) -> Weights:
    """FedAvg rounds from ``start`` (a checkpoint of the last completed round) or from ``initial``.

    ``newcomers`` lets clients join while the run trains (hospital sites added to an open experiment); they enter
    ``presence`` and ``samples`` before the round in which they first train.

    With ``privacy``, each round reports the epsilon spent so far, and the run ends with BudgetSpent before a round
    that would exceed the target.

    With ``model.batchnorm == "federated"`` each round ends with a second, forward-only pass in
    which the clients that trained measure BatchNorm moments under the new global weights and the
    server pools them, so the global model's statistics match the global weights.
    """
    weights, first = (start.weights, start.round + 1) if start else (initial, 1)
    if start:
        strategy.restore(start.strategy_state)
        if privacy:
            privacy.restore(start.privacy_state)
    threshold = cfg.evaluation.threshold.value
    for rnd in range(first, cfg.federation.rounds + 1):
        if should_stop():
            raise Cancelled(f"cancelled before round {rnd}")
        began = time.perf_counter()
        for cid, (joins, examples) in (newcomers(rnd) if newcomers else {}).items():
            presence.add(Membership(cid, max(joins, rnd)))
            samples[cid] = examples
        asked = presence.available(rnd)
        if privacy and (reason := privacy.stop_before(rnd, asked)):
            raise BudgetSpent(reason, weights)
        aggregated = time.perf_counter()
        if secure is not None:
            result, updates, failures = secure.train(rnd, weights, asked) if asked else (None, [], [])
        else:
            outcomes = executor.train(rnd, weights, asked) if asked else []
            updates = [o for o in outcomes if isinstance(o, ClientUpdate)]
            failures = [o for o in outcomes if isinstance(o, ClientFailure)]
            aggregated = time.perf_counter()
            result = strategy.aggregate(rnd, updates, weights)
        aggregation_s = time.perf_counter() - aggregated
        train_s = max((u.metrics.get("train.seconds", 0.0) for u in updates), default=0.0)
        if secure is not None:  # the sites trained inside the protocol's masking step: count that as training
            aggregation_s = max(0.0, aggregation_s - train_s)
        spent = privacy.spend(rnd, [u.client_id for u in updates]) if privacy else None
        new, stats, pooling_s = _global_weights(
            cfg, executor, rnd, weights, result, updates, batchnorm_slots, pool_moments, secure
        )
        aggregation_s += pooling_s
        evaluated = time.perf_counter()
        evaluations = executor.evaluate(rnd, new, [u.client_id for u in updates]) if updates else []
        pooled = sum((e.validation for e in evaluations), empty_counts()) if evaluations else None
        threshold = operating_threshold(cfg, pooled, threshold)
        metrics = evaluate(new, threshold)
        evaluation_startup_s = max((e.startup_s for e in evaluations), default=0.0)  # the clients evaluate at once
        evaluation_s = max(0.0, time.perf_counter() - evaluated - evaluation_startup_s)
        weights = new
        round_result = RoundResult(
            round=rnd,
            metrics=metrics,
            clients=_client_rounds(rnd, presence, samples, result, updates, failures, evaluations, threshold),
            wall_s=time.perf_counter() - began,
            train_s=train_s,
            calibration_s=max((s.metrics.get("seconds", 0.0) for s in stats), default=0.0),
            startup_s=max((u.metrics.get("startup.seconds", 0.0) for u in [*updates, *stats]), default=0.0)
            + evaluation_startup_s,
            aggregation_s=aggregation_s,
            evaluation_s=evaluation_s,
            bytes_sent=weights_nbytes(weights) * (len(asked) + len(stats)),
            bytes_received=sum(weights_nbytes(u.weights) for u in [*updates, *stats]),
            privacy=spent,
        )
        on_round(
            round_result, Checkpoint(rnd, weights, strategy.state(), privacy_state=privacy.state() if privacy else {})
        )
    return weights


def run_centralized(
    cfg: RunConfig,
    trainer: KerasTrainer,
    train: Dataset,
    evaluate: Evaluate,
    *,
    validation: Dataset,
    class_weight: dict[int, float] | None = None,
    initial: Weights,
    on_round: OnRound,
    start: Checkpoint | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Weights:
    """The baseline: the same model trained on the union of the clients' data, one report per epoch.

    Its operating threshold is chosen the federated way, on the union of the clients' validation parts.
    """
    weights, first = (start.weights, start.round + 1) if start else (initial, 1)
    threshold = cfg.evaluation.threshold.value
    optimizer_state = start.optimizer_state if start and start.optimizer_state else None
    for epoch in range(first, cfg.centralized_epochs + 1):
        if should_stop():
            raise Cancelled(f"cancelled before epoch {epoch}")
        began = time.perf_counter()
        fit = trainer.fit(
            weights,
            train,
            epochs=1,
            seed=derive_seed(cfg.seed, CENTRAL_FIT, epoch),
            optimizer_state=optimizer_state,
            class_weight=class_weight,
        )
        weights, optimizer_state = fit.weights, fit.optimizer_state
        evaluated = time.perf_counter()
        counts = trainer.grid_counts(weights, validation) if cfg.evaluation.threshold.method != "fixed" else None
        threshold = operating_threshold(cfg, counts, threshold)
        metrics = evaluate(weights, threshold)
        evaluation_s = time.perf_counter() - evaluated
        central = ClientRound(
            "central",
            ClientStatus.TRAINED,
            len(train),
            metrics={"train.loss": fit.loss, "train.accuracy": fit.accuracy, "train.seconds": fit.seconds},
        )
        on_round(
            RoundResult(
                epoch, metrics, [central], time.perf_counter() - began, fit.seconds, 0.0, 0.0, evaluation_s, 0, 0
            ),
            Checkpoint(epoch, weights, optimizer_state=optimizer_state),
        )
    return weights
