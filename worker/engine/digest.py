"""SHA-256 of model weights: one definition for the server, the clients and the tests that compare them."""

from __future__ import annotations

import hashlib

import numpy as np

from worker.engine.types import Weights


def weights_sha256(weights: Weights) -> str:
    """Hex digest over each array's dtype, shape and C-order bytes, in layer order.

    It identifies the weights, not a file: the same weights give the same digest whatever file
    (checkpoint, exchange file) carried them, and a different layer split, shape or dtype does not.
    """
    digest = hashlib.sha256(f"{len(weights)} layers".encode())
    for array in weights:
        a = np.ascontiguousarray(array)
        digest.update(f"|{a.dtype.str}{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()
