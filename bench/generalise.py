"""How class weights, augmentation and the operating threshold move accuracy and AUC on a shifted test set.

The official Kermany test split has another class ratio (234 NORMAL : 390 PNEUMONIA, 1 : 1.67) than its
training split (1 : 2.9). This benchmark holds out 20% of the NORMAL images of the given training file and
as many PNEUMONIA images as that ratio asks, trains on the rest, and adds the defaults one at a time:
  plain          the study's setup: no class weights, no augmentation, threshold 0.5
  +weights       balanced class weights from the clients' label counts
  +augment       rotation, shift and zoom while training
  +youden        threshold by Youden's J on the clients' validation parts (all of today's defaults)
and the centralized baseline with every default. 3 IID clients, 1 local epoch per round.
Usage: python -m bench.generalise [--data kermany_train_64.npz] [--size 64] [--rounds 5] [--steps plain +youden]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from app.run_config import RunConfig
from bench.common import shared_file
from worker.local_run import run_local

OFFICIAL_TEST = (234, 390)  # NORMAL, PNEUMONIA in the official Kermany test split
STEPS: dict[str, dict[str, Any]] = {
    "plain": {"model": {"class_weight": "none", "augmentation": False}, "threshold": {"method": "fixed"}},
    "+weights": {"model": {"class_weight": "balanced", "augmentation": False}, "threshold": {"method": "fixed"}},
    "+augment": {"model": {"class_weight": "balanced", "augmentation": True}, "threshold": {"method": "fixed"}},
    "+youden": {"model": {"class_weight": "balanced", "augmentation": True}, "threshold": {"method": "youden"}},
}


def shifted_split(source: Path, folder: Path, seed: int = 7) -> tuple[Path, dict[str, int]]:
    """An npz with ``train_*`` and a ``test_*`` held out at the official test split's class ratio."""
    with np.load(source) as archive:
        images, labels = archive["images"], archive["labels"].reshape(-1)
    rng = np.random.default_rng(seed)
    normal, pneumonia = rng.permutation(np.flatnonzero(labels == 0)), rng.permutation(np.flatnonzero(labels == 1))
    n_normal = round(0.2 * len(normal))
    n_pneumonia = round(n_normal * OFFICIAL_TEST[1] / OFFICIAL_TEST[0])
    test = np.sort(np.concatenate([normal[:n_normal], pneumonia[:n_pneumonia]]))
    train = np.sort(np.concatenate([normal[n_normal:], pneumonia[n_pneumonia:]]))
    path = folder / "shifted.npz"
    np.savez(
        path, train_images=images[train], train_labels=labels[train], test_images=images[test], test_labels=labels[test]
    )
    counts = {
        "train NORMAL": int((labels[train] == 0).sum()),
        "train PNEUMONIA": int((labels[train] == 1).sum()),
        "test NORMAL": n_normal,
        "test PNEUMONIA": n_pneumonia,
    }
    return path, counts


def config(data: Path, size: int, rounds: int, step: str, centralized: bool) -> RunConfig:
    spec = STEPS[step]
    return RunConfig.model_validate(
        {
            "name": f"generalise-{step}",
            "seed": 42,
            "data": {
                "train": {"format": "npz", "path": str(data)},
                "test": {"format": "npz", "path": str(data)},
                "image_size": size,
            },
            "model": spec["model"],
            "federation": {"clients": 3, "rounds": rounds},
            "evaluation": {"threshold": spec["threshold"]},
            "centralized": {"enabled": centralized},
        }
    )


def row(name: str, final: dict[str, Any]) -> str:
    ci = f"[{final['auc_ci_low']:.3f}, {final['auc_ci_high']:.3f}]"
    return (
        f"{name:<12} {final['auc']:>6.3f} {ci:>16} {final['accuracy']:>6.3f} {final['sensitivity']:>6.3f} "
        f"{final['specificity']:>6.3f} {final['threshold']:>6.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="kermany_train_64.npz")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--steps", nargs="+", choices=list(STEPS), default=list(STEPS), help="the centralized run follows the last"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        data, counts = shifted_split(shared_file(args.data), Path(tmp))
        for step in args.steps:
            last = step == args.steps[-1]
            results = run_local(config(data, args.size, args.rounds, step, centralized=last), Path(tmp) / step)
            lines.append(row(f"fed {step}", results["federated"]["final"]))
            print(f"[{time.perf_counter() - started:6.0f} s] {lines[-1]}", flush=True)
            if last:
                lines.append(row("centralized", results["centralized"]["final"]))
    print(f"\n{args.data} at {args.size}x{args.size}, {args.rounds} rounds, 3 IID clients; {counts}")
    print(f"{'run':<12} {'AUC':>6} {'AUC 95% CI':>16} {'acc':>6} {'sens':>6} {'spec':>6} {'thr':>6}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
