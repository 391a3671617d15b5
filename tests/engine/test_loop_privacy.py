"""run_federated with privacy: the epsilon of every round, the stop before the target, DP-FedAvg's clipping and
noise, a resume that counts each round once, and secure aggregation against plain FedAvg."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from app.run_config import RunConfig
from tests.engine.test_loop_intermittent import ASKED, SAMPLES, SCHEDULE, FakeExecutor, Recorder
from worker.engine.experiment import presence_for
from worker.engine.loop import BudgetSpent, pool_in_clear, run_federated
from worker.engine.privacy.accounting import PrivacyAccountant
from worker.engine.privacy.masking import SecAggParams
from worker.engine.protection import (
    MOMENTS_RANGE,
    ClientDpFedAvg,
    RunPrivacy,
    SecureFedAvg,
    moments_pooling,
    strategy_with_privacy,
)
from worker.engine.types import ClientUpdate, Weights


def dp_config(level: str, rounds: int = 6, **dp: Any) -> RunConfig:
    """Client 3 joins at round 3 and client 2 leaves at round 5, as in test_loop_intermittent.py (all three train
    in shorter runs)."""
    return RunConfig.model_validate(
        {
            "model": {"batch_size": 5},
            "federation": {"clients": 3, "rounds": rounds, "intermittent": {"events": SCHEDULE if rounds >= 5 else []}},
            "privacy": {"dp": {"level": level, **dp}},
        }
    )


def run(cfg: RunConfig, recorder: Recorder, **kwargs: Any) -> Weights:
    strategy = strategy_with_privacy(cfg, len(SAMPLES))
    return run_federated(
        cfg,
        FakeExecutor(),
        recorder.evaluate,
        initial=kwargs.pop("initial", [np.zeros(2)]),
        strategy=strategy,
        privacy=RunPrivacy.for_run(cfg, SAMPLES, strategy),
        presence=presence_for(cfg),
        samples=SAMPLES,
        batchnorm_slots=(),
        on_round=recorder.on_round,
        pool_moments=moments_pooling(strategy),
        **kwargs,
    )


def test_client_level_epsilon_after_each_round_is_the_accountants() -> None:
    recorder = Recorder()
    run(dp_config("client", noise_multiplier=2.0), recorder)
    accountant = PrivacyAccountant.client_level(2.0)
    spent = [r.privacy.epsilon for r in recorder.results if r.privacy]
    assert spent == [accountant.epsilon(k, 1e-5) for k in range(1, 7)]
    assert spent == sorted(spent) and spent[0] > 0
    assert all(r.privacy and r.privacy.per_client == {} for r in recorder.results)


def test_sample_level_counts_each_site_in_the_rounds_it_trained() -> None:
    recorder = Recorder()
    run(dp_config("sample", noise_multiplier=1.5), recorder)
    last = recorder.results[-1].privacy
    assert last is not None
    trained = {"1": 6, "2": 4, "3": 4}  # 2 trains in rounds 1-4, 3 in rounds 3-6
    for cid, rounds in trained.items():
        accountant = PrivacyAccountant.sample_level(1.5, examples=SAMPLES[cid], batch_size=5)
        assert last.per_client[cid] == pytest.approx(accountant.epsilon(rounds, 1e-5))
    assert last.epsilon == max(last.per_client.values())


def test_the_run_stops_before_the_round_that_would_exceed_the_target() -> None:
    accountant = PrivacyAccountant.client_level(1.0)
    target = (accountant.epsilon(3) + accountant.epsilon(4)) / 2  # round 4 would cross it
    recorder = Recorder()
    with pytest.raises(BudgetSpent, match="before round 4") as stopped:
        run(dp_config("client", noise_multiplier=1.0, target_epsilon=target), recorder)
    assert [r.round for r in recorder.results] == [1, 2, 3]
    assert all(r.privacy and r.privacy.epsilon <= target for r in recorder.results)
    assert np.array_equal(stopped.value.weights[0], recorder.checkpoints[-1].weights[0])


def test_a_resumed_run_counts_each_completed_round_once() -> None:
    cfg = dp_config("client", noise_multiplier=2.0)
    whole, resumed = Recorder(), Recorder()
    run(cfg, whole)
    run(cfg, resumed, start=whole.checkpoints[2])
    assert [r.privacy.epsilon for r in resumed.results if r.privacy] == [
        r.privacy.epsilon for r in whole.results[3:] if r.privacy
    ]


def test_dp_fedavg_clips_each_sites_change_before_averaging() -> None:
    """With negligible noise the new model is the start plus the mean of the clipped changes: from zeros, sites
    1-3 moved to (c, c), norms c sqrt(2), each clipped to norm 1 along the diagonal (FedAvg would give 2.5)."""
    cfg = dp_config("client", noise_multiplier=1e-9, clip_norm=1.0, rounds=1)
    recorder = Recorder()
    run(cfg, recorder)
    unit = np.full(2, 1 / np.sqrt(2))
    assert np.allclose(recorder.checkpoints[0].weights[0], unit, atol=1e-6)


def test_adaptive_clipping_moves_the_bound_and_the_checkpoint_keeps_it() -> None:
    cfg = dp_config("client", noise_multiplier=1.0, clip_norm=0.01, adaptive_clipping=True)
    recorder = Recorder()
    run(cfg, recorder)
    norms = [r.privacy.clip_norm for r in recorder.results if r.privacy]
    assert norms[0] == 0.01 and norms[-1] != 0.01
    strategy = strategy_with_privacy(cfg, 3)
    assert isinstance(strategy, ClientDpFedAvg)
    strategy.restore(recorder.checkpoints[-1].strategy_state)
    assert strategy.dp.clip_norm == recorder.checkpoints[-1].strategy_state[0].weights[0][0]


def test_dp_noise_is_not_reproducible_from_the_runs_seed() -> None:
    """Anyone who can read the config knows the seed: noise drawn from it could be subtracted again."""
    cfg = dp_config("client", noise_multiplier=1.0, rounds=1)
    first, second = Recorder(), Recorder()
    run(cfg, first)
    run(cfg, second)
    assert not np.array_equal(first.checkpoints[0].weights[0], second.checkpoints[0].weights[0])


def secure_config(rounds: int = 6, **secure: Any) -> RunConfig:
    return RunConfig.model_validate(
        {
            "model": {"batchnorm": "federated"},
            "federation": {"clients": 3, "rounds": rounds, "intermittent": {"events": SCHEDULE if rounds >= 5 else []}},
            "privacy": {"secure_aggregation": {"threshold": 2, **secure}},
        }
    )


def test_secure_aggregation_gives_fedavg_within_its_quantization_bound() -> None:
    """Each round's global weights equal plain weighted FedAvg of the same updates to within
    SecAggParams.error_bound (weight_cap x sites / (2 x scale x total weight) per coordinate)."""
    plain, secure = Recorder(), Recorder()
    run_plain = RunConfig.model_validate(secure_config().model_dump() | {"privacy": {}})
    run(run_plain, plain, initial=[np.zeros(2), np.zeros(2)])
    run(secure_config(), secure, initial=[np.zeros(2), np.zeros(2)])
    strategy = strategy_with_privacy(secure_config(), 3)
    assert isinstance(strategy, SecureFedAvg)
    for a, b in zip(plain.checkpoints, secure.checkpoints, strict=True):
        sites = len(ASKED[a.round])
        weight = sum(SAMPLES[cid] for cid in ASKED[a.round])
        bound = strategy.params.error_bound(sites, sites, weight)
        assert 0 < bound < 1e-5
        for x, y in zip(a.weights, b.weights, strict=True):
            assert np.max(np.abs(x - y)) <= bound
    assert [r.privacy for r in secure.results] == [None] * 6, "secure aggregation alone spends no epsilon"


def test_the_batchnorm_statistics_pass_pools_through_the_secure_sum() -> None:
    """Client c reports mean c and variance c / 2 (FakeExecutor); the pooled moments match the clear pooling."""
    strategy = strategy_with_privacy(secure_config(), 3)
    assert isinstance(strategy, SecureFedAvg)
    stats = [(cid, [np.full(2, float(cid)), np.full(2, int(cid) / 2)], SAMPLES[cid]) for cid in ("1", "2", "3")]
    clear = pool_in_clear(1, stats)
    pooled = strategy.pool_moments(1, stats)
    bound = SecAggParams(2, MOMENTS_RANGE, 10_000).error_bound(3, 3, 100)
    for x, y in zip(clear, pooled, strict=True):
        assert np.max(np.abs(x - y)) <= 3 * bound  # the variance combines two decoded moments


def test_secure_aggregation_with_client_dp_adds_each_sites_share_of_the_noise() -> None:
    """Distributed DP: three sites each add N(0, (zC)^2 / 3); the mean of the clipped changes then carries noise of
    std zC / 3, as the central DP-FedAvg mean would."""
    dp = {"level": "client", "noise_multiplier": 1.0, "clip_norm": 1.0}
    cfg = RunConfig.model_validate({"privacy": {"secure_aggregation": {"threshold": 2}, "dp": dp}})
    strategy = strategy_with_privacy(cfg, 3)
    start = [np.zeros(20_000)]
    updates = [ClientUpdate(cid, [np.zeros(20_000)], SAMPLES[cid]) for cid in ("1", "2", "3")]
    result = strategy.aggregate(1, updates, start)
    assert result is not None
    assert np.std(result.weights[0]) == pytest.approx(1.0 / 3, rel=0.03)


def test_a_secure_round_with_fewer_sites_than_the_threshold_fails_and_says_so() -> None:
    """Client 3 joins at round 3, so round 1 has two sites for a threshold of three."""
    recorder = Recorder()
    with pytest.raises(
        ValueError, match="round 1: 2 site\\(s\\) trained, fewer than the secure-aggregation threshold 3"
    ):
        run(secure_config(threshold=3), recorder)
    assert recorder.results == []
