"""The study's Tables 1-3 on real chest X-rays: 3 and 10 clients, both intermittent approaches, centralized.

Reads kermany_train_64.npz (or --data FILE, e.g. kermany_train_subset_150.npz with --size 150) from
../shared/data, holds out a stratified test split as the common test set, and prints:
Table 1 (each client's loss/accuracy on its own test set), Table 2 (global test metrics per round)
and Table 3 (loss, accuracy, AUC, rounds, execution time, time reduction vs centralized).
Usage: python -m bench.paper [--rounds 5] [--size 64] [--data kermany_train_64.npz] [--setups 3,10,3-drop,3-keep]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from app.run_config import RunConfig
from bench.common import shared_file
from worker.local_run import run_local
from worker.report import time_reduction

# name -> (clients, approach, events); the schedules make one or two hospitals join late and others leave.
SETUPS: dict[str, tuple[int, str, list[dict[str, int]]]] = {
    "3": (3, "drop", []),
    "10": (10, "drop", []),
    "3-drop": (3, "drop", [{"client": 3, "joins": 2}, {"client": 2, "leaves": 4}]),
    "3-keep": (3, "keep-last", [{"client": 3, "joins": 2}, {"client": 2, "leaves": 4}]),
    "10-drop": (
        10,
        "drop",
        [{"client": 9, "joins": 2}, {"client": 10, "joins": 3}, {"client": 3, "leaves": 4}, {"client": 4, "leaves": 4}],
    ),
    "10-keep": (
        10,
        "keep-last",
        [{"client": 9, "joins": 2}, {"client": 10, "joins": 3}, {"client": 3, "leaves": 4}, {"client": 4, "leaves": 4}],
    ),
}


def config(data: Path, size: int, rounds: int, setup: str, centralized: bool) -> RunConfig:
    clients, approach, events = SETUPS[setup]
    return RunConfig.model_validate(
        {
            "name": f"paper-{setup}",
            "seed": 42,
            "data": {"train": {"format": "npz", "path": str(data)}, "test_fraction": 0.2, "image_size": size},
            "federation": {
                "clients": clients,
                "rounds": rounds,
                "client_test_fraction": 0.2,
                "intermittent": {"approach": approach, "events": [e for e in events if max(e.values()) <= rounds]},
            },
            "centralized": {"enabled": centralized},
        }
    )


def table1(name: str, results: dict[str, Any]) -> str:
    last = results["federated"]["rounds"][-1]
    lines = [
        f"Table 1 ({name}): each client's model on its own test set, round {last['round']}",
        f"{'client':>6} {'status':>8} {'samples':>8} {'loss':>7} {'acc':>7}",
    ]
    for c in last["clients"]:
        m = c["metrics"]
        loss = f"{m['test.loss']:.3f}" if "test.loss" in m else "-"
        acc = f"{m['test.accuracy']:.3f}" if "test.accuracy" in m else "-"
        lines.append(f"{c['id']:>6} {c['status']:>8} {c['samples']:>8} {loss:>7} {acc:>7}")
    return "\n".join(lines)


def table2(name: str, phase: dict[str, Any], unit: str) -> str:
    lines = [
        f"Table 2 ({name}): common test set per {unit}",
        f"{unit:>6} {'loss':>7} {'acc':>7} {'AUC':>7} {'sens':>7} {'spec':>7} {'wall s':>7}",
    ]
    for r in phase["rounds"]:
        m = r["metrics"]
        lines.append(
            f"{r['round']:>6} {m['loss']:>7.3f} {m['accuracy']:>7.3f} {m['auc']:>7.3f} "
            f"{m['sensitivity']:>7.3f} {m['specificity']:>7.3f} {r['wall_s']:>7.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--data", default="kermany_train_64.npz")
    parser.add_argument("--setups", default="3,10,3-drop,3-keep,10-drop,10-keep")
    args = parser.parse_args()
    data = shared_file(args.data)
    setups = args.setups.split(",")
    runs: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, setup in enumerate(setups):
            cfg = config(data, args.size, args.rounds, setup, centralized=i == 0)
            runs[setup] = run_local(cfg, Path(tmp) / setup)
            final = runs[setup]["federated"]["final"]
            print(
                f"[{time.perf_counter() - started:6.0f} s] {setup}: AUC {final['auc']:.3f} acc {final['accuracy']:.3f}",
                flush=True,
            )
    central = runs[setups[0]]["centralized"]
    print(
        f"\nData: {args.data} at {args.size}x{args.size}, 20% stratified common test split, "
        f"clients keep 20% of their share as their own test set; {args.rounds} rounds of 1 local epoch; "
        f"centralized {central['rounds_done']} epochs on the union of the clients' training data.\n"
    )
    for setup in setups:
        print(table1(setup, runs[setup]) + "\n")
    for setup in setups:
        print(table2(f"federated {setup}", runs[setup]["federated"], "round") + "\n")
    print(table2("centralized", central, "epoch") + "\n")
    print("Table 3")
    print(
        f"{'setup':<10} {'loss':>7} {'acc':>7} {'AUC':>7} {'rounds':>7} {'time s':>8} {'parallel s':>10} {'saved':>7}"
    )
    for name, phase in [*((s, runs[s]["federated"]) for s in setups), ("central", central)]:
        m = phase["final"]
        saved = time_reduction(phase["critical_path_s"], central["wall_time_s"]) if name != "central" else None
        print(
            f"{name:<10} {m['loss']:>7.3f} {m['accuracy']:>7.3f} {m['auc']:>7.3f} {phase['rounds_done']:>7d} "
            f"{phase['wall_time_s']:>8.1f} {phase['critical_path_s']:>10.1f} "
            f"{'' if saved is None else f'{saved:+.0%}':>7}"
        )
    print(
        "time s: sequential wall time in this process; parallel s: slowest client + server work per round, "
        "as when the hospitals train at once; saved: (centralized - parallel) / centralized"
    )


if __name__ == "__main__":
    main()
