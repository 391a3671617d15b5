"""Shamir secret sharing of byte strings over the prime field of the Mersenne prime 2^521 - 1."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

PRIME = 2**521 - 1  # a Mersenne prime: any secret below 2^520 (65 bytes) is one field element
MAX_SECRET_BYTES = 65
_X_BYTES, _Y_BYTES = 2, 66  # share x in 1..65535, y below 2^521
SHARE_BYTES = _X_BYTES + _Y_BYTES


@dataclass(frozen=True)
class Share:
    """The point (x, f(x)) of the secret's polynomial f; x >= 1, since f(0) is the secret."""

    x: int
    y: int

    def to_bytes(self) -> bytes:
        return self.x.to_bytes(_X_BYTES, "big") + self.y.to_bytes(_Y_BYTES, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> Share:
        """Raises ValueError unless ``data`` is a share as ``to_bytes`` writes it."""
        if len(data) != SHARE_BYTES:
            raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
        x, y = int.from_bytes(data[:_X_BYTES], "big"), int.from_bytes(data[_X_BYTES:], "big")
        if x == 0 or y >= PRIME:
            raise ValueError("not a share: x must be at least 1 and y a field element")
        return cls(x, y)


def split(secret: bytes, threshold: int, count: int) -> list[Share]:
    """``count`` shares at x = 1..count, any ``threshold`` of which give back ``secret`` (Shamir, 1979).

    The polynomial has degree ``threshold - 1`` and coefficients from ``secrets``, so fewer than ``threshold``
    shares are uniformly distributed whatever the secret: they reveal nothing about it. Raises ValueError for
    a secret over 65 bytes or unless 2 <= threshold <= count < 2^16.
    """
    if len(secret) > MAX_SECRET_BYTES:
        raise ValueError(f"a secret is at most {MAX_SECRET_BYTES} bytes, got {len(secret)}")
    if not 2 <= threshold <= count < 2 ** (8 * _X_BYTES):
        raise ValueError(f"need 2 <= threshold <= count < 65536, got threshold {threshold} and count {count}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x)) for x in range(1, count + 1)]


def combine(shares: Sequence[Share], size: int) -> bytes:
    """The ``size``-byte secret whose shares these are, by Lagrange interpolation at 0.

    Any ``threshold`` or more shares of one secret give it back; fewer give an unrelated field element, which
    almost never fits in ``size`` bytes: that raises ValueError, as do repeated x coordinates.
    """
    value = interpolate_at_zero(shares)
    if value >= 2 ** (8 * size):
        raise ValueError(f"the shares do not combine to a {size}-byte secret (too few, or of different secrets)")
    return value.to_bytes(size, "big")


def interpolate_at_zero(shares: Sequence[Share]) -> int:
    """f(0) of the polynomial of least degree through the shares, mod PRIME."""
    xs = [s.x for s in shares]
    if not shares or len(set(xs)) != len(xs):
        raise ValueError(f"need shares at distinct x coordinates, got x = {xs}")
    total = 0
    for share in shares:
        numerator, denominator = 1, 1
        for x in xs:
            if x != share.x:
                numerator = numerator * x % PRIME
                denominator = denominator * (x - share.x) % PRIME
        total = (total + share.y * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Horner's rule, lowest coefficient first."""
    value = 0
    for c in reversed(coefficients):
        value = (value * x + c) % PRIME
    return value
