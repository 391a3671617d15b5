"""Checkpoint files, the checkpoint folder and the append-only round log."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from worker.engine.checkpoint import ArtifactModified, Checkpoint, CheckpointDir, load_checkpoint, save_checkpoint
from worker.engine.types import ClientRound, ClientStatus, ClientUpdate, EvalMetrics, RocCurve, RoundResult
from worker.local_run import PhaseLog


def checkpoint(rnd: int = 7) -> Checkpoint:
    return Checkpoint(
        round=rnd,
        weights=[np.arange(6, dtype=np.float32).reshape(3, 2), np.array([0.5, -1.5], dtype=np.float32)],
        strategy_state=[
            ClientUpdate("1", [np.full((3, 2), 1.0, np.float32), np.array([1.0, 1.0], np.float32)], 10),
            ClientUpdate("3", [np.full((3, 2), 3.0, np.float32), np.array([3.0, 3.0], np.float32)], 60),
        ],
        optimizer_state=[np.array(12, dtype=np.int64), np.linspace(0, 1, 4)],
    )


def test_checkpoint_round_trip_keeps_weights_strategy_and_optimizer_state(tmp_path: Path) -> None:
    saved = checkpoint()
    save_checkpoint(saved, tmp_path / "c.npz")
    loaded = load_checkpoint(tmp_path / "c.npz")
    assert loaded.round == 7
    for ours, theirs in zip(loaded.weights, saved.weights, strict=True):
        assert ours.dtype == theirs.dtype
        np.testing.assert_array_equal(ours, theirs)
    assert [(u.client_id, u.num_examples) for u in loaded.strategy_state] == [("1", 10), ("3", 60)]
    for ours_u, theirs_u in zip(loaded.strategy_state, saved.strategy_state, strict=True):
        for ours, theirs in zip(ours_u.weights, theirs_u.weights, strict=True):
            np.testing.assert_array_equal(ours, theirs)
    assert len(loaded.optimizer_state) == 2
    assert loaded.optimizer_state[0].dtype == np.int64 and int(loaded.optimizer_state[0]) == 12
    np.testing.assert_array_equal(loaded.optimizer_state[1], [0.0, 1 / 3, 2 / 3, 1.0])


def test_checkpoint_without_state_round_trips_empty_lists(tmp_path: Path) -> None:
    save_checkpoint(Checkpoint(1, [np.ones(3)]), tmp_path / "c.npz")
    loaded = load_checkpoint(tmp_path / "c.npz")
    assert (loaded.round, loaded.strategy_state, loaded.optimizer_state) == (1, [], [])
    np.testing.assert_array_equal(loaded.weights[0], np.ones(3))


def test_saving_leaves_no_temporary_file(tmp_path: Path) -> None:
    save_checkpoint(checkpoint(), tmp_path / "sub" / "c.npz")
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["c.npz"]


def test_checkpoint_dir_keeps_the_newest_two(tmp_path: Path) -> None:
    folder = CheckpointDir(tmp_path / "checkpoints")
    for rnd in range(1, 5):
        folder.save(checkpoint(rnd))
    assert folder.rounds() == [3, 4]
    assert sorted(p.name for p in folder.folder.iterdir()) == ["round-0003.npz", "round-0004.npz"]
    assert folder.load(4).round == 4


def test_checkpoint_dir_ignores_a_leftover_temporary_file(tmp_path: Path) -> None:
    folder = CheckpointDir(tmp_path)
    folder.save(checkpoint(2))
    (tmp_path / "round-0003.npz.tmp").write_bytes(b"half a checkpoint")
    assert folder.rounds() == [2]
    folder.save(checkpoint(4))  # still works, and the pruning does not count the .tmp file
    assert folder.rounds() == [2, 4]


def test_empty_checkpoint_dir_has_no_rounds(tmp_path: Path) -> None:
    assert CheckpointDir(tmp_path / "missing").rounds() == []


def round_result(rnd: int) -> RoundResult:
    metrics = EvalMetrics(
        loss=0.3,
        accuracy=0.9,
        auc=0.95,
        sensitivity=0.9,
        specificity=0.9,
        precision=0.9,
        f1=0.9,
        samples=10,
        roc=RocCurve([0.0, 1.0], [0.0, 1.0], [1.0, 0.0]),
    )
    return RoundResult(rnd, metrics, [ClientRound("1", ClientStatus.TRAINED, 10)], 1.0, 0.5, 0.0, 0.1, 0.2, 64, 64)


def test_phase_log_ignores_a_torn_last_line_and_the_next_process_truncates_it(tmp_path: Path) -> None:
    PhaseLog(tmp_path / "federated").append(round_result(1), checkpoint(1))
    log = PhaseLog(tmp_path / "federated")
    with open(log.rounds_file, "a") as file:
        file.write('{"round": 2, "metr')  # a process killed mid-write
    assert [r["round"] for r in log.records()] == [1]
    resume = log.resume_point()
    assert resume is not None
    assert resume.round == 1

    log = PhaseLog(tmp_path / "federated")  # the restarted process
    log.append(round_result(2), checkpoint(2))
    lines = log.rounds_file.read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    assert [r["round"] for r in log.records()] == [1, 2]


def test_phase_log_with_only_a_torn_line_has_no_records(tmp_path: Path) -> None:
    log = PhaseLog(tmp_path)
    log.rounds_file.write_text('{"round": 1')
    assert log.records() == []
    assert log.resume_point() is None
    log.append(round_result(1), checkpoint(1))
    assert log.rounds_file.read_text().count("\n") == 1
    assert [r["round"] for r in log.records()] == [1]


def test_a_checkpoint_is_read_only_with_the_digest_of_the_bytes_written(tmp_path: Path) -> None:
    path = tmp_path / "round-0002.npz"
    digest = save_checkpoint(checkpoint(2), path)

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_checkpoint(path, sha256=digest).round == 2


def test_a_checkpoint_overwritten_after_it_was_written_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "round-0002.npz"
    digest = save_checkpoint(checkpoint(2), path)
    save_checkpoint(Checkpoint(2, [np.random.default_rng(0).normal(size=(3, 2)), np.zeros(2)]), path)

    with pytest.raises(ArtifactModified, match=r"^checkpoint of round 2 was modified after it was written$"):
        load_checkpoint(path, sha256=digest, what="checkpoint of round 2")


def test_checkpoint_dir_returns_the_digest_of_each_round_it_saves(tmp_path: Path) -> None:
    folder = CheckpointDir(tmp_path)

    digest = folder.save(checkpoint(3))

    assert digest == hashlib.sha256(folder.path(3).read_bytes()).hexdigest()
