"""A client task's reply is accepted only as the answer to what its task was asked, with the file it recorded."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.models import ClientArtifact
from worker.engine.checkpoint import ArtifactModified, Checkpoint, save_checkpoint
from worker.integrity import Asked, ForgedReply, accepted_update, output_path

TASK = "0f6c1e52-3c43-4f3e-9a51-7d0d7c2b9f11"
ASKED = Asked(round=3, client_id="2", kind="update")
HELD = 120  # training images client 2 holds


def written(folder: Path, weights: list[np.ndarray] | None = None) -> tuple[dict[str, Any], ClientArtifact]:
    """What an honest worker leaves: the file, the reply it sends and the row it records."""
    path = output_path(folder, "update", "2", TASK)
    digest = save_checkpoint(Checkpoint(3, weights or [np.ones((2, 2), np.float32)]), path)
    reply = {"ref": str(path), "num_examples": 100, "metrics": {"train.loss": 0.5}, "client": "2", "round": 3}
    row = ClientArtifact(
        task_id=TASK,
        run_id=uuid.uuid4(),
        round=3,
        client_id="2",
        kind="update",
        path=str(path),
        sha256=digest,
        num_examples=100,
    )
    return reply, row


def accept(folder: Path, reply: Any, row: ClientArtifact | None) -> object:
    return accepted_update(reply, ASKED, task_id=TASK, folder=folder, held=HELD, recorded=row)


def test_an_honest_reply_gives_the_weights_its_worker_wrote(tmp_path: Path) -> None:
    reply, row = written(tmp_path)

    update = accepted_update(reply, ASKED, task_id=TASK, folder=tmp_path, held=HELD, recorded=row)

    assert (update.client_id, update.num_examples, dict(update.metrics)) == ("2", 100, {"train.loss": 0.5})
    np.testing.assert_array_equal(update.weights[0], np.ones((2, 2)))


def test_a_client_update_modified_after_it_was_written_is_refused(tmp_path: Path) -> None:
    reply, row = written(tmp_path)
    save_checkpoint(Checkpoint(3, [np.full((2, 2), 9.0, np.float32)]), Path(reply["ref"]))

    with pytest.raises(
        ArtifactModified, match=r"^the update of client 2 in round 3 was modified after it was written$"
    ):
        accept(tmp_path, reply, row)


@pytest.mark.parametrize(
    ("forged", "says"),
    [
        ({"client": "1"}, "answers for another client or round"),
        ({"round": 2}, "answers for another client or round"),
        ({"ref": "/etc/passwd"}, "names a file other than the one its task writes"),
        ({"num_examples": 10**9}, r"claims a sample count outside 0\.\.120"),
        ({"num_examples": -1}, r"claims a sample count outside 0\.\.120"),
        ({"num_examples": True}, r"claims a sample count outside 0\.\.120"),
        ({"num_examples": 90}, "does not match what the worker that wrote its file recorded"),
        ({"metrics": {"train.loss": "high"}}, "carries metrics that are not numbers"),
        ({"extra": 1}, "is not a task reply"),
    ],
)
def test_a_forged_reply_is_refused(tmp_path: Path, forged: dict[str, Any], says: str) -> None:
    reply, row = written(tmp_path)

    with pytest.raises(ForgedReply, match=rf"^the reply of client 2's update task in round 3 {says}"):
        accept(tmp_path, reply | forged, row)


def test_a_reply_whose_file_no_worker_recorded_is_refused(tmp_path: Path) -> None:
    reply, _ = written(tmp_path)

    with pytest.raises(ForgedReply, match="does not match what the worker that wrote its file recorded"):
        accept(tmp_path, reply, None)


def test_a_reply_pointing_at_another_tasks_file_of_the_same_round_is_refused(tmp_path: Path) -> None:
    reply, row = written(tmp_path)
    other = output_path(tmp_path, "update", "2", str(uuid.uuid4()))

    with pytest.raises(ForgedReply, match="names a file other than the one its task writes"):
        accept(tmp_path, reply | {"ref": str(other)}, row)
