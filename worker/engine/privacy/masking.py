"""Fixed-point encoding over Z_2^32, the ChaCha20 mask generator and the parameters of secure aggregation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

SEED_BYTES = 32
COMPLETE_GRAPH_SITES = 10  # up to this many sites every pair masks; above, each site has ``degree`` neighbours
_INT32_MAX = 2**31 - 1
_HALF_STEP = 0.5 + 2**-16  # rint's half step, plus room for float64 rounding of w/cap * x * scale (< 2^-20 step)
_NONCE = bytes(16)  # each ChaCha20 key (a fresh seed) expands one stream only, so a fixed nonce is safe


@dataclass(frozen=True)
class SecAggParams:
    """Settings of secure aggregation shared by the server and every site of a round.

    ``threshold``: shares needed to recover a site's secrets (t of Bonawitz et al., 2017); a round fails when
    fewer survive. ``clip_range``: each coordinate is clipped to [-clip_range, clip_range] before encoding.
    ``weight_cap``: sample counts above it count as it (keeps sums in 32 bits and bounds one site's influence).
    ``neighbours``: pairwise-mask neighbours per site (SecAgg+, Bell et al., 2020); None: every other site up to
    10 sites, above that max(2 * threshold, ceil(3 log2 n)), logarithmic as in SecAgg+, and twice the threshold so
    that a site stays recoverable while half of its neighbours drop.
    """

    threshold: int
    clip_range: float = 8.0
    weight_cap: int = 10_000
    neighbours: int | None = None

    def __post_init__(self) -> None:
        if self.threshold < 2:
            raise ValueError(f"threshold must be at least 2 (one share would be the secret), got {self.threshold}")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0):
            raise ValueError(f"clip_range must be positive and finite, got {self.clip_range}")
        if self.weight_cap < 1:
            raise ValueError(f"weight_cap must be at least 1, got {self.weight_cap}")
        if self.neighbours is not None and self.neighbours + 1 < self.threshold:
            raise ValueError(f"{self.neighbours} neighbours hold too few shares for threshold {self.threshold}")

    def degree(self, sites: int) -> int:
        """Neighbours per site in a round of ``sites`` sites; a site shares its secrets among them and itself."""
        if self.neighbours is None and sites <= COMPLETE_GRAPH_SITES:
            return sites - 1
        wanted = self.neighbours
        if wanted is None:
            wanted = max(2 * self.threshold, math.ceil(3 * math.log2(sites)))
        return min(sites - 1, wanted + wanted % 2)  # the ring graph has even degree below n - 1

    def check(self, sites: int) -> None:
        """Raises ValueError unless a round of ``sites`` sites can run and its sums fit in 32 bits."""
        if not self.threshold <= self.degree(sites) + 1:
            raise ValueError(f"threshold {self.threshold} exceeds the {self.degree(sites) + 1} share holders per site")
        if sites * self.weight_cap >= 2**32:
            raise ValueError(f"{sites} sites of weight up to {self.weight_cap} overflow the 32-bit weight sum")
        if self.scale(sites) < 1:
            raise ValueError(f"clip_range {self.clip_range} leaves no precision for {sites} sites in 32 bits")

    def scale(self, sites: int) -> float:
        """Fixed-point steps per unit: the largest s with sites * (s * clip_range + 1/2) < 2^31, so that the sum of
        every site's encoding never wraps around the signed 32-bit range."""
        return (_INT32_MAX - sites) / (sites * self.clip_range)

    def error_bound(self, sites: int, summed: int, total_weight: int) -> float:
        """Largest error of the decoded mean, per coordinate, on clipped inputs.

        Each of the ``summed`` encodings rounds by at most half a step of 1/scale(``sites``) in units of
        weight / weight_cap, so the mean of total weight W errs by at most weight_cap * summed / (2 * scale * W).
        """
        return self.weight_cap * summed * _HALF_STEP / (self.scale(sites) * total_weight)


def encode(vector: np.ndarray, weight: int, params: SecAggParams, sites: int) -> np.ndarray:
    """``round(clip(vector) * weight / weight_cap * scale)`` in Z_2^32, with the capped weight appended.

    ``vector``: 1-D finite floats. Returns uint32 of length ``len(vector) + 1``. The server learns only the sum of the
    encodings: the weighted sum of the vectors and, in the last word, the total weight.
    """
    if vector.ndim != 1 or not np.issubdtype(vector.dtype, np.floating):
        raise ValueError(f"expected a 1-D float vector, got {vector.dtype} of shape {vector.shape}")
    if weight < 1:
        raise ValueError(f"a site needs a positive sample count, got {weight}")
    if not np.isfinite(vector).all():
        raise ValueError("cannot encode NaN or infinite values: the site's update diverged")
    capped = min(weight, params.weight_cap)
    factor = capped / params.weight_cap * params.scale(sites)
    clipped = np.clip(vector.astype(np.float64), -params.clip_range, params.clip_range)
    words = np.empty(len(vector) + 1, dtype=np.uint32)
    words[:-1] = np.rint(clipped * factor).astype(np.int32).view(np.uint32)
    words[-1] = capped
    return words


def decode(total: np.ndarray, params: SecAggParams, sites: int) -> tuple[np.ndarray, int]:
    """The weighted mean (float64) and total weight encoded by ``total``, a sum of ``encode`` outputs."""
    weight = int(total[-1])
    steps = total[:-1].view(np.int32).astype(np.float64)
    return steps * (params.weight_cap / (params.scale(sites) * weight)), weight


def prg(seed: bytes, length: int) -> np.ndarray:
    """``length`` uint32 words of the ChaCha20 keystream under ``seed`` (32 bytes): a mask that is uniform
    over Z_2^32 to anyone without the seed."""
    encryptor = Cipher(algorithms.ChaCha20(seed, _NONCE), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(4 * length)), dtype="<u4")


def flatten(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Every layer's values, in order, as one float64 vector."""
    return np.concatenate([np.ravel(w).astype(np.float64) for w in weights]) if weights else np.zeros(0)


def unflatten(vector: np.ndarray, like: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``vector`` cut back into layers of the shapes and dtypes of ``like``; raises ValueError on a size mismatch."""
    sizes = [w.size for w in like]
    if vector.shape != (sum(sizes),):
        raise ValueError(f"a vector of shape {vector.shape} does not fill layers of {sum(sizes)} values")
    parts = np.split(vector, np.cumsum(sizes)[:-1]) if like else []
    return [p.reshape(w.shape).astype(w.dtype) for p, w in zip(parts, like, strict=True)]
