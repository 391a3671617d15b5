"""Binary classification metrics on a test set, from predicted probabilities (scikit-learn)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score, roc_curve

from worker.engine.types import EvalMetrics, RocCurve

MAX_ROC_POINTS = 200


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else 0.0


def _flat(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat label and probability vectors (Keras predicts shape (N, 1)).

    Probabilities are clipped to [1e-7, 1 - 1e-7] in float64, so a confident wrong answer costs -log(1e-7) (about
    16.1) instead of infinity, whatever float type the model predicts in.
    """
    y = np.asarray(labels).reshape(-1).astype(int)
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    return y, p


def thin_roc(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray, limit: int = MAX_ROC_POINTS) -> RocCurve:
    """At most ``limit`` points, always keeping both ends so the curve spans (0,0)-(1,1)."""
    if len(fpr) > limit:
        keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, limit)).astype(int))
        fpr, tpr, thresholds = fpr[keep], tpr[keep], thresholds[keep]
    finite = np.where(np.isfinite(thresholds), thresholds, 1.0)
    return RocCurve(fpr.round(5).tolist(), tpr.round(5).tolist(), finite.round(5).tolist())


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> EvalMetrics:
    """Loss, accuracy, AUC, sensitivity, specificity, precision, F1 and ROC at threshold 0.5."""
    y, p = _flat(labels, probabilities)
    if len(np.unique(y)) < 2:
        raise ValueError("the test set needs both classes to compute AUC")
    predicted = (p >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, predicted, labels=[0, 1]).ravel()
    precision = _ratio(tp, tp + fp)
    sensitivity = _ratio(tp, tp + fn)
    fpr, tpr, thresholds = roc_curve(y, p)
    return EvalMetrics(
        loss=float(log_loss(y, p, labels=[0, 1])),
        accuracy=_ratio(tp + tn, len(y)),
        auc=float(roc_auc_score(y, p)),
        sensitivity=sensitivity,
        specificity=_ratio(tn, tn + fp),
        precision=precision,
        f1=_ratio(2 * precision * sensitivity, precision + sensitivity),
        samples=len(y),
        roc=thin_roc(fpr, tpr, thresholds),
    )


def loss_and_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """For a client's local test set, which may hold a single class (AUC undefined there)."""
    y, p = _flat(labels, probabilities)
    return float(log_loss(y, p, labels=[0, 1])), float(np.mean((p >= 0.5) == y))
