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


def _cell(metrics: dict[str, float], key: str, width: int = 7) -> str:
    return f"{metrics[key]:>{width}.3f}" if key in metrics else f"{'-':>{width}}"


def table1(name: str, results: dict[str, Any]) -> str:
    last = results["federated"]["rounds"][-1]
    lines = [
        f"Table 1 ({name}), round {last['round']}: each client's own model on its own test set (loss, acc), then "
        "the global model on it at the operating threshold (n = NORMAL/PNEUMONIA)",
        f"{'client':>6} {'status':>8} {'samples':>8} {'loss':>7} {'acc':>7} {'n':>9} "
        f"{'sens':>7} {'spec':>7} {'AUC':>7}",
    ]
    for c in last["clients"]:
        m = c["metrics"]
        n = f"{int(m['global.n_negative'])}/{int(m['global.n_positive'])}" if "global.n_negative" in m else "-"
        lines.append(
            f"{c['id']:>6} {c['status']:>8} {c['samples']:>8} {_cell(m, 'test.loss')} {_cell(m, 'test.accuracy')} "
            f"{n:>9} {_cell(m, 'global.sensitivity')} {_cell(m, 'global.specificity')} {_cell(m, 'global.auc')}"
        )
    return "\n".join(lines)


def table2(name: str, phase: dict[str, Any], unit: str) -> str:
    lines = [
        f"Table 2 ({name}): common test set per {unit}",
        f"{unit:>6} {'loss':>7} {'acc':>7} {'sens':>7} {'spec':>7} {'thr':>6} {'AUC':>7} {'95% CI':>13} {'wall s':>7}",
    ]
    for r in phase["rounds"]:
        m = r["metrics"]
        ci = f"{m['auc_ci_low']:.3f}-{m['auc_ci_high']:.3f}" if "auc_ci_low" in m else "-"
        lines.append(
            f"{r['round']:>6} {m['loss']:>7.3f} {m['accuracy']:>7.3f} {m['sensitivity']:>7.3f} "
            f"{m['specificity']:>7.3f} {m['threshold']:>6.3f} {m['auc']:>7.3f} {ci:>13} {r['wall_s']:>7.1f}"
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
    print("Table 3: the clinical columns at each run's operating threshold; times without and with start-up")
    print(
        f"{'setup':<10} {'loss':>7} {'acc':>7} {'sens':>7} {'spec':>7} {'AUC':>7} {'95% CI':>13} {'rounds':>7} "
        f"{'time s':>8} {'parallel s':>10} {'start-up s':>10} {'saved':>7} {'w/ start-up':>11}"
    )
    for name, phase in [*((s, runs[s]["federated"]) for s in setups), ("central", central)]:
        m = phase["final"]
        ci = "{:.3f}-{:.3f}".format(*m["auc_ci"]) if "auc_ci" in m else "-"
        saved = with_startup = ""
        if name != "central":
            reduction = time_reduction(phase["critical_path_s"], central["wall_time_s"])
            total = time_reduction(
                phase["critical_path_s"] + phase["startup_s"], central["wall_time_s"] + central["startup_s"]
            )
            saved = f"{reduction:+.0%}" if reduction is not None else ""
            with_startup = f"{total:+.0%}" if total is not None else ""
        print(
            f"{name:<10} {m['loss']:>7.3f} {m['accuracy']:>7.3f} {m['sensitivity']:>7.3f} {m['specificity']:>7.3f} "
            f"{m['auc']:>7.3f} {ci:>13} {phase['rounds_done']:>7d} {phase['wall_time_s']:>8.1f} "
            f"{phase['critical_path_s']:>10.1f} {phase['startup_s']:>10.1f} {saved:>7} {with_startup:>11}"
        )
    print(
        "time s: sequential wall time of the rounds; parallel s: slowest client + server work per round, as when "
        "the hospitals train at once; start-up s: data loading, model building and tracing (one process here, "
        "shared by both phases); saved: (centralized - parallel) / centralized, without and with start-up"
    )


if __name__ == "__main__":
    main()
