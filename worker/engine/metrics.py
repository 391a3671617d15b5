"""Binary classification metrics on a test set, from predicted probabilities (scikit-learn, scipy)."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm, rankdata
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score, roc_curve

from worker.engine.thresholds import AtThreshold, GridCounts, at_threshold, hanley_mcneil_interval, pooled_auc
from worker.engine.thresholds import roc_curve as roc_curve_of_counts
from worker.engine.types import EvalMetrics, RocCurve

MAX_ROC_POINTS = 200


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


def delong_interval(labels: np.ndarray, probabilities: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the AUC from DeLong's variance (DeLong, DeLong & Clarke-Pearson, Biometrics 1988),
    with midranks as in Sun & Xu (IEEE Signal Process. Lett. 2014). Normal approximation, clipped to [0, 1].

    Raises ValueError unless both classes have at least two samples (the variance needs two of each).
    """
    y, p = _flat(labels, probabilities)  # clipped as for the AUC itself, so ties agree with it
    positives, negatives = p[y == 1], p[y == 0]
    m, n = len(positives), len(negatives)
    if min(m, n) < 2:
        raise ValueError(f"a DeLong interval needs two samples of each class, got {n} negative and {m} positive")
    ranks_all = rankdata(np.concatenate([positives, negatives]))
    above = (ranks_all[:m] - rankdata(positives)) / n  # per positive: share of negatives it outranks
    # per negative: share of positives it outranks; its spread equals that of the share above it, 1 minus this
    outranked = (ranks_all[m:] - rankdata(negatives)) / m
    auc = float(above.mean())
    spread = float(np.sqrt(above.var(ddof=1) / m + outranked.var(ddof=1) / n))
    z = float(norm.ppf(0.5 + level / 2))
    return max(0.0, auc - z * spread), min(1.0, auc + z * spread)


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> EvalMetrics:
    """Loss, AUC with its DeLong interval and ROC; accuracy, sensitivity, specificity, precision, F1 and the
    confusion counts at ``threshold`` (a probability >= it predicts PNEUMONIA)."""
    y, p = _flat(labels, probabilities)
    if len(np.unique(y)) < 2:
        raise ValueError("the test set needs both classes to compute AUC")
    predicted = (p >= threshold).astype(int)
    tn, fp, fn, tp = (int(n) for n in confusion_matrix(y, predicted, labels=[0, 1]).ravel())
    at = AtThreshold(threshold, tp, fp, tn, fn)  # the same ratios as for grid counts
    fpr, tpr, thresholds = roc_curve(y, p)
    return EvalMetrics(
        loss=float(log_loss(y, p, labels=[0, 1])),
        accuracy=at.accuracy,
        auc=float(roc_auc_score(y, p)),
        sensitivity=at.sensitivity,
        specificity=at.specificity,
        precision=at.precision,
        f1=at.f1,
        samples=len(y),
        roc=thin_roc(fpr, tpr, thresholds),
        auc_ci=delong_interval(y, p) if min(tp + fn, tn + fp) >= 2 else None,
        confusion=(tn, fp, fn, tp),
        threshold=at.threshold,
    )


def loss_and_accuracy(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """For a client's local test set, which may hold a single class (AUC undefined there)."""
    y, p = _flat(labels, probabilities)
    return float(log_loss(y, p, labels=[0, 1])), float(np.mean((p >= 0.5) == y))


def pooled_metrics(counts: GridCounts, threshold: float) -> EvalMetrics:
    """Federated evaluation: the global model's metrics from the sites' test sets, summed as grid counts.

    Only counts leave the sites, so the AUC is the grid's trapezoid (within the grid's resolution of the AUC over
    all predictions), its interval Hanley and McNeil's, and the loss is not known (NaN).
    """
    if min(counts.n_positive, counts.n_negative) == 0:
        raise ValueError("the sites' test sets together need both classes to compute AUC")
    at = at_threshold(counts, threshold)
    auc = pooled_auc(counts)
    fpr, tpr = roc_curve_of_counts(counts)
    return EvalMetrics(
        loss=float("nan"),
        accuracy=at.accuracy,
        auc=auc,
        sensitivity=at.sensitivity,
        specificity=at.specificity,
        precision=at.precision,
        f1=at.f1,
        samples=counts.n_positive + counts.n_negative,
        roc=RocCurve(fpr, tpr, []),
        auc_ci=hanley_mcneil_interval(auc, counts.n_positive, counts.n_negative),
        confusion=(at.tn, at.fp, at.fn, at.tp),
        threshold=at.threshold,
    )
