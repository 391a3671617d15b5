"""The numpy side of DP-SGD, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from worker.engine.privacy.dpsgd import DpSgdSettings, clip_factors, poisson_batch, sampling_rate, steps_per_epoch


def test_clip_factors_scale_norms_above_c_down_to_c() -> None:
    factors = clip_factors(np.array([3.0, 4.0, 0.5]), 1.0)

    np.testing.assert_allclose(factors, [1 / 3, 1 / 4, 1.0])


def test_clip_factor_of_a_zero_gradient_is_one() -> None:
    with np.errstate(divide="raise", invalid="raise"):
        assert clip_factors(np.array([0.0]), 2.0)[0] == 1.0


def test_clipped_norms_never_exceed_c() -> None:
    norms = np.array([0.0, 0.1, 2.0, 1e6])

    assert np.all(norms * clip_factors(norms, 0.5) <= 0.5 + 1e-12)


def test_noise_std_is_multiplier_times_clip_norm() -> None:
    assert DpSgdSettings(noise_multiplier=1.1, clip_norm=2.0).noise_std == pytest.approx(2.2)
    assert DpSgdSettings(noise_multiplier=0.0, clip_norm=2.0).noise_std == 0.0


@pytest.mark.parametrize(("z", "c"), [(-0.1, 1.0), (1.0, 0.0), (1.0, -1.0), (float("nan"), 1.0)])
def test_settings_reject_negative_noise_and_non_positive_clip(z: float, c: float) -> None:
    with pytest.raises(ValueError):
        DpSgdSettings(noise_multiplier=z, clip_norm=c)


def test_sampling_rate_is_batch_over_n_capped_at_one() -> None:
    assert sampling_rate(32, 1000) == 0.032
    assert sampling_rate(64, 10) == 1.0
    with pytest.raises(ValueError):
        sampling_rate(32, 0)


def test_poisson_batches_include_each_example_with_probability_q() -> None:
    rng = np.random.default_rng(3)
    n, rate, draws = 200, 0.05, 4000
    counts = np.zeros(n)
    sizes = []
    for _ in range(draws):
        batch = poisson_batch(n, rate, rng)
        counts[batch] += 1
        sizes.append(len(batch))

    # per example: Binomial(4000, 0.05), mean 200, sd 13.8; the mean over 200 examples has sd ~1
    assert counts.mean() == pytest.approx(draws * rate, abs=4)
    assert counts.min() > 140 and counts.max() < 260
    # batch size: Binomial(200, 0.05), mean 10, variance 9.5 (not a fixed size)
    assert np.mean(sizes) == pytest.approx(10, abs=0.2)
    assert np.var(sizes) == pytest.approx(9.5, rel=0.1)


def test_poisson_batch_has_sorted_unique_indices() -> None:
    batch = poisson_batch(50, 0.5, np.random.default_rng(0))

    assert np.all(np.diff(batch) > 0) and batch.max() < 50


def test_steps_per_epoch_round_up() -> None:
    assert steps_per_epoch(256, 32) == 8
    assert steps_per_epoch(257, 32) == 9
    assert steps_per_epoch(5, 32) == 1
    with pytest.raises(ValueError):
        steps_per_epoch(0, 32)
