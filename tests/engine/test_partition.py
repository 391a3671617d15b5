"""Seeded client partitions and the stratified holdout."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.engine import partition

# 300 samples, 100 of them PNEUMONIA, in a scrambled order
LABELS = np.random.default_rng(0).permutation(np.repeat(np.array([0, 1], dtype=np.uint8), [200, 100]))

Split = Callable[[np.random.Generator], list[np.ndarray]]


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_disjoint_cover(shares: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(shares)
    assert len(joined) == n, "shares overlap or miss samples"
    np.testing.assert_array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize(
    "split",
    [
        lambda r: partition.iid(LABELS, 4, r),
        lambda r: partition.sizes(LABELS, [0.5, 0.3, 0.2], r),
        lambda r: partition.dirichlet(LABELS, 4, 0.5, r),
    ],
    ids=["iid", "sizes", "dirichlet"],
)
def test_partition_is_deterministic_for_a_seed_and_changes_with_it(split: Split) -> None:
    first, again, other = split(rng(7)), split(rng(7)), split(rng(8))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    assert_disjoint_cover(first, len(LABELS))


def test_iid_gives_equal_shares_within_one_sample_per_class() -> None:
    shares = partition.iid(LABELS, 4, rng())
    assert_disjoint_cover(shares, 300)
    for share in shares:
        assert abs(len(share) - 75) <= 2
        assert abs(int(LABELS[share].sum()) - 25) <= 1  # 100 pneumonia / 4


def test_sizes_follow_the_fractions_and_keep_the_class_ratio() -> None:
    shares = partition.sizes(LABELS, [0.5, 0.3, 0.2], rng())
    assert_disjoint_cover(shares, 300)
    # per class: 200 normal -> 100, 60, 40; 100 pneumonia -> 50, 30, 20
    assert [len(s) for s in shares] == [150, 90, 60]
    assert [int(LABELS[s].sum()) for s in shares] == [50, 30, 20]


def test_sizes_rounds_each_class_split_to_the_nearest_sample() -> None:
    labels = np.array([0] * 7 + [1] * 3)
    shares = partition.sizes(labels, [0.5, 0.5], rng())
    # normal: cut at round(3.5) = 4 -> 4 + 3; pneumonia: cut at round(1.5) = 2 -> 2 + 1
    assert [int((labels[s] == 0).sum()) for s in shares] == [4, 3]
    assert [int(labels[s].sum()) for s in shares] == [2, 1]


@pytest.mark.parametrize("fractions", [[0.5, 0.6], [0.5, 0.25], [1.2, -0.2], [0.0, 1.0]])
def test_sizes_rejects_fractions_that_are_not_positive_or_do_not_add_up_to_one(fractions: list[float]) -> None:
    with pytest.raises(ValueError, match="fractions must be positive and add up to 1"):
        partition.sizes(LABELS, fractions, rng())


@given(st.lists(st.integers(0, 1), min_size=20, max_size=200), st.integers(1, 6), st.integers(0, 2**31 - 1))
def test_iid_shares_are_disjoint_and_cover_every_index(labels: list[int], k: int, seed: int) -> None:
    array = np.array(labels)
    shares = partition.iid(array, k, rng(seed))
    assert len(shares) == k
    assert_disjoint_cover(shares, len(array))
    assert all(np.all(np.diff(s) > 0) for s in shares)  # sorted, no repeats


def test_dirichlet_gives_every_client_at_least_two_samples() -> None:
    shares = partition.dirichlet(LABELS, 5, 0.1, rng())
    assert_disjoint_cover(shares, 300)
    assert min(len(s) for s in shares) >= partition.MIN_CLIENT_SAMPLES


def test_dirichlet_with_small_alpha_skews_the_class_ratio() -> None:
    shares = partition.dirichlet(LABELS, 4, 0.1, rng())
    ratios = [LABELS[s].mean() for s in shares]
    assert max(abs(r - 1 / 3) for r in ratios) > 0.2  # iid would keep each client at 1/3 within a sample


def test_dirichlet_accepts_a_client_with_exactly_two_samples() -> None:
    # 2 normal + 2 pneumonia over 2 clients: the only split that leaves nobody below two samples is 2 + 2,
    # and alpha 100 keeps both proportions near 1/2, so each client gets one image of each class
    labels = np.array([0, 0, 1, 1])
    shares = partition.dirichlet(labels, 2, 100.0, rng())
    assert [len(s) for s in shares] == [2, 2]
    assert [labels[s].tolist() for s in shares] == [[0, 1], [0, 1]]


def test_dirichlet_with_too_little_data_raises() -> None:
    message = (
        r"^dirichlet\(alpha=1.0\) left a client with fewer than 2 samples in 100 draws; "
        r"use fewer clients, more data or a larger alpha$"
    )
    with pytest.raises(ValueError, match=message):
        partition.dirichlet(np.array([0, 0, 1, 1, 1]), 5, 1.0, rng())


def test_holdout_takes_the_fraction_of_each_class() -> None:
    keep, held = partition.holdout(LABELS, 0.25, rng())
    assert_disjoint_cover([keep, held], 300)
    assert (len(keep), len(held)) == (225, 75)
    assert int(LABELS[held].sum()) == 25  # a quarter of the 100 pneumonia images
    assert int(LABELS[keep].sum()) == 75


def test_holdout_of_zero_keeps_everything() -> None:
    keep, held = partition.holdout(LABELS, 0.0, rng())
    np.testing.assert_array_equal(keep, np.arange(300))
    assert len(held) == 0
    assert held.dtype.kind == "i"


def test_holdout_of_zero_draws_nothing_from_the_generator() -> None:
    # prepare() shares one generator between the clients' holdouts: a zero holdout must not shift the next draw
    generator = rng(5)
    partition.holdout(LABELS, 0.0, generator)
    assert generator.random() == rng(5).random()


def test_holdout_is_deterministic_for_a_seed() -> None:
    a, b = partition.holdout(LABELS, 0.2, rng(3)), partition.holdout(LABELS, 0.2, rng(3))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], partition.holdout(LABELS, 0.2, rng(4))[1])
