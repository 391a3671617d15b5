"""The training-time cost of DP-SGD: plain ``model.fit`` (BatchNorm and GroupNorm CNN) against DP-SGD (GroupNorm).

One epoch on the same synthetic images, each timed after a warm-up epoch (tracing excluded), best of ``--repeats``.
Usage: python -m bench.dpsgd [--images 256] [--size 64] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import bench.common  # noqa: F401  (quiet TensorFlow logs)
from app.run_config import ModelConfig
from worker.engine.client import KerasTrainer
from worker.engine.data import Dataset
from worker.engine.model import Normalization, compiled_cnn
from worker.engine.privacy.dpsgd import DpSgdSettings
from worker.engine.synthetic import synthetic_xrays


def best_seconds(train_epoch: Callable[[], object], repeats: int) -> float:
    train_epoch()  # warm-up: traces the training function
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        train_epoch()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images, labels = synthetic_xrays(args.images, args.size, 0.5, seed=0)
    images = images[..., None]  # one channel
    data = Dataset(images, labels)
    config = ModelConfig(batch_size=args.batch, batchnorm="keras")  # RMSprop, augmentation on, no recalibration

    def plain(normalization: Normalization) -> Callable[[], object]:
        model = compiled_cnn(args.size, config.optimizer, config.learning_rate, config.augmentation, normalization)
        return lambda: model.fit(images, labels, batch_size=args.batch, verbose=0)

    trainer = KerasTrainer(args.size, config, dp=DpSgdSettings(noise_multiplier=1.0, clip_norm=1.0))
    weights = trainer.initial_weights(seed=0)
    seconds = {
        "plain fit, BatchNorm CNN (the study)": best_seconds(plain("batchnorm"), args.repeats),
        "plain fit, GroupNorm CNN": best_seconds(plain("groupnorm"), args.repeats),
        "DP-SGD, GroupNorm CNN": best_seconds(lambda: trainer.fit(weights, data, epochs=1, seed=0), args.repeats),
    }
    size = f"{args.size}x{args.size}"
    print(f"{args.images} synthetic images at {size}, batch {args.batch}, 1 epoch, best of {args.repeats}")
    baseline = seconds["plain fit, GroupNorm CNN"]
    for name, s in seconds.items():
        print(f"{name:<40} {s:7.2f} s  {s / baseline:5.2f}x plain GroupNorm  {args.images / s:6.0f} img/s")


if __name__ == "__main__":
    main()
