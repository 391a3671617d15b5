"""Resuming a local run: the centralized baseline with its optimizer state, and the CLI's resume and --fresh."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from app.run_config import RunConfig
from tests.worker.spies import Recorder
from worker.cli import main
from worker.engine.digest import weights_sha256
from worker.engine.types import RoundResult
from worker.local_run import PhaseLog, run_local

pytestmark = pytest.mark.slow


def small(**changes: Any) -> dict[str, Any]:
    return {
        "name": "small",
        "seed": 3,
        "data": {"train": {"format": "synthetic", "samples": 160}, "image_size": 32, "test_fraction": 0.25},
        "model": {"optimizer": "adam", "calibration_samples": 64},
        "federation": {"clients": 2, "rounds": 1},
        "centralized": {"enabled": True, "epochs": 3},
    } | changes


class Interrupt(Exception):
    pass


def test_an_interrupted_centralized_baseline_resumes_from_its_checkpoint_with_its_optimizer_state(
    tmp_path: Path, recorder: Recorder
) -> None:
    cfg = RunConfig.model_validate(small())

    def stop_after_epoch_1(phase: str, result: RoundResult) -> None:
        if phase == "centralized" and result.round == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_local(cfg, tmp_path / "interrupted", progress=stop_after_epoch_1)
    saved = PhaseLog(tmp_path / "interrupted" / "centralized").checkpoints.load(1)
    epoch_1 = recorder.fits[-1]
    steps = math.ceil(epoch_1.samples / cfg.model.batch_size)
    recorder.clear()
    resumed = run_local(cfg, tmp_path / "interrupted")

    assert recorder.rounds() == [], "the finished federated phase is not trained again"
    assert len(recorder.fits) == 2, "epochs 2 and 3 only"
    epoch_2 = recorder.fits[0]
    assert epoch_2.start_sha256 == weights_sha256(saved.weights)
    assert epoch_2.optimizer_state is not None
    assert all(np.array_equal(a, b) for a, b in zip(epoch_2.optimizer_state, saved.optimizer_state, strict=True))
    assert epoch_1.iterations(saved.optimizer_state) == steps
    assert epoch_2.iterations(epoch_2.result.optimizer_state) == 2 * steps, "the restored state is the one trained on"
    assert [r["round"] for r in resumed["centralized"]["rounds"]] == [1, 2, 3]

    recorder.clear()
    run_local(cfg, tmp_path / "whole")
    whole = recorder.fits[-1].result.weights
    final = PhaseLog(tmp_path / "interrupted" / "centralized").checkpoints.load(3).weights
    # Only the whole optimizer state (Adam's moments too) makes the interrupted run train as the whole one did.
    for interrupted_layer, whole_layer in zip(final, whole, strict=True):
        np.testing.assert_allclose(interrupted_layer, whole_layer, rtol=1e-5, atol=1e-6)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_fedlens_run_resumes_its_folder_and_fresh_starts_it_over(tmp_path: Path, recorder: Recorder) -> None:
    config, other = tmp_path / "small.yaml", tmp_path / "other.yaml"
    config.write_text(yaml.safe_dump(small(federation={"clients": 2, "rounds": 2}, centralized={"enabled": False})))
    other.write_text(yaml.safe_dump(small(seed=4, centralized={"enabled": False})))
    out = str(tmp_path / "out")

    first = invoke("run", str(config), "--output", out)
    assert first.exit_code == 0, first.output
    assert recorder.rounds() == [1, 2]
    initial = recorder.calls[0].start_sha256
    recorder.clear()

    again = invoke("run", str(config), "--output", out)
    assert again.exit_code == 0, again.output
    assert recorder.rounds() == [], "a finished folder resumes after its last round: nothing to train"

    refused = invoke("run", str(other), "--output", out)
    assert refused.exit_code == 2  # a user error: one line, no traceback
    assert "holds a different experiment; choose another folder or pass --fresh" in refused.output

    fresh = invoke("run", str(config), "--output", out, "--fresh")
    assert fresh.exit_code == 0, fresh.output
    assert recorder.rounds() == [1, 2]
    assert recorder.calls[0].start_sha256 == initial, "round 1 starts from the initial weights, not a checkpoint"
    assert [r["round"] for r in PhaseLog(tmp_path / "out" / "federated").records()] == [1, 2]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["round"] for r in results["federated"]["rounds"]] == [1, 2]
