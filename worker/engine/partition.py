"""Seeded partitions of a labelled data set into client shares; each returns index arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_CLIENT_SAMPLES = 2


def _split_class(indices: np.ndarray, fractions: Sequence[float]) -> list[np.ndarray]:
    cuts = np.round(np.cumsum(fractions)[:-1] * len(indices)).astype(int)
    return np.split(indices, cuts)


def _by_class(
    labels: np.ndarray, fractions_per_class: Sequence[Sequence[float]], rng: np.random.Generator
) -> list[np.ndarray]:
    k = len(fractions_per_class[0])
    shares: list[list[np.ndarray]] = [[] for _ in range(k)]
    for cls, fractions in zip(np.unique(labels), fractions_per_class, strict=True):
        members = rng.permutation(np.flatnonzero(labels == cls))
        for client, part in enumerate(_split_class(members, fractions)):
            shares[client].append(part)
    return [np.sort(np.concatenate(parts)) for parts in shares]


def sizes(labels: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified shares of the given fractions: every client sees both classes in the same ratio."""
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"fractions must be positive and add up to 1, got {list(fractions)}")
    n_classes = len(np.unique(labels))
    return _by_class(labels, [fractions] * n_classes, rng)


def iid(labels: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Stratified shares of equal size (within one sample per class)."""
    return sizes(labels, [1 / k] * k, rng)


def dirichlet(labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator, tries: int = 100) -> list[np.ndarray]:
    """Label skew: each class is spread over clients by proportions drawn from Dir(alpha) (Hsu et al., 2019).

    Draws again while some client would get fewer than two samples.
    """
    n_classes = len(np.unique(labels))
    for _ in range(tries):
        proportions = rng.dirichlet([alpha] * k, size=n_classes)
        shares = _by_class(labels, proportions.tolist(), rng)
        if min(len(s) for s in shares) >= MIN_CLIENT_SAMPLES:
            return shares
    raise ValueError(
        f"dirichlet(alpha={alpha}) left a client with fewer than {MIN_CLIENT_SAMPLES} samples in {tries} draws; "
        "use fewer clients, more data or a larger alpha"
    )


def holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (keep, held out) split; ``fraction`` of each class is held out."""
    if fraction <= 0:
        return np.arange(len(labels)), np.array([], dtype=int)
    keep, held = _by_class(labels, [[1 - fraction, fraction]] * len(np.unique(labels)), rng)
    return keep, held
