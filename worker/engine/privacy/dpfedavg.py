"""Client-level DP-FedAvg on model deltas: clipping, Gaussian noise and adaptive clip norms, pure numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worker.engine.types import Weights

CLIP_SLACK = 1e-6  # relative: a clipped delta may exceed C by float rounding, not more


def global_norm(weights: Weights) -> float:
    """L2 norm of all layers taken as one vector, accumulated in float64."""
    return math.sqrt(sum(float(np.sum(np.square(w, dtype=np.float64))) for w in weights))


def clip(delta: Weights, clip_norm: float) -> tuple[Weights, float]:
    """``delta`` scaled by ``min(1, C / ||delta||)`` over all layers together, and its norm before clipping
    (McMahan et al., ICLR 2018). A delta at or under C, a zero one included, comes back unchanged, so there is no
    division by zero (Flower's clipping lacks the guard). Raises ValueError on a non-finite delta, which clipping
    would turn into NaNs."""
    if not 0 < clip_norm < math.inf:
        raise ValueError(f"clip norm must be positive and finite, got {clip_norm}")
    norm = global_norm(delta)
    if not math.isfinite(norm):
        raise ValueError("cannot clip a delta with NaN or infinite values")
    if norm <= clip_norm:
        return list(delta), norm
    scale = clip_norm / norm
    return [(w * scale).astype(w.dtype) for w in delta], norm


def _mean_of_clipped(clipped: Sequence[Weights], clip_norm: float) -> list[np.ndarray]:
    if not clipped:
        raise ValueError("cannot aggregate: no site sent an update")
    if max(global_norm(d) for d in clipped) > clip_norm * (1 + CLIP_SLACK):
        raise ValueError(f"a delta exceeds the clip norm {clip_norm}: clip it first")
    return [np.mean(np.stack(layer).astype(np.float64), axis=0) for layer in zip(*clipped, strict=True)]


def noised_mean(
    clipped: Sequence[Weights], clip_norm: float, noise_multiplier: float, rng: np.random.Generator
) -> Weights:
    """Unweighted mean of m clipped deltas plus N(0, (z C / m)^2) per coordinate: the Gaussian mechanism of
    DP-FedAvg (McMahan et al., ICLR 2018). Adding or removing one site moves the sum by at most C, so noise z C on the
    sum, divided by m with the sum, makes each round a Gaussian mechanism of noise multiplier z; m, the number of
    sites in the round, is treated as public, as in Flower's server-side DP wrappers. Layers keep their dtype."""
    mean = _mean_of_clipped(clipped, clip_norm)
    std = noise_multiplier * clip_norm / len(clipped)
    return [(m + rng.normal(0.0, std, m.shape)).astype(d.dtype) for m, d in zip(mean, clipped[0], strict=True)]


def with_distributed_noise(
    clipped: Weights, clip_norm: float, noise_multiplier: float, sites: int, rng: np.random.Generator
) -> Weights:
    """A site's clipped delta plus N(0, (z C)^2 / m) per coordinate, for secure aggregation: the server sees only the
    sum of the m sites' deltas, whose noise then has std z C, as in ``noised_mean``, so the accounting is the same.
    Honest only while sites do not collude with the server: each knows its own share of the noise and could
    subtract it, and a round with fewer than m sites carries less noise than accounted."""
    if sites < 1:
        raise ValueError(f"a round needs at least one site, got {sites}")
    if global_norm(clipped) > clip_norm * (1 + CLIP_SLACK):
        raise ValueError(f"the delta exceeds the clip norm {clip_norm}: clip it first")
    std = noise_multiplier * clip_norm / math.sqrt(sites)
    return [(d + rng.normal(0.0, std, d.shape)).astype(d.dtype) for d in clipped]


@dataclass(frozen=True)
class AdaptiveClipping:
    """Geometric clip-norm update toward a quantile of the sites' update norms (Andrew et al., NeurIPS 2021,
    "Differentially private learning with adaptive clipping").

    Each round each site reports the bit ``||delta|| <= C``; the server counts the bits with N(0, sigma_b²) noise
    (``count_stddev``), b̃ = noised count / m, and sets C ← C exp(-η (b̃ - gamma)). The count is a second Gaussian
    query; the paper keeps the total noise multiplier z by raising that of the deltas to
    ``delta_noise_multiplier(z)``. The paper suggests sigma_b = m / 20 for m expected sites.
    """

    count_stddev: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2

    def __post_init__(self) -> None:
        if not 0 <= self.target_quantile <= 1 or self.count_stddev <= 0 or self.learning_rate <= 0:
            raise ValueError("adaptive clipping needs a quantile in [0, 1], a positive count noise and learning rate")

    def delta_noise_multiplier(self, noise_multiplier: float) -> float:
        """z_Δ = (z^-2 - (2 sigma_b)^-2)^(-1/2): the centred bits b - 1/2 sum with sensitivity 1/2 (adding m/2
        back, m public, is post-processing), so the count query has noise multiplier 2 sigma_b; two Gaussian
        queries compose like one of multiplier (z_Δ^-2 + (2 sigma_b)^-2)^(-1/2), which equals z (TF Federated's
        adaptive clipping uses the same formula). Raises ValueError unless 0 < z < 2 sigma_b: at 2 sigma_b the
        count alone would spend the whole budget."""
        if not 0 < noise_multiplier < 2 * self.count_stddev:
            raise ValueError(
                f"noise multiplier {noise_multiplier} must be positive and under twice the count noise "
                f"{self.count_stddev}"
            )
        return float((noise_multiplier**-2 - (2 * self.count_stddev) ** -2) ** -0.5)

    def next_clip_norm(self, clip_norm: float, norms: Sequence[float], rng: np.random.Generator) -> float:
        """C for the next round from this round's unclipped update ``norms`` (one per site) under ``clip_norm``."""
        if not norms:
            raise ValueError("cannot adapt the clip norm: no site sent an update")
        count = sum(n <= clip_norm for n in norms) + rng.normal(0.0, self.count_stddev)
        return clip_norm * math.exp(-self.learning_rate * (count / len(norms) - self.target_quantile))


def _is_float(layer: np.ndarray) -> bool:
    return bool(np.issubdtype(layer.dtype, np.floating))


class ClientLevelDP:
    """DP-FedAvg as an aggregation step: new global = global + noised mean of the clipped site deltas (McMahan et
    al., ICLR 2018), with a fixed clip norm or an adaptive one. Account with ``PrivacyAccountant.client_level`` at
    ``noise_multiplier``; under adaptive clipping the deltas carry the larger ``delta_noise_multiplier`` so that
    deltas and count together cost the same. Integer layers (counters, seeds) are neither clipped, noised nor
    averaged: the global's values stay."""

    def __init__(self, clip_norm: float, noise_multiplier: float, adaptive: AdaptiveClipping | None = None) -> None:
        if not 0 < clip_norm < math.inf or noise_multiplier < 0:
            raise ValueError(f"need a positive clip norm and non-negative noise, got {clip_norm}, {noise_multiplier}")
        self._clip_norm = clip_norm
        self.noise_multiplier = noise_multiplier
        self.adaptive = adaptive
        self.delta_noise_multiplier = (
            adaptive.delta_noise_multiplier(noise_multiplier) if adaptive else noise_multiplier
        )

    @property
    def clip_norm(self) -> float:
        return self._clip_norm

    def aggregate(
        self, global_weights: Weights, updates: Sequence[tuple[Weights, int]], rng: np.random.Generator
    ) -> Weights:
        """New global weights from the sites' trained weights. Example counts are ignored: DP-FedAvg weighs sites
        equally, so one site moves the sum by at most C whatever its size."""
        floats = [i for i, w in enumerate(global_weights) if _is_float(w)]
        clipped, norms = [], []
        for weights, _ in updates:
            delta = [weights[i].astype(np.float64) - global_weights[i] for i in floats]
            delta_clipped, norm = clip(delta, self._clip_norm)
            clipped.append(delta_clipped)
            norms.append(norm)
        step = noised_mean(clipped, self._clip_norm, self.delta_noise_multiplier, rng)
        new = list(global_weights)
        for i, change in zip(floats, step, strict=True):
            new[i] = (global_weights[i] + change).astype(global_weights[i].dtype)
        if self.adaptive is not None:
            self._clip_norm = self.adaptive.next_clip_norm(self._clip_norm, norms, rng)
        return new

    def state(self) -> float:
        """The clip norm for the next round: all the checkpoint needs."""
        return self._clip_norm

    def restore(self, clip_norm: float) -> None:
        """Resume with a checkpointed clip norm; a fixed clip norm must match the one configured."""
        if self.adaptive is None and clip_norm != self._clip_norm:
            raise ValueError(f"the checkpoint's clip norm {clip_norm} is not the fixed {self._clip_norm}")
        if not 0 < clip_norm < math.inf:
            raise ValueError(f"clip norm must be positive and finite, got {clip_norm}")
        self._clip_norm = clip_norm
