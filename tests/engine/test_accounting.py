"""Epsilon of DP rounds against dp-accounting's own accountants, the issue's figures and the budget ledger."""

from __future__ import annotations

import time
import warnings

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from worker.engine.privacy.accounting import (
    NOISE_TOLERANCE,
    Ledger,
    PrivacyAccountant,
    noise_for_epsilon,
    steps_per_round,
    would_exceed,
)

DELTA = 1e-5


def rdp_epsilon(event: dp_accounting.DpEvent, delta: float = DELTA) -> float:
    return float(rdp.RdpAccountant().compose(event).get_epsilon(delta))


def test_steps_per_round_rounds_a_partial_batch_up() -> None:
    assert steps_per_round(1300, 32, 1) == 41  # 40.6 batches
    assert steps_per_round(1300, 32, 2) == 82  # 81.25
    assert steps_per_round(64, 32, 3) == 6
    assert steps_per_round(10, 32, 1) == 1
    with pytest.raises(ValueError, match="at least 1"):
        steps_per_round(0, 32, 1)


@pytest.mark.parametrize(("noise", "rate", "rounds"), [(1.0, 1.0, 20), (0.7, 1.0, 3), (5.0, 1.0, 137), (1.2, 0.3, 50)])
def test_client_level_epsilon_is_dp_accountings(noise: float, rate: float, rounds: int) -> None:
    gaussian = dp_accounting.GaussianDpEvent(noise)
    step = gaussian if rate == 1.0 else dp_accounting.PoissonSampledDpEvent(rate, gaussian)
    expected = rdp_epsilon(dp_accounting.SelfComposedDpEvent(step, rounds))
    assert PrivacyAccountant.client_level(noise, rate).epsilon(rounds, DELTA) == expected


def test_sample_level_epsilon_is_dp_accountings() -> None:
    step = dp_accounting.PoissonSampledDpEvent(32 / 1300, dp_accounting.GaussianDpEvent(1.0))
    expected = rdp_epsilon(dp_accounting.SelfComposedDpEvent(step, 41 * 10))
    site = PrivacyAccountant.sample_level(1.0, examples=1300, batch_size=32, local_epochs=1)
    assert site.epsilon(10, DELTA) == expected
    assert 3.0 < expected < 4.0  # 3.57 measured


def test_no_rounds_spend_nothing() -> None:
    assert PrivacyAccountant.client_level(1.0).epsilon(0) == 0.0


def test_issue_figures_client_level_20_rounds_full_participation() -> None:
    at_one = PrivacyAccountant.client_level(1.0).epsilon(20, DELTA)
    assert 28.0 <= at_one <= 31.0  # RDP 30.1
    assert 3.8 <= PrivacyAccountant.client_level(5.0).epsilon(20, DELTA) <= 4.4  # RDP 4.16
    assert 4.8 <= noise_for_epsilon(4.0, 20, DELTA) <= 5.4  # 5.18


def test_pld_cross_check_is_tighter_but_close() -> None:
    for noise in (1.0, 5.0):
        event = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(noise), 20)
        tight = pld.PLDAccountant().compose(event).get_epsilon(DELTA)
        ours = PrivacyAccountant.client_level(noise).epsilon(20, DELTA)
        assert 0.85 * ours <= tight <= ours  # PLD 28.4 vs RDP 30.1; 3.85 vs 4.16


def test_sample_level_epsilon_grows_with_rate_and_rounds_and_falls_with_noise() -> None:
    def eps(noise: float = 1.0, batch: int = 32, rounds: int = 10) -> float:
        return PrivacyAccountant.sample_level(noise, examples=1300, batch_size=batch).epsilon(rounds)

    assert eps(batch=16) < eps(batch=32) < eps(batch=128)
    assert eps(rounds=1) < eps(rounds=10) < eps(rounds=50)
    assert eps(noise=0.8) > eps(noise=1.0) > eps(noise=2.0)


@pytest.mark.parametrize("accountant", [PrivacyAccountant(1.0), PrivacyAccountant(0.9, 0.05, 41)])
def test_rounds_within_stops_before_the_round_that_exceeds(accountant: PrivacyAccountant) -> None:
    for target in (0.5, 3.0, 8.0, 30.0):
        r = accountant.rounds_within(target)
        assert accountant.epsilon(r) <= target < accountant.epsilon(r + 1)


def test_rounds_within_is_exact_at_the_boundary_and_monotone() -> None:
    accountant = PrivacyAccountant.client_level(2.0)
    for k in (1, 2, 7, 20, 64, 333):
        assert accountant.rounds_within(accountant.epsilon(k)) == k
    assert accountant.rounds_within(0.0) == 0
    assert accountant.rounds_within(accountant.epsilon(1) / 2) == 0
    found = [accountant.rounds_within(t) for t in (1.0, 2.0, 4.0, 8.0, 16.0)]
    assert found == sorted(found)
    assert found[0] < found[-1]


@pytest.mark.parametrize(
    ("target", "rounds", "rate", "steps"), [(4.0, 20, 1.0, 1), (30.0, 20, 1.0, 1), (3.0, 10, 32 / 1300, 41)]
)
def test_noise_for_epsilon_inverts_epsilon(target: float, rounds: int, rate: float, steps: int) -> None:
    noise = noise_for_epsilon(target, rounds, DELTA, sampling_rate=rate, steps_per_round=steps)
    assert PrivacyAccountant(noise, rate, steps).epsilon(rounds, DELTA) <= target
    assert PrivacyAccountant(noise - 2 * NOISE_TOLERANCE, rate, steps).epsilon(rounds, DELTA) > target


def test_epsilon_after_each_of_a_thousand_rounds_is_fast() -> None:
    client = PrivacyAccountant.client_level(1.0)
    site = PrivacyAccountant.sample_level(1.0, examples=1300, batch_size=32)
    start = time.perf_counter()
    for r in range(1, 1001):
        client.epsilon(r)
        site.epsilon(r)
    assert time.perf_counter() - start < 2.0  # about 0.2 s; composing afresh each round took minutes


def test_accountant_rejects_no_noise_and_bad_rates() -> None:
    with pytest.raises(ValueError, match="noise multiplier"):
        PrivacyAccountant(0.0)
    with pytest.raises(ValueError, match="sampling rate"):
        PrivacyAccountant(1.0, 1.5)
    with pytest.raises(ValueError, match="delta"):
        PrivacyAccountant(1.0).epsilon(3, 0.0)


def test_would_exceed_allows_reaching_the_budget_exactly() -> None:
    assert not would_exceed(3.0, 2.0, 5.0)
    assert would_exceed(3.0, 2.001, 5.0)
    assert not would_exceed(0.0, 0.0, 0.0)


def test_ledger_sums_epsilons_and_deltas_across_runs() -> None:
    ledger = Ledger(max_epsilon=5.0, delta=1e-5).charge(1.5).charge(2.5)
    assert ledger.spent == 4.0
    assert ledger.runs == 2
    assert ledger.spent_delta == pytest.approx(2e-5)
    assert ledger.remaining == 1.0
    assert not ledger.would_exceed(1.0)
    assert ledger.would_exceed(1.25)


def test_ledger_records_a_run_past_the_budget() -> None:
    ledger = Ledger(max_epsilon=1.0).charge(3.0)
    assert ledger.spent == 3.0
    assert ledger.remaining == 0.0
    with pytest.raises(ValueError, match="negative"):
        ledger.charge(-0.1)


def test_no_rounds_spend_nothing_even_where_one_step_is_unbounded_at_some_orders() -> None:
    site = PrivacyAccountant(0.9, 0.05, 41)  # dp-accounting gives up on orders 1.1 and 1.2 here: RDP infinite
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # 0 * inf would be NaN
        assert site.epsilon(0) == 0.0
        assert site.rounds_within(site.epsilon(1) / 2) == 0
