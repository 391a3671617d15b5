"""Round results as JSON records, results.json and the study's Table 3 as text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.engine.types import RoundPrivacy, RoundResult

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
                "roc": {"fpr": c.roc.fpr, "tpr": c.roc.tpr} if c.roc else None,
            }
            for c in result.clients
        ],
        "wall_s": result.wall_s,
        "train_s": result.train_s,
        "calibration_s": result.calibration_s,
        "aggregation_s": result.aggregation_s,
        "evaluation_s": result.evaluation_s,
        "startup_s": result.startup_s,
        "critical_path_s": result.critical_path_s,
        "bytes_sent": result.bytes_sent,
        "bytes_received": result.bytes_received,
        "privacy": _privacy(result.privacy),
    }


def _privacy(privacy: RoundPrivacy | None) -> Record | None:
    if privacy is None:
        return None
    return {
        "epsilon": privacy.epsilon,
        "delta": privacy.delta,
        "noise_multiplier": privacy.noise_multiplier,
        "clip_norm": privacy.clip_norm,
        "sites": dict(privacy.per_client),
    }


def final_metrics(metrics: Record) -> Record:
    """The last round's metrics with the AUC interval as a pair and n per class, as results.json shows them."""
    final = dict(metrics)
    if "auc_ci_low" in final:
        final["auc_ci"] = [final["auc_ci_low"], final["auc_ci_high"]]
    if "n_positive" in final:
        final["n"] = {"NORMAL": int(final["n_negative"]), "PNEUMONIA": int(final["n_positive"])}
    return final


def phase_summary(records: Sequence[Record]) -> Record:
    """Final metrics plus times summed over rounds, so a resumed run counts each round once."""
    return {
        "final": final_metrics(records[-1]["metrics"]) if records else None,
        "best_auc": max((r["metrics"]["auc"] for r in records), default=None),
        "rounds_done": len(records),
        "wall_time_s": sum(r["wall_s"] for r in records),
        "critical_path_s": sum(r["critical_path_s"] for r in records),
        "rounds": list(records),
    }


def time_reduction(federated_s: float, centralized_s: float) -> float | None:
    """Share of the centralized time saved by the federated run (the study's Table 3)."""
    return (centralized_s - federated_s) / centralized_s if centralized_s > 0 else None


def _saved(federated: Record, central: Record, with_startup: bool) -> str:
    """Time reduction of the federated run's parallel time against the baseline's wall time, like with like."""
    fed_s, central_s = federated["critical_path_s"], central["wall_time_s"]
    if with_startup:
        fed_s, central_s = fed_s + federated.get("startup_s", 0.0), central_s + central.get("startup_s", 0.0)
    reduction = time_reduction(fed_s, central_s)
    return f"{reduction:+.0%}" if reduction is not None else ""


def table3(results: Record) -> str:
    """The study's Table 3 with the clinical columns: test loss, accuracy, sensitivity and specificity at the
    operating threshold, AUC with its 95% DeLong interval, rounds, and times compared like with like: the
    rounds' time (sequential wall and parallel) without the one-off start-up, the start-up, and the time
    reduction without and with it."""
    header = (
        f"{'run':<12} {'loss':>6} {'acc':>6} {'sens':>6} {'spec':>6} {'thr':>5} {'AUC':>6} {'95% CI':>13} "
        f"{'rounds':>6} {'time s':>8} {'parallel s':>10} {'start-up s':>10} {'saved':>6} {'w/ start-up':>11}"
    )
    lines = [header, "-" * len(header)]
    central = results.get("centralized")
    for name in ("federated", "centralized"):
        phase = results.get(name)
        if not phase or not phase["final"]:
            continue
        final = phase["final"]
        saved = with_startup = ""
        if name == "federated" and central and central["final"]:
            saved, with_startup = _saved(phase, central, False), _saved(phase, central, True)
        ci = "{:.3f}-{:.3f}".format(*final["auc_ci"]) if "auc_ci" in final else "-"
        lines.append(
            f"{name:<12} {final['loss']:>6.3f} {final['accuracy']:>6.3f} {final['sensitivity']:>6.3f} "
            f"{final['specificity']:>6.3f} {final.get('threshold', 0.5):>5.3f} {final['auc']:>6.3f} {ci:>13} "
            f"{phase['rounds_done']:>6d} {phase['wall_time_s']:>8.1f} {phase['critical_path_s']:>10.1f} "
            f"{phase.get('startup_s', 0.0):>10.1f} {saved:>6} {with_startup:>11}"
        )
    if central and central["final"] and "n" in central["final"]:
        n = central["final"]["n"]
        lines.append(f"common test set: {n['NORMAL']:,} NORMAL, {n['PNEUMONIA']:,} PNEUMONIA")
    lines.append(
        "sens/spec/acc at the operating threshold thr. time s: the rounds one after another; parallel s: slowest "
        "client + server work per round, as when every hospital trains at once; start-up s: data loading, model "
        "building and tracing, once per run. saved: the baseline's time minus the federated parallel time, as a "
        "share of the baseline's; w/ start-up: the same with both start-ups added."
    )
    return "\n".join(lines)
