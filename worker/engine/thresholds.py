"""Evaluation without sharing predictions: confusion counts on a fixed threshold grid, pooled across clients.

A client sends, for each grid threshold t, how many of its positives and negatives score >= t. Sums of these
counts give the pooled ROC exactly at the grid's thresholds, and the operating threshold is chosen on them
(Youden's J or a target sensitivity), so no per-image prediction leaves a client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

GRID_STEPS = 200
GRID = np.linspace(0.0, 1.0, GRID_STEPS + 1)  # thresholds 0, 0.005, ..., 1


@dataclass(frozen=True)
class GridCounts:
    """``positives[k]``/``negatives[k]``: samples of each class scoring >= ``GRID[k]``; totals per class."""

    positives: np.ndarray  # (len(GRID),) int64, non-increasing
    negatives: np.ndarray
    n_positive: int
    n_negative: int

    def __add__(self, other: GridCounts) -> GridCounts:
        return GridCounts(
            self.positives + other.positives,
            self.negatives + other.negatives,
            self.n_positive + other.n_positive,
            self.n_negative + other.n_negative,
        )

    def as_lists(self) -> dict[str, list[int] | int]:
        return {
            "positives": self.positives.tolist(),
            "negatives": self.negatives.tolist(),
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
        }

    @classmethod
    def from_lists(cls, raw: dict[str, list[int] | int]) -> GridCounts:
        positives, negatives = np.asarray(raw["positives"], np.int64), np.asarray(raw["negatives"], np.int64)
        n_positive, n_negative = int(raw["n_positive"]), int(raw["n_negative"])  # type: ignore[arg-type]
        if positives.shape != GRID.shape or negatives.shape != GRID.shape:
            raise ValueError(f"grid counts need {len(GRID)} values per class")
        increasing = np.any(np.diff(positives) > 0) or np.any(np.diff(negatives) > 0)
        if positives[0] != n_positive or negatives[0] != n_negative or increasing:
            raise ValueError("grid counts must start at the class totals and never increase")
        return cls(positives, negatives, n_positive, n_negative)


def empty_counts() -> GridCounts:
    zeros = np.zeros(len(GRID), np.int64)
    return GridCounts(zeros, zeros.copy(), 0, 0)


def grid_counts(labels: np.ndarray, probabilities: np.ndarray) -> GridCounts:
    """Count, per grid threshold, the positives and negatives whose probability is >= the threshold."""
    y = np.asarray(labels).reshape(-1).astype(int)
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), 0.0, 1.0)
    highest = np.searchsorted(GRID, p, side="right") - 1  # index of the largest threshold <= p
    per_class = []
    for cls in (1, 0):
        reached = np.bincount(highest[y == cls], minlength=len(GRID))
        per_class.append(np.cumsum(reached[::-1])[::-1].astype(np.int64))
    return GridCounts(per_class[0], per_class[1], int((y == 1).sum()), int((y == 0).sum()))


def roc_points(counts: GridCounts) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every grid threshold, from (1, 1) at threshold 0 down to (0, 0) above 1."""
    if min(counts.n_positive, counts.n_negative) == 0:
        raise ValueError("a ROC curve needs both classes")
    fpr = np.append(counts.negatives / counts.n_negative, 0.0)
    tpr = np.append(counts.positives / counts.n_positive, 0.0)
    return fpr, tpr


def roc_curve(counts: GridCounts) -> tuple[list[float], list[float]]:
    """(FPR, TPR) from (0, 0) to (1, 1), rounded to 4 decimals, without the repeated points a grid gives."""
    fpr, tpr = roc_points(counts)
    points = list(dict.fromkeys(zip(np.round(fpr[::-1], 4).tolist(), np.round(tpr[::-1], 4).tolist(), strict=True)))
    return [p[0] for p in points], [p[1] for p in points]


def pooled_auc(counts: GridCounts) -> float:
    """Trapezoidal area under the grid ROC; equals the exact AUC when no bin mixes positives and negatives."""
    fpr, tpr = roc_points(counts)
    return float(np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2))


ThresholdMethod = Literal["youden", "sensitivity", "fixed"]


def choose_threshold(counts: GridCounts, method: ThresholdMethod, *, target: float = 0.9, fixed: float = 0.5) -> float:
    """The operating threshold from validation counts.

    ``youden`` maximises sensitivity + specificity - 1 (Youden, Cancer 1950). A small validation set that the
    model separates well gives a plateau of thresholds with the same J; the middle of the widest plateau is taken
    (ties: the one nearest 0.5), the threshold farthest from the validation errors on either side and so the one
    that a shift of the scores on new data moves least across. ``sensitivity`` takes the highest threshold whose
    sensitivity is still >= ``target`` (the most specific one that misses few cases); ``fixed`` returns ``fixed``.
    Raises ValueError without both classes.
    """
    if method == "fixed":
        return fixed
    fpr, tpr = roc_points(counts)
    fpr, tpr = fpr[:-1], tpr[:-1]
    if method == "youden":
        j = tpr - fpr
        best = np.flatnonzero(np.isclose(j, j.max()))
        plateaus = np.split(best, np.flatnonzero(np.diff(best) > 1) + 1)
        middles = [GRID[(p[0] + p[-1]) // 2] for p in plateaus]
        widest = max(len(p) for p in plateaus)
        return float(
            min((m for m, p in zip(middles, plateaus, strict=True) if len(p) == widest), key=lambda m: abs(m - 0.5))
        )
    return float(GRID[np.flatnonzero(tpr >= target).max()])


@dataclass(frozen=True)
class AtThreshold:
    """Confusion counts and the clinical metrics at one grid threshold."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def accuracy(self) -> float:
        total = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / total if total else 0.0

    @property
    def f1(self) -> float:
        both = self.precision + self.sensitivity
        return 2 * self.precision * self.sensitivity / both if both else 0.0


def at_threshold(counts: GridCounts, threshold: float) -> AtThreshold:
    """The confusion at the grid threshold nearest ``threshold`` (chosen thresholds are grid points)."""
    k = int(np.argmin(np.abs(GRID - threshold)))
    tp, fp = int(counts.positives[k]), int(counts.negatives[k])
    return AtThreshold(float(GRID[k]), tp, fp, counts.n_negative - fp, counts.n_positive - tp)


def hanley_mcneil_interval(auc: float, n_positive: int, n_negative: int, z: float = 1.959964) -> tuple[float, float]:
    """95% interval of an AUC known only with its class sizes (Hanley & McNeil, Radiology 1982), for a client's
    own test set, where only counts leave the client and DeLong's per-sample components are not available."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc**2) + (n_negative - 1) * (q2 - auc**2)) / (
        n_positive * n_negative
    )
    spread = z * float(np.sqrt(max(variance, 0.0)))
    return max(0.0, auc - spread), min(1.0, auc + spread)


def summary_at(counts: GridCounts, threshold: float) -> dict[str, float]:
    """The clinical metrics of one test part at ``threshold``, with the grid AUC and its interval when both
    classes are present (a client's own test set may hold one class only)."""
    at = at_threshold(counts, threshold)
    values = {
        "accuracy": at.accuracy,
        "sensitivity": at.sensitivity,
        "specificity": at.specificity,
        "precision": at.precision,
        "f1": at.f1,
        "tp": float(at.tp),
        "fp": float(at.fp),
        "tn": float(at.tn),
        "fn": float(at.fn),
        "n_positive": float(counts.n_positive),
        "n_negative": float(counts.n_negative),
    }
    if min(counts.n_positive, counts.n_negative) >= 2:
        auc = pooled_auc(counts)
        low, high = hanley_mcneil_interval(auc, counts.n_positive, counts.n_negative)
        values |= {"auc": auc, "auc_ci_low": low, "auc_ci_high": high}
    return values
