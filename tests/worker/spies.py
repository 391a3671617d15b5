"""Record what a local run really trains: each client fan-out, each fit, and the weights they started from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from worker.engine.client import FitResult, KerasTrainer
from worker.engine.data import Dataset
from worker.engine.digest import weights_sha256
from worker.engine.executor import InProcessExecutor
from worker.engine.types import ClientFailure, ClientUpdate, Weights


@dataclass(frozen=True)
class Call:
    kind: str  # "train" or "stats"
    round: int
    start_sha256: str  # of the global weights the clients were given
    outcomes: list[ClientUpdate | ClientFailure]
    executor: InProcessExecutor


@dataclass(frozen=True)
class Fit:
    start_sha256: str
    optimizer_state: Weights | None  # as passed in; None means a fresh optimizer
    result: FitResult
    samples: int
    trainer: KerasTrainer

    def iterations(self, state: Weights) -> int:
        """The optimizer's step counter in ``state`` (one of this trainer's optimizer states)."""
        paths = [v.path for v in self.trainer.model.optimizer.variables]
        return int(state[next(i for i, p in enumerate(paths) if p.endswith("/iteration"))])


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)
    fits: list[Fit] = field(default_factory=list)

    def rounds(self, kind: str = "train") -> list[int]:
        return [c.round for c in self.calls if c.kind == kind]

    def clear(self) -> None:
        self.calls.clear()
        self.fits.clear()


def install(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """Make every executor and trainer that ``worker.local_run`` builds report to the returned recorder."""
    record = Recorder()

    class RecordingExecutor(InProcessExecutor):
        def train(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate | ClientFailure]:
            outcomes = super().train(rnd, weights, client_ids)
            record.calls.append(Call("train", rnd, weights_sha256(weights), outcomes, self))
            return outcomes

        def batchnorm_statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate]:
            stats = super().batchnorm_statistics(rnd, weights, client_ids)
            record.calls.append(Call("stats", rnd, weights_sha256(weights), list(stats), self))
            return stats

    class RecordingTrainer(KerasTrainer):
        def fit(
            self,
            weights: Weights,
            data: Dataset,
            *,
            epochs: int,
            seed: int,
            optimizer_state: Weights | None = None,
            class_weight: dict[int, float] | None = None,
        ) -> FitResult:
            passed = [w.copy() for w in optimizer_state] if optimizer_state else None
            result = super().fit(
                weights, data, epochs=epochs, seed=seed, optimizer_state=optimizer_state, class_weight=class_weight
            )
            record.fits.append(Fit(weights_sha256(weights), passed, result, len(data), self))
            return result

    monkeypatch.setattr("worker.local_run.InProcessExecutor", RecordingExecutor)
    monkeypatch.setattr("worker.local_run.KerasTrainer", RecordingTrainer)
    return record
