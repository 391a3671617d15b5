"""Short runs that really train with privacy on: DP-SGD at every client, DP-FedAvg, secure aggregation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.run_config import RunConfig
from worker.engine.privacy.accounting import PrivacyAccountant
from worker.local_run import run_local

pytestmark = pytest.mark.slow


def private_config(privacy: dict[str, Any], rounds: int = 2) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "private",
            "seed": 7,
            "data": {"train": {"format": "synthetic", "samples": 600}, "image_size": 32, "test_fraction": 0.25},
            "model": {"batch_size": 32, "augmentation": False},
            "federation": {"clients": 3, "rounds": rounds, "client_test_fraction": 0.2},
            "centralized": {"enabled": False},
            "privacy": privacy,
        }
    )


def test_sample_level_dp_trains_with_dp_sgd_and_reports_each_sites_epsilon(tmp_path: Path) -> None:
    cfg = private_config({"dp": {"level": "sample", "noise_multiplier": 1.0, "clip_norm": 1.0}})
    results = run_local(cfg, tmp_path)
    rounds = json.loads((tmp_path / "results.json").read_text())["federated"]["rounds"]
    assert cfg.model.normalization == "groupnorm"
    for record in rounds:
        privacy = record["privacy"]
        assert set(privacy["sites"]) == {"1", "2", "3"}
        assert privacy["epsilon"] == max(privacy["sites"].values()) > 0
        for client in record["clients"]:
            examples, steps = client["samples"], client["metrics"]["dp.steps"]
            assert steps == -(-examples // 32)  # one epoch of ceil(n / batch) Poisson batches
            accountant = PrivacyAccountant(1.0, 32 / examples, steps)
            assert privacy["sites"][client["id"]] == pytest.approx(accountant.epsilon(record["round"]))
    assert results["federated"]["final"]["auc"] > 0.5


def test_client_level_dp_stops_at_its_target_and_says_so(tmp_path: Path) -> None:
    accountant = PrivacyAccountant.client_level(2.0)
    target = (accountant.epsilon(1) + accountant.epsilon(2)) / 2
    cfg = private_config({"dp": {"level": "client", "noise_multiplier": 2.0, "target_epsilon": target}}, rounds=3)
    results = run_local(cfg, tmp_path)
    assert results["federated"]["rounds_done"] == 1
    assert "stopped before round 2" in results["federated"]["stopped"]
    assert results["federated"]["rounds"][0]["privacy"]["epsilon"] == pytest.approx(accountant.epsilon(1))


def test_secure_aggregation_trains_like_plain_fedavg(tmp_path: Path) -> None:
    plain = run_local(private_config({}), tmp_path / "plain")
    secure = run_local(private_config({"secure_aggregation": {"threshold": 2}}), tmp_path / "secure")
    assert secure["federated"]["final"]["auc"] == pytest.approx(plain["federated"]["final"]["auc"], abs=0.02)
    assert secure["federated"]["rounds"][-1]["privacy"] is None
