"""Pure numpy aggregation maths: FedAvg, pooled BatchNorm statistics and class weights from label counts."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worker.engine.types import Weights


def weighted_mean(updates: Sequence[tuple[Weights, int]]) -> Weights:
    """FedAvg: average each layer, weighted by client sample count (McMahan et al., 2017)."""
    counts = [n for _, n in updates]
    if not updates or sum(counts) <= 0:
        raise ValueError("cannot aggregate: no client reported training examples")
    layers = zip(*(w for w, _ in updates), strict=True)
    return [np.average(np.stack(ls), axis=0, weights=counts).astype(ls[0].dtype) for ls in layers]


def pooled_moments(stats: Sequence[tuple[Weights, int]]) -> Weights:
    """Pool per-client (mean, variance) pairs into the moments of the union of their data.

    ``stats`` holds, per client, ``[mean_1, var_1, mean_2, var_2, ...]`` and a sample count. The
    pooled variance adds the spread of the client means: E[x^2] - E[x]^2 over the union.
    """
    means = weighted_mean([(w[0::2], n) for w, n in stats])
    second = weighted_mean([([v + m**2 for m, v in zip(w[0::2], w[1::2], strict=True)], n) for w, n in stats])
    pooled: Weights = []
    for mean, sq in zip(means, second, strict=True):
        pooled += [mean, np.maximum(sq - mean**2, 0).astype(mean.dtype)]
    return pooled


def weights_nbytes(weights: Weights) -> int:
    return sum(int(w.nbytes) for w in weights)


def with_batchnorm_statistics(weights: Weights, slots: Sequence[int], stats: Weights) -> Weights:
    """``weights`` with each BatchNorm layer's moving mean and variance (at ``slot``, ``slot + 1``) from ``stats``."""
    merged = list(weights)
    for layer, slot in enumerate(slots):
        merged[slot], merged[slot + 1] = stats[2 * layer], stats[2 * layer + 1]
    return merged


def balanced_class_weight(label_counts: Sequence[tuple[int, int]]) -> dict[int, float]:
    """Loss weight ``n / (2 n_c)`` per class from the clients' (NORMAL, PNEUMONIA) counts, summed first, so
    every client weights its loss the same way ("balanced" in scikit-learn; King & Zeng, 2001). Only the counts
    leave the clients. Raises ValueError when a class is missing from every client."""
    normal, pneumonia = (sum(c[i] for c in label_counts) for i in (0, 1))
    if min(normal, pneumonia) <= 0:
        raise ValueError(f"balanced class weights need both classes, got {normal} NORMAL and {pneumonia} PNEUMONIA")
    total = normal + pneumonia
    return {0: total / (2 * normal), 1: total / (2 * pneumonia)}
