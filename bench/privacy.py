"""What privacy costs: AUC, accuracy and round time without DP, with sample-level DP at epsilon about 1, 3 and 8,
with client-level DP at the noise multipliers that give epsilon about 8 and 30, and with secure aggregation.

    python -m bench.privacy [--rounds 10] [--image-size 64] [--clients 3] [--only "no DP" "secure aggregation"]
                            [--repeat 2]

Real chest X-rays (kermany_train_64.npz, the official Kermany train split), 3 clients, a held-out 20% of it as the
common test set; every configuration runs in this process one after the other, so the times compare like with like; with
``--repeat n`` the configurations run n times in ABBA order (the first run of a process is slower) and the median
time per round is reported.
Noise multipliers are calibrated with dp-accounting (RDP, delta = 1e-5) for the number of rounds asked.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from app.run_config import RunConfig
from bench.common import shared_file
from worker.engine.experiment import prepare
from worker.engine.privacy.accounting import noise_for_epsilon
from worker.engine.privacy.dpsgd import sampling_rate, steps_per_epoch
from worker.local_run import run_local

DELTA = 1e-5


def base(rounds: int, image_size: int, clients: int = 3) -> dict[str, Any]:
    return {
        "name": "bench-privacy",
        "seed": 11,
        "data": {
            "train": {"format": "npz", "path": str(shared_file("kermany_train_64.npz"))},
            "test_fraction": 0.2,
            "image_size": image_size,
        },
        "model": {"batch_size": 32},
        "federation": {"clients": clients, "rounds": rounds, "client_test_fraction": 0.1},
        "centralized": {"enabled": False},
    }


def configurations(rounds: int, image_size: int, clients: int) -> dict[str, dict[str, Any]]:
    """Label -> privacy section; sample-level noise is calibrated on the smallest client (the largest epsilon)."""
    federation = prepare(RunConfig.model_validate(base(rounds, image_size, clients)))
    smallest = min(len(c.train) for c in federation.clients)
    q, steps = sampling_rate(32, smallest), steps_per_epoch(smallest, 32)

    def sample(epsilon: float) -> dict[str, Any]:
        z = noise_for_epsilon(epsilon, rounds, DELTA, sampling_rate=q, steps_per_round=steps)
        return {"dp": {"level": "sample", "noise_multiplier": round(z, 4), "delta": DELTA}}

    def client(epsilon: float) -> dict[str, Any]:
        z = noise_for_epsilon(epsilon, rounds, DELTA)
        return {"dp": {"level": "client", "noise_multiplier": round(z, 4), "clip_norm": 1.0, "delta": DELTA}}

    return {
        "no DP": {},
        "no DP, GroupNorm": {"_groupnorm": True},
        "secure aggregation": {"secure_aggregation": {"threshold": 2}},
        "sample DP, eps~1": sample(1),
        "sample DP, eps~3": sample(3),
        "sample DP, eps~8": sample(8),
        "client DP, eps~8": client(8),
        "client DP, eps~30": client(30),
    }


def run(label: str, privacy: dict[str, Any], args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    raw = base(args.rounds, args.image_size, args.clients)
    privacy = dict(privacy)
    if privacy.pop("_groupnorm", False):
        raw["model"] |= {"normalization": "groupnorm"}
    raw["privacy"] = privacy
    started = time.perf_counter()
    results = run_local(RunConfig.model_validate(raw), folder / label.replace(" ", "_").replace(",", ""))
    federated = results["federated"]
    last = federated["rounds"][-1]
    return {
        "label": label,
        "z": (privacy.get("dp") or {}).get("noise_multiplier"),
        "epsilon": last["privacy"]["epsilon"] if last.get("privacy") else None,
        "auc": federated["final"]["auc"],
        "accuracy": federated["final"]["accuracy"],
        "round_s": federated["critical_path_s"] / federated["rounds_done"],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="run only these configurations (by label)")
    parser.add_argument("--repeat", type=int, default=1, help="run every configuration this many times, ABBA order")
    args = parser.parse_args()
    chosen = {
        label: privacy
        for label, privacy in configurations(args.rounds, args.image_size, args.clients).items()
        if not args.only or label in args.only
    }
    labels = list(chosen)
    order = [label for k in range(args.repeat) for label in (labels if k % 2 == 0 else labels[::-1])]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory() as tmp:
        for k, label in enumerate(order):
            runs[label].append(run(label, chosen[label], args, Path(tmp) / str(k)))
            print(f"  {label}: done in {runs[label][-1]['wall_s']:.0f} s", flush=True)
    rows = [runs[label][0] | {"round_s": statistics.median(r["round_s"] for r in runs[label])} for label in labels]
    plain = {row["label"]: row["round_s"] for row in rows}
    print(
        f"\n{args.rounds} rounds, {args.clients} clients, {args.image_size} px, delta {DELTA}, "
        "test: held-out 20% of the split"
    )
    print(f"{'configuration':<20} {'z':>7} {'epsilon':>8} {'AUC':>6} {'acc':>6} {'s/round':>8} {'x no DP':>8}")
    for row in rows:
        dp_row = row["label"].startswith(("sample", "client"))
        reference = plain.get("no DP, GroupNorm" if dp_row else "no DP", row["round_s"])
        z = f"{row['z']:.3f}" if row["z"] else "-"
        eps = f"{row['epsilon']:.2f}" if row["epsilon"] is not None else "inf"
        print(
            f"{row['label']:<20} {z:>7} {eps:>8} {row['auc']:>6.3f} {row['accuracy']:>6.3f} "
            f"{row['round_s']:>8.2f} {row['round_s'] / reference:>8.2f}"
        )
    print("x no DP: time per round over no DP (DP rows: over no DP with GroupNorm, the model DP trains)")


if __name__ == "__main__":
    main()
