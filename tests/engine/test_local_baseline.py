"""A site's local-only baseline from the grid counts it sends: its threshold chosen on its own validation split,
its metrics on its own test split, or why it has none."""

from __future__ import annotations

import math
import uuid
from typing import Any

import numpy as np
import pytest

from app.run_config import RunConfig
from app.sites.protocol import TaskResult
from worker.engine.thresholds import grid_counts
from worker.engine.types import ClientFailure
from worker.site_baselines import local_baseline
from worker.site_executor import SiteSlot

SLOT = SiteSlot("2", uuid.uuid4(), "hospital-b", "chest", {"train": {"negative": 30, "positive": 50}})
# Validation: positives at 0.812 and 0.712, negatives at 0.612 and 0.212: Youden's J is 1 for every threshold in
# (0.612, 0.712], whose middle grid point is 0.66.
VALIDATION = grid_counts(np.array([1, 1, 0, 0]), np.array([0.812, 0.712, 0.612, 0.212]))
# Test: positives at 0.9, 0.7 and 0.3, negatives at 0.55, 0.2 and 0.1 (no two classes in one grid bin).
TEST = grid_counts(np.array([1, 1, 1, 0, 0, 0]), np.array([0.9, 0.7, 0.3, 0.55, 0.2, 0.1]))


def _config(threshold: dict[str, Any] | None = None) -> RunConfig:
    sites = [{"site": "hospital-a", "dataset": "chest"}, {"site": "hospital-b", "dataset": "chest"}]
    raw: dict[str, Any] = {"federation": {"sites": sites, "rounds": 4, "local_epochs": 2}, "baselines": ["local"]}
    return RunConfig.model_validate(raw | ({"evaluation": {"threshold": threshold}} if threshold else {}))


def _answer(**metrics: float) -> TaskResult:
    return TaskResult(num_examples=80, metrics=metrics, validation=VALIDATION.as_lists(), test=TEST.as_lists())


def test_the_local_model_is_judged_at_the_threshold_its_own_validation_split_chooses() -> None:
    row = local_baseline(_config(), SLOT, _answer(**{"train.loss": 0.3}))

    assert (row["client"], row["site"], row["dataset"], row["samples"]) == ("2", "hospital-b", "chest", 80)
    assert row["epochs"] == 8  # rounds x local_epochs, as the federated model trained
    assert row["threshold"] == pytest.approx(0.66)
    metrics = row["metrics"]
    # at 0.66: positives 0.9 and 0.7 found, 0.3 missed; no negative reaches it
    assert (metrics["tp"], metrics["fn"], metrics["fp"], metrics["tn"]) == (2, 1, 0, 3)
    assert metrics["sensitivity"] == pytest.approx(2 / 3)
    assert metrics["specificity"] == 1.0
    assert metrics["accuracy"] == pytest.approx(5 / 6)
    assert metrics["auc"] == pytest.approx(8 / 9)  # 8 of the 9 positive-negative pairs ranked right
    assert row["train"] == {"train.loss": 0.3}
    assert "error" not in row


def test_a_fixed_threshold_applies_to_the_local_model_too() -> None:
    row = local_baseline(_config({"method": "fixed", "value": 0.5}), SLOT, _answer())

    assert row["threshold"] == 0.5
    assert (row["metrics"]["fp"], row["metrics"]["specificity"]) == (1, pytest.approx(2 / 3))  # 0.55 now counts


def test_a_validation_split_with_one_class_falls_back_to_the_configured_value() -> None:
    one_class = grid_counts(np.array([1, 1]), np.array([0.8, 0.7]))
    answer = _answer().model_copy(update={"validation": one_class.as_lists()})

    assert local_baseline(_config(), SLOT, answer)["threshold"] == 0.5


def test_a_site_that_failed_has_its_reason_and_no_metrics() -> None:
    failure = ClientFailure("2", "site hospital-b did not answer the local task within 600 s")

    row = local_baseline(_config(), SLOT, failure)

    assert row == {
        "client": "2",
        "site": "hospital-b",
        "dataset": "chest",
        "epochs": 8,
        "error": "site hospital-b did not answer the local task within 600 s",
    }


def test_an_empty_test_split_or_malformed_counts_are_reasons_not_metrics() -> None:
    empty = grid_counts(np.array([], int), np.array([]))
    broken = TEST.as_lists() | {"n_positive": 5}  # totals that disagree with the counts

    no_test = local_baseline(_config(), SLOT, _answer().model_copy(update={"test": empty.as_lists()}))
    malformed = local_baseline(_config(), SLOT, _answer().model_copy(update={"test": broken}))

    assert no_test["error"] == "the site's test split is empty: nothing to judge the model on"
    assert malformed["error"].startswith("the site sent malformed counts")
    assert "metrics" not in no_test and "metrics" not in malformed


def test_a_diverged_training_loss_is_stored_as_missing() -> None:
    row = local_baseline(_config(), SLOT, _answer(**{"train.loss": math.nan, "train.accuracy": 0.5}))

    assert row["train"] == {"train.loss": None, "train.accuracy": 0.5}
