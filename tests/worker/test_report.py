"""results.json's final metrics and the CLI's Table 3 (no TensorFlow)."""

from __future__ import annotations

from typing import Any

from worker.report import phase_summary, table3


def phase(**metrics: float) -> dict[str, Any]:
    base = {
        "loss": 0.3,
        "accuracy": 0.9,
        "sensitivity": 0.95,
        "specificity": 0.8,
        "threshold": 0.42,
        "auc": 0.96,
        "auc_ci_low": 0.94,
        "auc_ci_high": 0.98,
        "n_positive": 390,
        "n_negative": 234,
    }
    record = {"metrics": base | metrics, "wall_s": 10.0, "critical_path_s": 4.0}
    return phase_summary([record, record]) | {"startup_s": 6.0}


def test_final_metrics_carry_the_interval_the_threshold_and_n_per_class() -> None:
    final = phase()["final"]
    assert final["auc_ci"] == [0.94, 0.98]
    assert final["n"] == {"NORMAL": 234, "PNEUMONIA": 390}
    assert (final["threshold"], final["sensitivity"], final["specificity"]) == (0.42, 0.95, 0.8)


def test_table3_shows_the_clinical_columns_and_the_test_set_size() -> None:
    text = table3({"federated": phase(), "centralized": phase(auc=0.97)})
    lines = text.splitlines()
    header = "run loss acc sens spec thr AUC 95% CI rounds time s parallel s start-up s saved w/ start-up"
    assert lines[0].split() == header.split()
    # saved: (20 - 8) / 20; with start-up: (20 + 6 - (8 + 6)) / (20 + 6)
    federated = "federated 0.300 0.900 0.950 0.800 0.420 0.960 0.940-0.980 2 20.0 8.0 6.0 +60% +46%"
    assert lines[2].split() == federated.split()
    assert lines[3].split()[6] == "0.970"
    assert lines[4] == "common test set: 234 NORMAL, 390 PNEUMONIA"
