"""Where client work runs: the Executor interface and its in-process implementation."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from worker.engine.client import KerasTrainer
from worker.engine.experiment import CLIENT_FIT, LOCAL_FIT, ClientData, derive_seed
from worker.engine.metrics import loss_and_accuracy
from worker.engine.types import ClientEvaluation, ClientFailure, ClientUpdate, Weights


class Executor(Protocol):
    def train(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate | ClientFailure]:
        """Each client trains from ``weights`` on its own data and returns its new weights."""
        ...

    def batchnorm_statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate]:
        """Each client's BatchNorm input moments under ``weights`` (``[mean_1, var_1, ...]``)."""
        ...

    def evaluate(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientEvaluation]:
        """The global ``weights`` on each client's validation and test parts, as grid counts; clients that
        fail are left out."""
        ...


def client_evaluation(trainer: KerasTrainer, client: ClientData, weights: Weights) -> ClientEvaluation:
    """Forward passes only; what leaves the client is two count vectors per part, never a prediction."""
    return ClientEvaluation(
        client.client_id, trainer.grid_counts(weights, client.validation), trainer.grid_counts(weights, client.test)
    )


def client_update(
    trainer: KerasTrainer,
    client: ClientData,
    weights: Weights,
    *,
    rnd: int,
    seed: int,
    local_epochs: int,
    class_weight: dict[int, float] | None = None,
) -> ClientUpdate:
    """One client's round: local training, then loss and accuracy on its own test set."""
    fit_seed = derive_seed(seed, CLIENT_FIT, rnd, int(client.client_id))
    fit = trainer.fit(weights, client.train, epochs=local_epochs, seed=fit_seed, class_weight=class_weight)
    metrics = {"train.loss": fit.loss, "train.accuracy": fit.accuracy, "train.seconds": fit.seconds}
    if fit.dp_steps:
        metrics["dp.steps"] = fit.dp_steps
    if len(client.test):
        loss, accuracy = loss_and_accuracy(client.test.labels, trainer.predict(fit.weights, client.test.images))
        metrics |= {"test.loss": loss, "test.accuracy": accuracy}
    return ClientUpdate(client.client_id, fit.weights, len(client.train), metrics)


def local_only(
    trainer: KerasTrainer,
    client: ClientData,
    initial: Weights,
    *,
    seed: int,
    epochs: int,
    class_weight: dict[int, float] | None = None,
) -> tuple[ClientEvaluation, dict[str, float]]:
    """A client's local-only baseline: the run's model trained from ``initial`` on this client's data alone for
    ``epochs`` (one optimizer throughout, as the centralized baseline), then judged as the global model is, by grid
    counts of its validation and test parts; its training metrics. The weights never leave the client."""
    fit_seed = derive_seed(seed, LOCAL_FIT, int(client.client_id))
    fit = trainer.fit(initial, client.train, epochs=epochs, seed=fit_seed, class_weight=class_weight)
    metrics = {"train.loss": fit.loss, "train.accuracy": fit.accuracy, "train.seconds": fit.seconds}
    return client_evaluation(trainer, client, fit.weights), metrics


def client_statistics(
    trainer: KerasTrainer, client: ClientData, weights: Weights, *, rnd: int, seed: int
) -> ClientUpdate:
    started = time.perf_counter()
    stats = trainer.batchnorm_statistics(
        weights, client.train, derive_seed(seed, CLIENT_FIT, rnd, int(client.client_id))
    )
    return ClientUpdate(client.client_id, stats, len(client.train), {"seconds": time.perf_counter() - started})


class InProcessExecutor:
    """Runs the clients one after another on this process's trainer (the CLI and benchmarks)."""

    def __init__(
        self,
        trainer: KerasTrainer,
        clients: Mapping[str, ClientData],
        *,
        seed: int,
        local_epochs: int,
        class_weight: dict[int, float] | None = None,
    ) -> None:
        self.trainer = trainer
        self.clients = clients
        self.seed = seed
        self.local_epochs = local_epochs
        self.class_weight = class_weight

    def train(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate | ClientFailure]:
        return [
            client_update(
                self.trainer,
                self.clients[cid],
                weights,
                rnd=rnd,
                seed=self.seed,
                local_epochs=self.local_epochs,
                class_weight=self.class_weight,
            )
            for cid in client_ids
        ]

    def batchnorm_statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate]:
        return [
            client_statistics(self.trainer, self.clients[cid], weights, rnd=rnd, seed=self.seed) for cid in client_ids
        ]

    def evaluate(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientEvaluation]:
        return [client_evaluation(self.trainer, self.clients[cid], weights) for cid in client_ids]
