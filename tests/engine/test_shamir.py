"""Shamir secret sharing over the Mersenne prime 2^521 - 1."""

from __future__ import annotations

import itertools
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.engine.privacy.shamir import SHARE_BYTES, Share, combine, interpolate_at_zero, split


def test_interpolation_of_a_hand_made_line_gives_its_intercept() -> None:
    # f(x) = 7 + 3x: f(1) = 10, f(2) = 13, f(5) = 22
    assert interpolate_at_zero([Share(1, 10), Share(2, 13)]) == 7
    assert interpolate_at_zero([Share(5, 22), Share(1, 10)]) == 7


def test_any_threshold_shares_reconstruct_a_32_byte_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, 3, 6)
    assert [s.x for s in shares] == [1, 2, 3, 4, 5, 6]
    for subset in itertools.combinations(shares, 3):
        assert combine(subset, 32) == secret
    assert combine(shares, 32) == secret  # more than the threshold is fine too


def test_fewer_than_threshold_shares_do_not_give_the_secret() -> None:
    secret = secrets.token_bytes(32)
    shares = split(secret, 4, 5)
    for subset in itertools.combinations(shares, 3):
        assert interpolate_at_zero(subset) != int.from_bytes(secret, "big")
        with pytest.raises(ValueError, match="do not combine to a 32-byte secret"):
            combine(subset, 32)


def test_secret_with_leading_zero_bytes_round_trips() -> None:
    secret = bytes(31) + b"\x01"
    assert combine(split(secret, 2, 2), 32) == secret


@given(st.binary(min_size=1, max_size=65), st.integers(2, 6), st.integers(0, 4))
def test_split_then_combine_is_the_identity(secret: bytes, threshold: int, extra: int) -> None:
    shares = split(secret, threshold, threshold + extra)
    assert combine(shares[extra:], len(secret)) == secret


def test_share_bytes_round_trip_and_reject_malformed_input() -> None:
    share = split(secrets.token_bytes(32), 2, 3)[2]
    data = share.to_bytes()
    assert len(data) == SHARE_BYTES
    assert Share.from_bytes(data) == share
    with pytest.raises(ValueError, match="a share is 68 bytes"):
        Share.from_bytes(data[:-1])
    with pytest.raises(ValueError, match="x must be at least 1"):
        Share.from_bytes(bytes(2) + data[2:])


@pytest.mark.parametrize(("threshold", "count"), [(1, 3), (4, 3), (2, 2**16)])
def test_split_rejects_unusable_thresholds(threshold: int, count: int) -> None:
    with pytest.raises(ValueError, match="need 2 <= threshold <= count"):
        split(b"secret", threshold, count)


def test_split_rejects_a_secret_beyond_the_field() -> None:
    with pytest.raises(ValueError, match="at most 65 bytes"):
        split(bytes(66), 2, 3)


def test_combine_rejects_repeated_x() -> None:
    with pytest.raises(ValueError, match="distinct x"):
        combine([Share(1, 5), Share(1, 5)], 32)
