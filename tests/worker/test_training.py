"""Small end-to-end runs that really train the study's CNN (Keras on the configured backend)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.run_config import RunConfig
from tests.worker.spies import Recorder
from worker.engine.digest import weights_sha256
from worker.engine.experiment import CLIENT_FIT, derive_seed
from worker.engine.types import ClientUpdate, RoundResult
from worker.local_run import PhaseLog, run_local

pytestmark = pytest.mark.slow


def tiny_config(**federation: object) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "tiny",
            "seed": 7,
            "data": {"train": {"format": "synthetic", "samples": 600}, "image_size": 32, "test_fraction": 0.25},
            "federation": {"clients": 3, "rounds": 3, "client_test_fraction": 0.2, **federation},
            "centralized": {"enabled": True, "epochs": 2},
        }
    )


def test_tiny_federated_run_learns_and_writes_results(tmp_path: Path) -> None:
    results = run_local(tiny_config(), tmp_path)

    assert results["federated"]["final"]["auc"] > 0.9
    assert results["centralized"]["final"]["auc"] > 0.9
    saved = json.loads((tmp_path / "results.json").read_text())
    rounds = saved["federated"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(c["status"] == "trained" and c["samples"] > 0 for r in rounds for c in r["clients"])
    assert saved["federated"]["critical_path_s"] < saved["federated"]["wall_time_s"]
    assert {"loss", "accuracy", "auc"} <= saved["centralized"]["final"].keys()
    assert (tmp_path / "federated.keras").stat().st_size > 1_000_000
    for phase, last in (("federated", 3), ("centralized", 2)):
        gallery = json.loads((tmp_path / phase / "gradcam" / f"round-{last:04d}.json").read_text())
        assert gallery["status"] == "ready" and gallery["items"][0]["category"] == "TP"
        assert all((tmp_path / phase / "gradcam" / item["file"]).is_file() for item in gallery["items"])


def test_saved_model_loads_in_plain_keras(tmp_path: Path) -> None:
    import keras

    run_local(tiny_config(rounds=1), tmp_path)
    model = keras.models.load_model(tmp_path / "federated.keras")
    assert model.count_params() == 459_969  # the study's CNN with 'same' padding in the last blocks at 32x32
    assert model.predict(np.zeros((2, 32, 32, 1), np.float32), verbose=0).shape == (2, 1)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_repeating_a_round(tmp_path: Path, recorder: Recorder) -> None:
    """The restarted run trains rounds 3 and 4 only, and round 3 starts from the checkpoint of round 2."""
    cfg = tiny_config(rounds=4, intermittent={"approach": "keep-last", "events": [{"client": 2, "leaves": 3}]})

    def stop_after_round_2(phase: str, result: RoundResult) -> None:
        if phase == "federated" and result.round == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_local(cfg, tmp_path, progress=stop_after_round_2)
    stored = PhaseLog(tmp_path / "federated").checkpoints
    after_2 = weights_sha256(stored.load(2).weights)  # gone once round 4 is stored (two are kept)
    recorder.clear()
    seen: list[int] = []
    results = run_local(cfg, tmp_path, progress=lambda phase, r: seen.append(r.round) if phase == "federated" else None)

    assert seen == [3, 4]
    assert recorder.rounds() == [3, 4], "rounds stored before the interruption are not trained again"
    assert [c.start_sha256 for c in recorder.calls if c.kind == "train"] == [
        after_2,
        weights_sha256(stored.load(3).weights),
    ]
    rounds = results["federated"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert [c["status"] for c in rounds[3]["clients"]] == ["trained", "kept", "trained"]
    assert results["federated"]["final"]["auc"] > 0.9


def test_precise_batchnorm_beats_keras_moving_statistics(tmp_path: Path) -> None:
    """The documented fix: with Keras' own moving statistics the first rounds predict one class."""
    fixed = run_local(tiny_config(rounds=1), tmp_path / "fixed")
    keras_bn = tiny_config().model.model_copy(update={"batchnorm": "keras"})
    stale_cfg = tiny_config(rounds=1).model_copy(update={"model": keras_bn})
    stale = run_local(stale_cfg, tmp_path / "stale")

    assert fixed["federated"]["final"]["accuracy"] > 0.8
    assert stale["federated"]["final"]["accuracy"] < fixed["federated"]["final"]["accuracy"] - 0.2


def test_local_batchnorm_averages_each_clients_precise_statistics_without_a_second_pass(
    tmp_path: Path, recorder: Recorder
) -> None:
    """``local`` differs from ``keras`` (each update carries the precise moments of its client's data under its
    own weights, not Keras' moving averages) and from ``federated`` (no statistics pass under the new global
    weights: the global moments are the sample-weighted mean of the clients')."""
    raw = tiny_config(rounds=1).model_dump(mode="json")
    cfg = RunConfig.model_validate(
        raw | {"model": raw["model"] | {"batchnorm": "local"}, "centralized": {"enabled": False}}
    )

    run_local(cfg, tmp_path)

    assert [(c.kind, c.round) for c in recorder.calls] == [("train", 1)]
    call = recorder.calls[0]
    updates = [u for u in call.outcomes if isinstance(u, ClientUpdate)]
    trainer, slots = call.executor.trainer, call.executor.trainer.batchnorm_slots
    for u in updates:
        seed = derive_seed(cfg.seed, CLIENT_FIT, 1, int(u.client_id))
        precise = trainer.batchnorm_statistics(u.weights, call.executor.clients[u.client_id].train, seed)
        carried = [u.weights[i + k] for i in slots for k in (0, 1)]
        for got, want in zip(carried, precise, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=f"client {u.client_id}")
    counts = [u.num_examples for u in updates]
    global_weights = PhaseLog(tmp_path / "federated").checkpoints.load(1).weights
    for layer, weights in enumerate(global_weights):
        mean = np.average(np.stack([u.weights[layer] for u in updates]), axis=0, weights=counts)
        np.testing.assert_allclose(weights, mean, rtol=1e-5, atol=1e-7, err_msg=f"layer {layer}")


def test_local_training_is_reproducible_for_a_seed() -> None:
    """A resumed or redelivered client round must train exactly as the first attempt did."""
    from app.run_config import ModelConfig
    from worker.engine.client import KerasTrainer
    from worker.engine.data import Dataset
    from worker.engine.synthetic import synthetic_xrays

    images, labels = synthetic_xrays(96, 32, 0.5, seed=3)
    data = Dataset(images[..., None], labels)
    trainer = KerasTrainer(32, ModelConfig(batch_size=16))
    start = trainer.initial_weights(1)

    first = trainer.fit(start, data, epochs=2, seed=9).weights
    again = trainer.fit(start, data, epochs=2, seed=9).weights
    other = trainer.fit(start, data, epochs=2, seed=10).weights

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
