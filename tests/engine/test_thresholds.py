"""Grid confusion counts, their pooling across clients, and the operating threshold chosen on them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from worker.engine.thresholds import (
    GRID,
    GridCounts,
    at_threshold,
    choose_threshold,
    grid_counts,
    pooled_auc,
    roc_curve,
)

# Positives at 0.812, 0.712, 0.312 and negatives at 0.212, 0.412, 0.612 (no score on a grid point).
LABELS = np.array([1, 1, 1, 0, 0, 0])
SCORES = np.array([0.812, 0.712, 0.312, 0.212, 0.412, 0.612])


def k(threshold: float) -> int:
    return int(np.argmin(np.abs(GRID - threshold)))


def test_grid_counts_count_each_class_at_or_above_every_threshold() -> None:
    counts = grid_counts(LABELS, SCORES)
    assert (counts.n_positive, counts.n_negative) == (3, 3)
    assert counts.positives[k(0.0)] == 3 and counts.negatives[k(0.0)] == 3
    assert (counts.positives[k(0.5)], counts.negatives[k(0.5)]) == (2, 1)  # 0.812, 0.712 | 0.612
    assert (counts.positives[k(0.7)], counts.negatives[k(0.7)]) == (2, 0)
    assert (counts.positives[k(0.715)], counts.negatives[k(0.715)]) == (1, 0)
    assert counts.positives[k(1.0)] == 0 and counts.negatives[k(1.0)] == 0


def test_a_score_of_exactly_one_counts_at_the_last_threshold() -> None:
    counts = grid_counts(np.array([1, 0]), np.array([1.0, 0.0]))
    assert counts.positives[-1] == 1 and counts.negatives[1] == 0


def test_counts_of_two_clients_add_up_to_the_counts_of_their_union() -> None:
    rng = np.random.default_rng(4)
    labels, scores = rng.integers(0, 2, 400), rng.random(400)
    a, b = grid_counts(labels[:150], scores[:150]), grid_counts(labels[150:], scores[150:])
    union = grid_counts(labels, scores)
    both = a + b
    np.testing.assert_array_equal(both.positives, union.positives)
    np.testing.assert_array_equal(both.negatives, union.negatives)
    assert (both.n_positive, both.n_negative) == (union.n_positive, union.n_negative)


def test_pooled_auc_is_the_exact_auc_when_no_grid_bin_mixes_the_classes() -> None:
    assert pooled_auc(grid_counts(LABELS, SCORES)) == pytest.approx(roc_auc_score(LABELS, SCORES))  # 7/9


def test_pooled_auc_is_within_the_grid_resolution_of_the_exact_auc() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 2000)
    scores = np.clip(0.35 * labels + rng.normal(0.35, 0.2, 2000), 0, 1)
    assert abs(pooled_auc(grid_counts(labels, scores)) - roc_auc_score(labels, scores)) < 0.005


def test_youden_threshold_maximises_sensitivity_plus_specificity_nearest_one_half() -> None:
    # J = 2/3 for thresholds in (0.612, 0.712]: sensitivity 2/3, specificity 1; the grid point nearest 0.5 is 0.615.
    assert choose_threshold(grid_counts(LABELS, SCORES), "youden") == pytest.approx(0.615)


def test_target_sensitivity_takes_the_highest_threshold_that_still_reaches_it() -> None:
    counts = grid_counts(LABELS, SCORES)
    assert choose_threshold(counts, "sensitivity", target=0.9) == pytest.approx(0.31)  # all 3 positives >= 0.31
    assert choose_threshold(counts, "sensitivity", target=0.6) == pytest.approx(0.71)  # 2 of 3 positives
    assert choose_threshold(counts, "fixed", fixed=0.42) == 0.42


def test_metrics_at_a_threshold_come_from_the_counts() -> None:
    at = at_threshold(grid_counts(LABELS, SCORES), 0.5)
    assert (at.tp, at.fp, at.tn, at.fn) == (2, 1, 2, 1)
    assert (at.sensitivity, at.specificity, at.precision, at.accuracy) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 4 / 6))
    assert at.f1 == pytest.approx(2 / 3)


def test_counts_from_a_message_are_checked() -> None:
    good = grid_counts(LABELS, SCORES).as_lists()
    assert GridCounts.from_lists(good).n_positive == 3
    with pytest.raises(ValueError, match="start at the class totals"):
        GridCounts.from_lists(good | {"n_positive": 5})
    with pytest.raises(ValueError, match=f"need {len(GRID)} values"):
        GridCounts.from_lists(good | {"positives": [3, 2]})


def test_the_roc_curve_runs_from_origin_to_corner_without_repeated_points() -> None:
    fpr, tpr = roc_curve(grid_counts(LABELS, SCORES))
    # above 0.812: (0, 0); then 0.812 -> (0, 1/3), 0.712 -> (0, 2/3), 0.612 -> (1/3, 2/3),
    # 0.412 -> (2/3, 2/3), 0.312 -> (2/3, 1), 0.212 -> (1, 1)
    assert list(zip(fpr, tpr, strict=True)) == [
        (0.0, 0.0),
        (0.0, 0.3333),
        (0.0, 0.6667),
        (0.3333, 0.6667),
        (0.6667, 0.6667),
        (0.6667, 1.0),
        (1.0, 1.0),
    ]
