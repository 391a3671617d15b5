"""Federated evaluation: sites send grid counts of their own test sets; the server's pooled metrics must match a
direct computation over every prediction, which never leaves the sites."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from worker.engine.metrics import pooled_metrics
from worker.engine.thresholds import GRID, empty_counts, grid_counts


def test_pooled_auc_of_three_sites_equals_the_auc_of_all_their_predictions_within_the_grid() -> None:
    rng = np.random.default_rng(7)
    sites = []
    for n, shift in ((120, 0.8), (300, 1.2), (80, 0.5)):  # sites of different sizes and difficulty
        labels = rng.integers(0, 2, n)
        scores = 1 / (1 + np.exp(-(rng.normal(size=n) + shift * (2 * labels - 1))))
        sites.append((labels, scores))

    pooled = sum((grid_counts(y, p) for y, p in sites), empty_counts())
    metrics = pooled_metrics(pooled, 0.5)

    labels = np.concatenate([y for y, _ in sites])
    scores = np.concatenate([p for _, p in sites])
    step = float(GRID[1] - GRID[0])
    assert abs(metrics.auc - roc_auc_score(labels, scores)) < step  # trapezoid on a 201-point grid
    predicted = scores >= 0.5
    assert metrics.confusion == (
        int(np.sum(~predicted & (labels == 0))),
        int(np.sum(predicted & (labels == 0))),
        int(np.sum(~predicted & (labels == 1))),
        int(np.sum(predicted & (labels == 1))),
    )
    assert metrics.samples == len(labels)
    assert np.isnan(metrics.loss)  # counts carry no loss: shown as not measured, never as 0
    assert metrics.auc_ci is not None and metrics.auc_ci[0] < metrics.auc < metrics.auc_ci[1]
