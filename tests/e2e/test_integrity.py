"""Artifacts modified behind the service's back are refused, on the real service."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.conftest import POSTGRES_REDIS_ONLY, tiny_config
from tests.e2e.stack import Stack
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint

pytestmark = pytest.mark.slow


@POSTGRES_REDIS_ONLY
def test_a_checkpoint_overwritten_while_the_orchestrator_was_down_is_refused_on_resume(stack: Stack) -> None:
    run_id = stack.launch(tiny_config(rounds=6))["federated"]["id"]
    stack.wait_round(run_id, 2)

    stack.kill("runs", signal.SIGKILL)
    stored = stack.stored_rounds(run_id)
    k = max(stored)
    path = Path(stored[k].checkpoint)
    honest = load_checkpoint(path)
    rng = np.random.default_rng(0)
    random = [rng.normal(size=w.shape).astype(w.dtype) for w in honest.weights]
    save_checkpoint(Checkpoint(k, random, honest.strategy_state), path)
    stack.start_worker("runs", name="runs-2")
    done = stack.wait_status(run_id, {"succeeded", "failed"}, timeout_s=120)

    assert done["status"] == "failed"
    assert done["error"] == f"checkpoint of round {k} was modified after it was written"
    assert sorted(stack.stored_rounds(run_id)) == list(range(1, k + 1)), "nothing trained on the random weights"
