"""DP-FedAvg clipping, Gaussian noise, adaptive clip norms and the ClientLevelDP aggregation step."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from worker.engine.privacy.dpfedavg import (
    AdaptiveClipping,
    ClientLevelDP,
    clip,
    noised_mean,
    with_distributed_noise,
)


def test_clip_scales_a_norm_five_vector_to_the_clip_norm() -> None:
    clipped, norm = clip([np.array([3.0, 4.0])], 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped[0], [0.6, 0.8])


def test_clip_leaves_a_delta_under_the_clip_norm_unchanged() -> None:
    delta = [np.array([0.3, -0.4]), np.array([[0.1]])]
    clipped, norm = clip(delta, 1.0)
    assert norm == pytest.approx(math.sqrt(0.26))
    for got, want in zip(clipped, delta, strict=True):
        np.testing.assert_array_equal(got, want)


def test_clip_leaves_a_zero_delta_unchanged_without_dividing_by_zero() -> None:
    with np.errstate(all="raise"):
        clipped, norm = clip([np.zeros(3), np.zeros((2, 2))], 1.0)
    assert norm == 0.0
    assert [c.tolist() for c in clipped] == [[0.0] * 3, [[0.0, 0.0], [0.0, 0.0]]]


def test_clip_uses_the_global_norm_over_all_layers() -> None:
    delta = [np.array([1.0, 2.0], dtype=np.float32), np.array([[2.0], [4.0]], dtype=np.float32)]  # sqrt(25) = 5
    clipped, norm = clip(delta, 2.5)
    assert norm == 5.0
    np.testing.assert_allclose(clipped[0], [0.5, 1.0])
    np.testing.assert_allclose(clipped[1], [[1.0], [2.0]])
    assert [c.dtype for c in clipped] == [np.float32, np.float32]


def test_clip_rejects_non_finite_deltas_and_clip_norms() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        clip([np.array([1.0, np.nan])], 1.0)
    with pytest.raises(ValueError, match="clip norm"):
        clip([np.array([1.0])], 0.0)


def test_noised_mean_without_noise_is_the_unweighted_mean() -> None:
    clipped = [[np.array([0.6, 0.8])], [np.array([0.0, -0.2])]]
    result = noised_mean(clipped, 1.0, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(result[0], [0.3, 0.3])


def test_noised_mean_noise_has_std_z_c_over_m() -> None:
    m, clip_norm, noise = 4, 2.0, 1.5
    clipped = [[np.zeros(1000)] for _ in range(m)]
    rng = np.random.default_rng(1)
    draws = np.stack([noised_mean(clipped, clip_norm, noise, rng)[0] for _ in range(200)])
    assert np.std(draws) == pytest.approx(noise * clip_norm / m, rel=0.02)  # 0.75, over 200,000 coordinates


def test_mean_of_many_noised_aggregates_is_the_true_mean() -> None:
    clipped = [[np.array([0.6, 0.8, 0.0])], [np.array([0.2, -0.4, 0.1])], [np.array([0.1, 0.0, -0.7])]]
    rng = np.random.default_rng(2)
    draws = np.stack([noised_mean(clipped, 1.0, 1.0, rng)[0] for _ in range(4000)])
    std_of_mean = (1.0 / 3) / math.sqrt(4000)
    np.testing.assert_allclose(draws.mean(axis=0), [0.3, 0.4 / 3, -0.2], atol=4 * std_of_mean)


def test_noised_mean_refuses_unclipped_deltas_and_no_sites() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="clip it first"):
        noised_mean([[np.array([3.0, 4.0])]], 1.0, 1.0, rng)
    with pytest.raises(ValueError, match="no site"):
        noised_mean([], 1.0, 1.0, rng)


def test_distributed_noise_sums_to_std_z_c() -> None:
    sites, clip_norm, noise = 5, 2.0, 1.2
    rng = np.random.default_rng(3)
    shares = [with_distributed_noise([np.zeros(100_000)], clip_norm, noise, sites, rng)[0] for _ in range(sites)]
    assert np.std(shares[0]) == pytest.approx(noise * clip_norm / math.sqrt(sites), rel=0.02)
    assert np.std(np.sum(shares, axis=0)) == pytest.approx(noise * clip_norm, rel=0.02)
    with pytest.raises(ValueError, match="clip it first"):
        with_distributed_noise([np.array([3.0, 4.0])], 1.0, noise, sites, rng)
    with pytest.raises(ValueError, match="at least one site"):
        with_distributed_noise([np.zeros(2)], 1.0, noise, 0, rng)


def test_adaptive_noise_multiplier_matches_the_paper_formula() -> None:
    # z = 1, sigma_b = 2: (1 - 1/16)^(-1/2) = sqrt(16/15)
    assert AdaptiveClipping(count_stddev=2.0).delta_noise_multiplier(1.0) == pytest.approx(math.sqrt(16 / 15))
    with pytest.raises(ValueError, match="under twice the count noise"):
        AdaptiveClipping(count_stddev=0.5).delta_noise_multiplier(1.0)


def test_deltas_and_count_together_cost_one_gaussian_of_the_noise_multiplier() -> None:
    noise, count_stddev = 1.3, 1.5
    value = AdaptiveClipping(count_stddev).delta_noise_multiplier(noise)
    both = dp_accounting.ComposedDpEvent(
        [dp_accounting.GaussianDpEvent(value), dp_accounting.GaussianDpEvent(2 * count_stddev)]
    )
    single = rdp.RdpAccountant().compose(dp_accounting.GaussianDpEvent(noise)).get_epsilon(1e-5)
    assert rdp.RdpAccountant().compose(both).get_epsilon(1e-5) == pytest.approx(single, rel=1e-9)


@pytest.mark.parametrize(("quantile", "start"), [(0.5, 0.5), (0.5, 40.0), (0.2, 5.0), (0.9, 1.0)])
def test_adaptive_clip_norm_converges_to_the_target_quantile(quantile: float, start: float) -> None:
    rule = AdaptiveClipping(count_stddev=5.0, target_quantile=quantile)  # sigma_b = m / 20 for m = 100 sites
    rng = np.random.default_rng(4)
    clip_norm, history = start, []
    for _ in range(300):
        clip_norm = rule.next_clip_norm(clip_norm, rng.uniform(0.0, 10.0, 100).tolist(), rng)
        history.append(clip_norm)
    assert np.mean(history[-100:]) == pytest.approx(10.0 * quantile, rel=0.1)  # norms uniform in [0, 10]


def test_adaptive_clip_norm_shrinks_when_every_site_is_under_it() -> None:
    rule = AdaptiveClipping(count_stddev=1e-6)
    assert rule.next_clip_norm(2.0, [0.5, 1.0], np.random.default_rng(0)) == pytest.approx(2.0 * math.exp(-0.1))
    assert rule.next_clip_norm(2.0, [3.0, 4.0], np.random.default_rng(0)) == pytest.approx(2.0 * math.exp(0.1))


def test_client_level_dp_adds_the_clipped_mean_and_keeps_integer_layers() -> None:
    start = [np.array([1.0, 1.0], dtype=np.float32), np.array([7], dtype=np.int64)]
    updates = [
        ([np.array([4.0, 5.0], dtype=np.float32), np.array([9])], 10),  # delta (3, 4), clipped to (0.6, 0.8)
        ([np.array([1.3, 1.4], dtype=np.float32), np.array([9])], 1000),  # delta (0.3, 0.4), unchanged
    ]
    result = ClientLevelDP(clip_norm=1.0, noise_multiplier=0.0).aggregate(start, updates, np.random.default_rng(0))
    np.testing.assert_allclose(result[0], [1.45, 1.6], rtol=1e-6)  # equal weights whatever the example counts
    assert result[0].dtype == np.float32
    np.testing.assert_array_equal(result[1], [7])
    assert result[1].dtype == np.int64


def test_client_level_dp_noises_deltas_with_the_raised_multiplier_under_adaptive_clipping() -> None:
    dp = ClientLevelDP(clip_norm=1.0, noise_multiplier=1.0, adaptive=AdaptiveClipping(count_stddev=1.0))
    start = [np.zeros(100_000)]
    result = dp.aggregate(start, [([np.zeros(100_000)], 1)] * 2, np.random.default_rng(5))
    assert np.std(result[0]) == pytest.approx(math.sqrt(4 / 3) / 2, rel=0.02)  # z_delta C / m, z_delta = (1 - 1/4)^-1/2


def test_client_level_dp_adapts_and_restores_its_clip_norm() -> None:
    dp = ClientLevelDP(clip_norm=2.0, noise_multiplier=1e-4, adaptive=AdaptiveClipping(count_stddev=1e-4))
    dp.aggregate([np.zeros(2)], [([np.array([0.1, 0.0])], 5)] * 3, np.random.default_rng(6))
    assert dp.clip_norm == pytest.approx(2.0 * math.exp(-0.1), rel=1e-3)  # every site under C
    saved = dp.state()
    resumed = ClientLevelDP(clip_norm=2.0, noise_multiplier=1e-4, adaptive=AdaptiveClipping(count_stddev=1e-4))
    resumed.restore(saved)
    assert resumed.clip_norm == saved


def test_fixed_clip_norm_refuses_another_checkpoint() -> None:
    dp = ClientLevelDP(clip_norm=1.0, noise_multiplier=1.0)
    dp.restore(1.0)
    with pytest.raises(ValueError, match="not the fixed"):
        dp.restore(2.0)


def test_distributed_noise_is_centred_and_keeps_the_delta_and_its_dtype() -> None:
    """Each site's share of the noise has mean zero: a bias would move every round's model the same way."""
    rng = np.random.default_rng(4)
    delta = [np.full(200_000, 0.25, np.float32)]  # norm 112, under the clip norm 200
    noised = with_distributed_noise(delta, 200.0, 0.01, 4, rng)[0]  # std 0.01 x 200 / sqrt(4) = 1
    assert noised.dtype == np.float32
    assert abs(float(np.mean(noised)) - 0.25) < 5 / math.sqrt(200_000)  # five standard errors
    assert with_distributed_noise([np.zeros(3)], 1.0, 1.0, 1, rng)[0].shape == (3,)  # one site alone is allowed


def test_the_already_clipped_guards_allow_rounding_but_not_more() -> None:
    """A delta at the clip norm (up to float rounding) passes; one a hair beyond the slack is refused."""
    rng = np.random.default_rng(5)
    at = [np.array([0.6, 0.8])]  # norm 1
    beyond = [np.array([0.6, 0.8]) * (1 + 1e-4)]
    assert noised_mean([at], 1.0, 0.0, rng)[0] == pytest.approx(at[0])
    with_distributed_noise(at, 1.0, 0.0, 1, rng)
    with pytest.raises(ValueError, match="clip it first"):
        noised_mean([beyond], 1.0, 0.0, rng)
    with pytest.raises(ValueError, match="clip it first"):
        with_distributed_noise(beyond, 1.0, 0.0, 1, rng)


@pytest.mark.parametrize(
    "settings",
    [
        {"count_stddev": 1.0, "target_quantile": -0.01},
        {"count_stddev": 1.0, "target_quantile": 1.01},
        {"count_stddev": 0.0},
        {"count_stddev": 1.0, "learning_rate": 0.0},
    ],
)
def test_adaptive_clipping_refuses_settings_outside_its_ranges(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="adaptive clipping needs"):
        AdaptiveClipping(**settings)


def test_adaptive_clipping_accepts_the_ends_of_its_quantile_range() -> None:
    assert AdaptiveClipping(1.0, target_quantile=0.0).target_quantile == 0.0
    assert AdaptiveClipping(1.0, target_quantile=1.0).target_quantile == 1.0


def test_a_norm_exactly_at_the_clip_norm_counts_as_under_it() -> None:
    """The bit is ||delta|| <= C: with tiny count noise, all sites at C give b = 1 and the bound shrinks."""
    adaptive = AdaptiveClipping(1e-9, target_quantile=0.5, learning_rate=0.2)
    after = adaptive.next_clip_norm(2.0, [2.0, 2.0], np.random.default_rng(0))
    assert after == pytest.approx(2.0 * math.exp(-0.2 * (1 - 0.5)))
