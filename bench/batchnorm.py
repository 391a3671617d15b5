"""Learning curves of the three BatchNorm modes (federated, local, keras) on real chest X-rays.

The engine's documented fix for FedAvg predicting one class: print test loss / accuracy / AUC per round
for each mode, federated and centralized, side by side.
Usage: python -m bench.batchnorm [--data pneumoniamnist_balanced_28.npz] [--size 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from app.run_config import RunConfig
from bench.common import shared_file
from worker.local_run import run_local

MODES = ("keras", "local", "federated")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="pneumoniamnist_balanced_28.npz")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args()
    data = shared_file(args.data)
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            cfg = RunConfig.model_validate(
                {
                    "seed": 1,
                    "data": {
                        "train": {"format": "npz", "path": str(data), "split": "train"},
                        "test": {"format": "npz", "path": str(data), "split": "test"},
                        "image_size": args.size,
                    },
                    "model": {"batchnorm": mode},
                    "federation": {"clients": args.clients, "rounds": args.rounds},
                    "centralized": {"enabled": True},
                }
            )
            runs[mode] = run_local(cfg, Path(tmp) / mode)
    test_n = runs["keras"]["federated"]["rounds"][0]["test_samples"]
    print(
        f"{args.data} at {args.size}x{args.size}, {args.clients} IID clients, RMSprop 1e-3, batch 32, "
        f"test set of {test_n} images; each cell: loss / accuracy / AUC"
    )
    for phase, unit in (("federated", "round"), ("centralized", "epoch")):
        print(f"\n{phase}\n{unit:>6} " + " ".join(f"{m:>24}" for m in MODES))
        for i in range(args.rounds):
            cells = []
            for mode in MODES:
                m = runs[mode][phase]["rounds"][i]["metrics"]
                cells.append(f"{m['loss']:.3f} / {m['accuracy']:.3f} / {m['auc']:.3f}")
            print(f"{i + 1:>6} " + " ".join(f"{c:>24}" for c in cells))


if __name__ == "__main__":
    main()
