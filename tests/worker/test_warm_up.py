"""Start-up is measured apart from training: the trainer's warm-up traces once and changes no state."""

from __future__ import annotations

import numpy as np
import pytest

from app.run_config import ModelConfig
from worker.engine.client import KerasTrainer

pytestmark = pytest.mark.slow


def test_warm_up_traces_once_and_leaves_weights_and_optimizer_state_as_they_were() -> None:
    trainer = KerasTrainer(32, ModelConfig(batch_size=8))
    trainer.model.set_weights(trainer.initial_weights(3))
    before = trainer.model.get_weights()
    optimizer_before = [v.numpy() for v in trainer.model.optimizer.variables]

    first = trainer.warm_up({0: 2.0, 1: 0.5})

    assert first > 0
    for a, b in zip(trainer.model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    for variable, value in zip(trainer.model.optimizer.variables, optimizer_before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert trainer.warm_up({0: 2.0, 1: 0.5}) == 0.0
