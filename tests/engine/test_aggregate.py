"""FedAvg weighted mean, pooled BatchNorm moments and the BatchNorm slot merge."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from worker.engine.aggregate import balanced_class_weight, pooled_moments, weighted_mean, with_batchnorm_statistics

SHAPES = [(3,), (2, 2)]
Update = tuple[list[np.ndarray], int]
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


def client_weights() -> st.SearchStrategy[list[np.ndarray]]:
    return st.tuples(*(arrays(np.float64, shape, elements=finite) for shape in SHAPES)).map(list)


NO_EXAMPLES = r"^cannot aggregate: no client reported training examples$"
clients = st.lists(st.tuples(client_weights(), st.integers(1, 100)), min_size=1, max_size=5)


def test_weighted_mean_of_two_clients_matches_hand_computation() -> None:
    a = [np.array([0.0, 4.0]), np.array([[1.0, 2.0], [3.0, 4.0]])]
    b = [np.array([8.0, 0.0]), np.array([[5.0, 6.0], [7.0, 8.0]])]
    result = weighted_mean([(a, 1), (b, 3)])
    # (1 * a + 3 * b) / 4, layer by layer
    np.testing.assert_allclose(result[0], [6.0, 1.0])
    np.testing.assert_allclose(result[1], [[4.0, 5.0], [6.0, 7.0]])


def test_weighted_mean_keeps_each_layers_dtype() -> None:
    a: list[np.ndarray] = [np.array([1.0, 2.0], dtype=np.float32), np.array([1.0], dtype=np.float16)]
    b: list[np.ndarray] = [np.array([3.0, 4.0], dtype=np.float32), np.array([3.0], dtype=np.float16)]
    result = weighted_mean([(a, 1), (b, 1)])
    assert [w.dtype for w in result] == [np.float32, np.float16]
    np.testing.assert_allclose(result[0], [2.0, 3.0])


def test_weighted_mean_ignores_a_client_with_zero_examples() -> None:
    result = weighted_mean([([np.array([100.0])], 0), ([np.array([2.0])], 5)])
    np.testing.assert_allclose(result[0], [2.0])


def test_weighted_mean_of_no_clients_raises() -> None:
    with pytest.raises(ValueError, match=NO_EXAMPLES):
        weighted_mean([])


def test_weighted_mean_with_only_zero_counts_raises() -> None:
    with pytest.raises(ValueError, match=NO_EXAMPLES):
        weighted_mean([([np.ones(2)], 0), ([np.zeros(2)], 0)])


def test_weighted_mean_with_different_layer_counts_raises() -> None:
    with pytest.raises(ValueError):
        weighted_mean([([np.ones(2), np.ones(3)], 1), ([np.ones(2)], 1)])


def test_weighted_mean_with_different_layer_shapes_raises() -> None:
    with pytest.raises(ValueError):
        weighted_mean([([np.ones(2)], 1), ([np.ones(3)], 1)])


@given(clients)
def test_weighted_mean_lies_between_the_clients_minimum_and_maximum(updates: list[Update]) -> None:
    result = weighted_mean(updates)
    for layer, mean in enumerate(result):
        stacked = np.stack([w[layer] for w, _ in updates])
        slack = 1e-9 * (1 + np.abs(stacked).max())
        assert np.all(mean >= stacked.min(axis=0) - slack)
        assert np.all(mean <= stacked.max(axis=0) + slack)


@given(st.lists(client_weights(), min_size=1, max_size=5), st.integers(1, 100))
def test_weighted_mean_with_equal_counts_is_the_plain_mean(weights: list[list[np.ndarray]], count: int) -> None:
    result = weighted_mean([(w, count) for w in weights])
    for layer, mean in enumerate(result):
        np.testing.assert_allclose(mean, np.mean([w[layer] for w in weights], axis=0), rtol=1e-9, atol=1e-9)


@given(clients, st.data())
def test_weighted_mean_does_not_depend_on_client_order(updates: list[Update], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(updates))
    for a, b in zip(weighted_mean(updates), weighted_mean(shuffled), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@given(client_weights(), st.integers(1, 100))
def test_weighted_mean_of_a_single_client_is_its_weights(weights: list[np.ndarray], count: int) -> None:
    for mean, own in zip(weighted_mean([(weights, count)]), weights, strict=True):
        np.testing.assert_allclose(mean, own, rtol=1e-12, atol=1e-12)


def test_pooled_moments_equal_the_moments_of_the_union_of_both_samples() -> None:
    # two BatchNorm layers with two channels each; rows are samples
    first = [np.array([[1.0, -2.0], [2.0, 0.0], [3.0, 5.0], [4.0, 1.0]]), np.array([[0.5], [1.5], [2.5], [3.5]])]
    second = [np.array([[10.0, 7.0], [12.0, 3.0]]), np.array([[-4.0], [4.0]])]

    def moments(sample: list[np.ndarray]) -> list[np.ndarray]:
        return [m for x in sample for m in (x.mean(axis=0), x.var(axis=0))]

    pooled = pooled_moments([(moments(first), 4), (moments(second), 2)])
    for layer in range(2):
        union = np.concatenate([first[layer], second[layer]])
        np.testing.assert_allclose(pooled[2 * layer], union.mean(axis=0))
        np.testing.assert_allclose(pooled[2 * layer + 1], union.var(axis=0))


def test_pooled_variance_adds_the_spread_of_the_client_means() -> None:
    # both clients have zero variance around means 0 and 2; the union {0, 2, 2, 2} has mean 1.5, variance 0.75
    pooled = pooled_moments([([np.array([0.0]), np.array([0.0])], 1), ([np.array([2.0]), np.array([0.0])], 3)])
    np.testing.assert_allclose(pooled[0], [1.5])
    np.testing.assert_allclose(pooled[1], [0.75])


def test_pooled_moments_refuse_a_mean_without_its_variance() -> None:
    mean_only = [np.array([1.0]), np.array([0.5]), np.array([2.0])]  # layer 2 lacks its variance
    with pytest.raises(ValueError):
        pooled_moments([(mean_only, 1), (mean_only, 1)])


def test_pooled_variance_is_never_negative() -> None:
    # adjacent float32 means with zero variance: E[x^2] - E[x]^2 rounds to -7.6e-06 before the clip
    low = np.float32(8.151376)
    high = np.nextafter(low, np.float32(9))
    zero = np.zeros(1, dtype=np.float32)
    pooled = pooled_moments([([np.array([low]), zero], 6), ([np.array([high]), zero], 9)])
    assert pooled[1].dtype == np.float32
    assert pooled[1][0] == 0


def test_with_batchnorm_statistics_replaces_only_the_slot_and_the_next_entry() -> None:
    weights = [np.full(2, float(i)) for i in range(7)]
    stats = [np.full(2, 100.0), np.full(2, 101.0), np.full(2, 200.0), np.full(2, 201.0)]
    merged = with_batchnorm_statistics(weights, [1, 4], stats)
    assert [float(w[0]) for w in merged] == [0.0, 100.0, 101.0, 3.0, 200.0, 201.0, 6.0]
    assert all(merged[i] is weights[i] for i in (0, 3, 6))
    assert [float(w[0]) for w in weights] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # the input list is untouched


def test_balanced_class_weights_come_from_the_summed_label_counts() -> None:
    # 30 + 10 NORMAL and 60 + 100 PNEUMONIA: 200 images; weights 200 / (2 * 40) and 200 / (2 * 160)
    assert balanced_class_weight([(30, 60), (10, 100)]) == {0: 2.5, 1: 0.625}


def test_balanced_class_weights_refuse_a_class_no_client_holds() -> None:
    with pytest.raises(ValueError, match="need both classes, got 0 NORMAL and 7 PNEUMONIA"):
        balanced_class_weight([(0, 3), (0, 4)])


def test_balanced_class_weights_need_only_one_image_of_a_class() -> None:
    assert balanced_class_weight([(1, 3)]) == {0: 2.0, 1: pytest.approx(4 / 6)}
