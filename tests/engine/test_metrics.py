"""Binary classification metrics at threshold 0.5 and the thinned ROC curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.engine.metrics import MAX_ROC_POINTS, binary_metrics, delong_interval, loss_and_accuracy, thin_roc

# 4 positives, 6 negatives; 0.5 counts as positive
POSITIVES = [0.9, 0.8, 0.5, 0.2]
NEGATIVES = [0.6, 0.55, 0.3, 0.4, 0.2, 0.05]


def test_binary_metrics_match_the_hand_counted_confusion_matrix() -> None:
    labels = np.array([1] * 4 + [0] * 6)
    metrics = binary_metrics(labels, np.array(POSITIVES + NEGATIVES))
    # TP = 3 (0.9, 0.8, 0.5), FN = 1 (0.2), FP = 2 (0.6, 0.55), TN = 4
    assert metrics.accuracy == pytest.approx(7 / 10)
    assert metrics.sensitivity == pytest.approx(3 / 4)
    assert metrics.specificity == pytest.approx(4 / 6)
    assert metrics.precision == pytest.approx(3 / 5)
    assert metrics.f1 == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))  # = 2/3
    # pairs (positive, negative) ranked right: 6 + 6 + 4 + (1 + a tie 0.5) out of 24
    assert metrics.auc == pytest.approx(17.5 / 24)
    loss = -(sum(math.log(p) for p in POSITIVES) + sum(math.log(1 - p) for p in NEGATIVES)) / 10
    assert metrics.loss == pytest.approx(loss)
    assert metrics.samples == 10


def test_perfectly_separated_predictions_have_auc_one() -> None:
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.6, 0.9]))
    assert metrics.auc == 1.0
    assert (metrics.accuracy, metrics.sensitivity, metrics.specificity, metrics.f1) == (1.0, 1.0, 1.0, 1.0)


def test_constant_predictions_have_auc_one_half() -> None:
    metrics = binary_metrics(np.array([0, 1, 1, 0, 1]), np.full(5, 0.7))
    assert metrics.auc == 0.5
    # everything predicted positive
    assert (metrics.sensitivity, metrics.specificity) == (1.0, 0.0)
    assert metrics.accuracy == pytest.approx(3 / 5)
    assert metrics.precision == pytest.approx(3 / 5)


def test_no_predicted_positives_give_zero_precision_instead_of_an_error() -> None:
    metrics = binary_metrics(np.array([0, 1]), np.array([0.1, 0.2]))
    assert (metrics.precision, metrics.sensitivity, metrics.f1) == (0.0, 0.0, 0.0)


def test_labels_of_one_class_only_raise() -> None:
    with pytest.raises(ValueError, match=r"^the test set needs both classes to compute AUC$"):
        binary_metrics(np.ones(5), np.linspace(0.1, 0.9, 5))


def test_roc_is_thinned_to_at_most_200_points_spanning_zero_to_one() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 5000)
    scores = np.clip(0.3 * labels + rng.random(5000) * 0.7, 0, 1)
    metrics = binary_metrics(labels, scores)
    roc = metrics.roc
    assert len(roc.fpr) == len(roc.tpr) == len(roc.thresholds)
    assert 100 < len(roc.fpr) <= MAX_ROC_POINTS
    assert (roc.fpr[0], roc.tpr[0]) == (0.0, 0.0)
    assert (roc.fpr[-1], roc.tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    assert all(math.isfinite(t) for t in roc.thresholds)


def test_short_roc_keeps_every_point() -> None:
    roc = thin_roc(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.75, 1.0]), np.array([np.inf, 0.6, 0.1]))
    assert roc.fpr == [0.0, 0.5, 1.0]
    assert roc.tpr == [0.0, 0.75, 1.0]
    assert roc.thresholds == [1.0, 0.6, 0.1]  # the infinite first threshold is shown as 1


def test_roc_points_are_rounded_to_five_decimals() -> None:
    roc = thin_roc(np.array([0.0, 1 / 3, 1.0]), np.array([0.0, 2 / 3, 1.0]), np.array([np.inf, 0.123456789, 0.1]))
    assert (roc.fpr, roc.tpr, roc.thresholds) == ([0.0, 0.33333, 1.0], [0.0, 0.66667, 1.0], [1.0, 0.12346, 0.1])


def test_loss_and_accuracy_work_on_a_single_class() -> None:
    loss, accuracy = loss_and_accuracy(np.array([1, 1, 1, 1]), np.array([0.9, 0.8, 0.4, 0.6]))
    assert accuracy == pytest.approx(3 / 4)
    assert loss == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.6)) / 4)


def test_client_accuracy_counts_a_probability_of_exactly_one_half_as_positive() -> None:
    loss, accuracy = loss_and_accuracy(np.array([1, 1]), np.array([0.5, 0.9]))
    assert accuracy == 1.0
    assert loss == pytest.approx(-(math.log(0.5) + math.log(0.9)) / 2)


# Keras predicts one probability per row, shape (N, 1); 3 of the 4 are right at threshold 0.5
LABELS = np.array([1, 0, 1, 1])
PREDICTED = np.array([[0.9], [0.2], [0.6], [0.3]])


def test_client_metrics_of_column_predictions_equal_those_of_flat_ones() -> None:
    loss = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.3)) / 4
    for labels, probabilities in [(LABELS, PREDICTED), (LABELS.reshape(-1, 1), PREDICTED.reshape(-1))]:
        got_loss, accuracy = loss_and_accuracy(labels, probabilities)
        assert accuracy == pytest.approx(3 / 4)  # not 8/16, as comparing a column with a row would give
        assert got_loss == pytest.approx(loss)


def test_test_metrics_of_column_predictions_equal_those_of_flat_ones() -> None:
    assert binary_metrics(LABELS.reshape(-1, 1), PREDICTED) == binary_metrics(LABELS, PREDICTED.reshape(-1))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_confidently_wrong_prediction_costs_log_1e7_whatever_the_float_type(dtype: type) -> None:
    # probabilities are clipped to [1e-7, 1 - 1e-7] in float64: each wrong answer costs -log(1e-7), about 16.12
    loss, accuracy = loss_and_accuracy(np.array([1, 0]), np.array([0.0, 1.0], dtype=dtype))
    assert accuracy == 0.0
    assert loss == pytest.approx(-math.log(1e-7))


def test_delong_interval_matches_the_hand_computed_variance() -> None:
    # Positives 0.35 and 0.8 outrank 1/2 and 2/2 negatives; negatives 0.1 and 0.4 sit below 2/2 and 1/2 positives.
    # AUC 0.75; variance 0.125/2 + 0.125/2 = 0.125; 0.75 +- 1.959964 * sqrt(0.125), clipped at 1.
    low, high = delong_interval(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert low == pytest.approx(0.75 - 1.959964 * 0.125**0.5, abs=1e-6)
    assert high == 1.0


def test_delong_interval_counts_ties_as_half() -> None:
    # Scores tied across classes: every comparison is 1/2, the AUC is 0.5 and both components have no spread.
    assert delong_interval(np.array([0, 0, 1, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == (0.5, 0.5)


def test_delong_interval_needs_two_samples_of_each_class() -> None:
    with pytest.raises(ValueError, match="needs two samples of each class, got 1 negative and 2 positive"):
        delong_interval(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.9]))


def test_binary_metrics_report_the_confusion_counts_and_the_interval() -> None:
    metrics = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.35, 0.8]))
    assert metrics.confusion == (1, 1, 1, 1)  # TN 0.1, FP 0.6, FN 0.35, TP 0.8
    assert metrics.scalars()["n_positive"] == 2 and metrics.scalars()["n_negative"] == 2
    assert metrics.auc_ci is not None and metrics.auc_ci[0] < metrics.auc < metrics.auc_ci[1]


def test_delong_interval_accepts_keras_column_predictions() -> None:
    labels, scores = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9])
    assert delong_interval(labels[:, None], scores[:, None]) == delong_interval(labels, scores)


def test_binary_metrics_count_at_the_threshold_they_are_given_and_report_it() -> None:
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.35, 0.3, 0.8])
    at_default, at_lower = binary_metrics(labels, scores), binary_metrics(labels, scores, threshold=0.3)
    assert (at_default.threshold, at_default.confusion) == (0.5, (2, 0, 1, 1))
    assert (at_lower.threshold, at_lower.confusion) == (0.3, (1, 1, 0, 2))  # 0.3 itself predicts PNEUMONIA
    assert at_lower.scalars()["threshold"] == 0.3
