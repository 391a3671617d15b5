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
    empty_counts,
    grid_counts,
    hanley_mcneil_interval,
    pooled_auc,
    roc_curve,
    summary_at,
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


def test_youden_threshold_maximises_sensitivity_plus_specificity_in_the_middle_of_its_plateau() -> None:
    # J = 2/3 for thresholds in (0.612, 0.712]: sensitivity 2/3, specificity 1; grid points 0.615 to 0.71.
    assert choose_threshold(grid_counts(LABELS, SCORES), "youden") == pytest.approx(0.66)


def test_youden_threshold_of_a_separated_validation_set_keeps_away_from_both_classes() -> None:
    # Every threshold in (0.112, 0.312] separates the classes; the one nearest 0.5, 0.31, would lose a positive at
    # 0.30 on new data.
    separated = grid_counts(np.array([1, 1, 0, 0]), np.array([0.312, 0.362, 0.052, 0.112]))
    # J = 1/2 on (0.112, 0.212] and on (0.612, 0.712], equally wide (20 grid points): the tie goes nearest 0.5.
    two_plateaus = grid_counts(np.array([1, 1, 0, 0]), np.array([0.212, 0.712, 0.112, 0.612]))

    assert choose_threshold(separated, "youden") == pytest.approx(0.21)
    assert choose_threshold(two_plateaus, "youden") == pytest.approx(0.66)


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


def test_counts_survive_the_trip_through_a_json_message() -> None:
    counts = grid_counts(LABELS, SCORES)
    back = GridCounts.from_lists(counts.as_lists())
    assert back.positives.dtype == np.int64 and back.negatives.dtype == np.int64
    np.testing.assert_array_equal(back.positives, counts.positives)
    np.testing.assert_array_equal(back.negatives, counts.negatives)
    assert (back.n_positive, back.n_negative) == (3, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"n_positive": 2},
        {"n_negative": 2},
        {"positives": [3, 3, 4] + [0] * (len(GRID) - 3)},  # rises by one
        {"negatives": [3, 2, 3] + [0] * (len(GRID) - 3)},
    ],
)
def test_counts_that_cannot_come_from_a_grid_are_refused(change: dict[str, object]) -> None:
    good = grid_counts(LABELS, SCORES).as_lists()
    with pytest.raises(ValueError, match=r"^grid counts must start at the class totals and never increase$"):
        GridCounts.from_lists(good | change)


def test_empty_counts_are_zero_for_both_classes() -> None:
    empty = empty_counts()
    assert empty.positives.dtype == np.int64 and not empty.positives.any() and not empty.negatives.any()
    assert (empty.n_positive, empty.n_negative) == (0, 0)
    assert (empty + grid_counts(LABELS, SCORES)).n_negative == 3


def test_grid_counts_take_keras_columns_and_clip_out_of_range_scores() -> None:
    column = grid_counts(LABELS[:, None], SCORES[:, None])
    np.testing.assert_array_equal(column.positives, grid_counts(LABELS, SCORES).positives)
    assert column.positives.dtype == np.int64
    clipped = grid_counts(np.array([1, 0]), np.array([1.3, -0.2]))
    assert (clipped.positives[-1], clipped.negatives[0], clipped.negatives[1]) == (1, 1, 0)


def test_roc_points_refuse_a_single_class() -> None:
    with pytest.raises(ValueError, match=r"^a ROC curve needs both classes$"):
        pooled_auc(grid_counts(np.array([1, 1]), np.array([0.2, 0.9])))


def test_threshold_defaults_and_a_sensitivity_exactly_at_its_target() -> None:
    counts = grid_counts(LABELS, SCORES)
    assert choose_threshold(counts, "fixed") == 0.5
    assert choose_threshold(counts, "sensitivity") == pytest.approx(0.31)  # default target 0.9: all 3 positives
    assert choose_threshold(counts, "sensitivity", target=2 / 3) == pytest.approx(0.71)  # 2 of 3 reaches 2/3


def test_at_threshold_reports_the_grid_point_it_used() -> None:
    assert at_threshold(grid_counts(LABELS, SCORES), 0.5012).threshold == 0.5


def test_hanley_mcneil_interval_matches_the_hand_computed_variance() -> None:
    # AUC 0.75 with 2 + 2 samples: Q1 = 0.75 / 1.25 = 0.6, Q2 = 2 * 0.5625 / 1.75 = 0.642857;
    # variance (0.1875 + (0.6 - 0.5625) + (0.642857 - 0.5625)) / 4 = 0.076339
    low, high = hanley_mcneil_interval(0.75, 2, 2)
    assert low == pytest.approx(0.75 - 1.959964 * 0.076339**0.5, abs=1e-5)
    assert high == 1.0
    low3, _ = hanley_mcneil_interval(0.75, 3, 2)  # more positives: a narrower interval
    assert low3 > low


def test_summary_at_gives_every_clinical_number_and_the_auc_from_two_samples_per_class() -> None:
    labels, scores = np.array([1, 1, 0, 0]), np.array([0.812, 0.312, 0.412, 0.212])
    summary = summary_at(grid_counts(labels, scores), 0.4)
    # at 0.4: TP 0.812, FN 0.312, FP 0.412, TN 0.212; AUC: 0.812 beats both negatives, 0.312 beats one -> 0.75
    low, high = hanley_mcneil_interval(0.75, 2, 2)
    assert summary == pytest.approx(
        {
            "accuracy": 0.5,
            "sensitivity": 0.5,
            "specificity": 0.5,
            "precision": 0.5,
            "f1": 0.5,
            "tp": 1.0,
            "fp": 1.0,
            "tn": 1.0,
            "fn": 1.0,
            "n_positive": 2.0,
            "n_negative": 2.0,
            "auc": 0.75,
            "auc_ci_low": low,
            "auc_ci_high": high,
        }
    )
    one_negative = summary_at(grid_counts(np.array([1, 1, 0]), np.array([0.9, 0.6, 0.2])), 0.5)
    assert "auc" not in one_negative and one_negative["specificity"] == 1.0


def test_counts_sent_as_floats_become_integers_and_low_scores_still_check() -> None:
    # one positive and one negative below the first grid step: counts 1 at threshold 0, 0 from 0.005 on
    counts = grid_counts(np.array([1, 0]), np.array([0.001, 0.002]))
    message = {k: [float(x) for x in v] if isinstance(v, list) else v for k, v in counts.as_lists().items()}
    back = GridCounts.from_lists(message)
    assert back.positives.dtype == np.int64 and back.negatives.dtype == np.int64
    assert (back.positives[0], back.positives[1], back.negatives[0], back.negatives[1]) == (1, 0, 1, 0)
