"""Round results as JSON records, results.json and the study's Table 3 as text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.engine.types import RoundResult

Record = dict[str, Any]


def round_record(result: RoundResult) -> Record:
    """A JSON-ready record of one round (federated) or epoch (centralized)."""
    return {
        "round": result.round,
        "metrics": result.metrics.scalars(),
        "test_samples": result.metrics.samples,
        "roc": {"fpr": result.metrics.roc.fpr, "tpr": result.metrics.roc.tpr},
        "clients": [
            {
                "id": c.client_id,
                "status": str(c.status),
                "samples": c.samples,
                "event": str(c.event) if c.event else None,
                "metrics": dict(c.metrics),
                "error": c.error,
            }
            for c in result.clients
        ],
        "wall_s": result.wall_s,
        "train_s": result.train_s,
        "calibration_s": result.calibration_s,
        "aggregation_s": result.aggregation_s,
        "evaluation_s": result.evaluation_s,
        "critical_path_s": result.critical_path_s,
        "bytes_sent": result.bytes_sent,
        "bytes_received": result.bytes_received,
    }


def phase_summary(records: Sequence[Record]) -> Record:
    """Final metrics plus times summed over rounds, so a resumed run counts each round once."""
    return {
        "final": records[-1]["metrics"] if records else None,
        "best_auc": max((r["metrics"]["auc"] for r in records), default=None),
        "rounds_done": len(records),
        "wall_time_s": sum(r["wall_s"] for r in records),
        "critical_path_s": sum(r["critical_path_s"] for r in records),
        "rounds": list(records),
    }


def time_reduction(federated_s: float, centralized_s: float) -> float | None:
    """Share of the centralized time saved by the federated run (the study's Table 3)."""
    return (centralized_s - federated_s) / centralized_s if centralized_s > 0 else None


def table3(results: Record) -> str:
    """The study's Table 3: test loss, accuracy, AUC, rounds, execution time, time reduction."""
    header = (
        f"{'run':<12} {'loss':>7} {'acc':>7} {'AUC':>7} {'rounds':>7} {'time s':>9} {'parallel s':>11} {'saved':>7}"
    )
    lines = [header, "-" * len(header)]
    central = results.get("centralized")
    for name in ("federated", "centralized"):
        phase = results.get(name)
        if not phase or not phase["final"]:
            continue
        final = phase["final"]
        saved = ""
        if name == "federated" and central and central["final"]:
            reduction = time_reduction(phase["critical_path_s"], central["wall_time_s"])
            saved = f"{reduction:+.0%}" if reduction is not None else ""
        lines.append(
            f"{name:<12} {final['loss']:>7.3f} {final['accuracy']:>7.3f} {final['auc']:>7.3f} "
            f"{phase['rounds_done']:>7d} {phase['wall_time_s']:>9.1f} {phase['critical_path_s']:>11.1f} {saved:>7}"
        )
    lines.append(
        "parallel s: slowest client + server work per round, as when every hospital trains at once; "
        "saved: centralized time minus that, as a share of the centralized time"
    )
    return "\n".join(lines)
