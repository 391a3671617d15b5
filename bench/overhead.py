"""Engine overhead: run_federated (with its checkpoints and round records) against a bare Keras FedAvg loop.

Both do the same learning work on the same data, clients and rounds and share one compiled model;
the runs are interleaved in one process so machine noise hits both alike.
Usage: python bench/overhead.py [--repeats 3] [--rounds 3] [--samples 1500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.run_config import RunConfig
from bench.common import kermany_sample
from worker.engine.aggregate import pooled_moments, weighted_mean, with_batchnorm_statistics
from worker.engine.client import KerasTrainer
from worker.engine.executor import InProcessExecutor
from worker.engine.experiment import Federation, prepare, presence_for
from worker.engine.loop import run_federated
from worker.engine.model import recalibrate_batchnorm
from worker.engine.strategy import strategy_for
from worker.engine.types import Weights
from worker.local_run import PhaseLog


def bare_loop(cfg: RunConfig, trainer: KerasTrainer, fed: Federation, initial: Weights) -> float:
    """FedAvg written inline with plain Keras calls: the same fits, BatchNorm passes and evaluations."""
    model, n = trainer.model, cfg.model.calibration_samples
    fresh = [v.numpy() for v in model.optimizer.variables]
    class_weight = fed.class_weight(cfg)
    started = time.perf_counter()
    weights = initial
    for _ in range(cfg.federation.rounds):
        updates = []
        for client in fed.clients:
            model.set_weights(weights)
            for var, value in zip(model.optimizer.variables, fresh, strict=True):
                var.assign(value)
            model.fit(
                client.train.images,
                client.train.labels,
                batch_size=cfg.model.batch_size,
                verbose=0,
                class_weight=class_weight,
            )
            recalibrate_batchnorm(model, client.train.images[:n])
            model.predict(client.test.images, verbose=0, batch_size=256)
            updates.append((model.get_weights(), len(client.train)))
        weights = weighted_mean(updates)
        stats = []
        for client in fed.clients:
            stats.append((trainer.batchnorm_statistics(weights, client.train, 0), len(client.train)))
        weights = with_batchnorm_statistics(weights, trainer.batchnorm_slots, pooled_moments(stats))
        model.set_weights(weights)
        for client in fed.clients:  # the federated evaluation: validation and own test parts
            model.predict(client.validation.images, verbose=0, batch_size=256)
            model.predict(client.test.images, verbose=0, batch_size=256)
        model.predict(fed.test.images, verbose=0, batch_size=256)
    return time.perf_counter() - started


def engine_loop(cfg: RunConfig, trainer: KerasTrainer, fed: Federation, initial: Weights, folder: Path) -> float:
    clients = {c.client_id: c for c in fed.clients}
    log = PhaseLog(folder)
    started = time.perf_counter()
    run_federated(
        cfg,
        InProcessExecutor(trainer, clients, seed=cfg.seed, local_epochs=1, class_weight=fed.class_weight(cfg)),
        lambda w, threshold: trainer.evaluate(w, fed.test, threshold),
        initial=initial,
        strategy=strategy_for("drop"),
        presence=presence_for(cfg),
        samples={cid: len(c.train) for cid, c in clients.items()},
        batchnorm_slots=trainer.batchnorm_slots,
        on_round=log.append,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1500, help="images taken from kermany_train_64.npz")
    args = parser.parse_args()
    images, labels = kermany_sample(args.samples)
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "subset.npz"
        np.savez(npz, images=images, labels=labels)
        cfg = RunConfig.model_validate(
            {
                "data": {"train": {"format": "npz", "path": str(npz)}, "image_size": 64},
                "federation": {"clients": args.clients, "rounds": args.rounds},
            }
        )
        fed = prepare(cfg)
        trainer = KerasTrainer(64, cfg.model)
        initial = trainer.initial_weights(0)
        one_round = cfg.model_copy(update={"federation": cfg.federation.model_copy(update={"rounds": 1})})
        bare_loop(one_round, trainer, fed, initial)  # warm-up: traces fit and predict for every shape once
        engine_loop(one_round, trainer, fed, initial, Path(tmp) / "warm-up")
        engine_s, bare_s = [], []
        for rep in range(args.repeats):
            engine_s.append(engine_loop(cfg, trainer, fed, initial, Path(tmp) / f"engine-{rep}"))
            bare_s.append(bare_loop(cfg, trainer, fed, initial))
            print(
                f"repeat {rep + 1}: engine {engine_s[-1]:.2f} s  bare {bare_s[-1]:.2f} s  "
                f"ratio {engine_s[-1] / bare_s[-1]:.3f}",
                flush=True,
            )
    print(
        f"data: {args.samples} Kermany train images at 64x64, {args.clients} clients, {args.rounds} rounds, "
        f"{args.repeats} interleaved repeats (medians)"
    )
    print(f"engine_s={statistics.median(engine_s):.2f} bare_s={statistics.median(bare_s):.2f}")
    print(f"overhead_ratio={statistics.median(engine_s) / statistics.median(bare_s):.3f}")


if __name__ == "__main__":
    main()
