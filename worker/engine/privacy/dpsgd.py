"""The numpy side of DP-SGD (Abadi et al., CCS 2016): clip factors, noise scale, Poisson batches, steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DpSgdSettings:
    """Sample-level DP-SGD at one site: each step adds N(0, (noise_multiplier * clip_norm)^2) to every coordinate.

    ``clip_norm`` bounds the L2 norm of one example's whole gradient (all layers together). Raises ValueError for
    a negative multiplier or a clip norm that is not positive.
    """

    noise_multiplier: float
    clip_norm: float

    def __post_init__(self) -> None:
        if not self.noise_multiplier >= 0:
            raise ValueError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0, got {self.clip_norm}")

    @property
    def noise_std(self) -> float:
        """Standard deviation of the Gaussian noise added to the sum of clipped gradients, per coordinate."""
        return self.noise_multiplier * self.clip_norm


def clip_factors(norms: Any, clip_norm: float, ops: Any = np) -> Any:
    """``min(1, C / norm)`` per example, written ``C / max(norm, C)`` so a zero norm gives 1, not a division by 0.

    Scaling example i's gradient by its factor bounds its norm by C. ``ops`` is any namespace with ``maximum``:
    numpy here, ``keras.ops`` inside the compiled training step, so both run this one formula.
    """
    return clip_norm / ops.maximum(norms, clip_norm)


def sampling_rate(batch_size: int, n: int) -> float:
    """q, the probability that one example joins a batch: batch_size / n, at most 1. Raises ValueError for n < 1."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need batch_size >= 1 and n >= 1, got {batch_size} and {n}")
    return min(1.0, batch_size / n)


def poisson_batch(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of one Poisson-sampled batch: each of the n examples joins independently with probability ``rate``.

    The batch size varies (it may be 0); the privacy analysis of DP-SGD by amplification by subsampling assumes
    exactly this sampling, not a shuffled pass over fixed-size batches.
    """
    return np.flatnonzero(rng.random(n) < rate)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """ceil(n / batch_size) steps, so an epoch samples each example about once (steps * q ~ 1), as Opacus counts."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need batch_size >= 1 and n >= 1, got {batch_size} and {n}")
    return math.ceil(n / batch_size)
