"""Client task outputs are recorded with their SHA-256 when written, and a reply is accepted only if it matches.

A reply comes through the result backend, which anyone on the broker can write to: its file, round, client and
sample count are checked against what the task was asked, what its client holds and what its worker recorded.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import ClientArtifact
from worker.engine.checkpoint import ArtifactModified, load_checkpoint
from worker.engine.types import ClientUpdate

REPLY_KEYS = {"ref", "num_examples", "metrics", "client", "round"}


class ForgedReply(ArtifactModified):
    """A client task's reply disagrees with what the task was asked or what its worker recorded."""


def output_path(folder: Path, kind: str, client_id: str, task_id: str) -> Path:
    """Where a client task writes its output: beside the round's global weights, in a file of this task alone."""
    return folder / f"{kind}-{client_id}-{task_id}.npz"


@dataclass(frozen=True)
class Asked:
    """What one client task was asked to do."""

    round: int
    client_id: str
    kind: str  # "update" or "stats"


def record(session: Session, *, run_id: uuid.UUID, task_id: str, asked: Asked, path: Path, sha256: str, n: int) -> None:
    """The worker's word on the file it wrote; a task delivered twice writes its row once."""
    if session.get(ClientArtifact, task_id) is None:
        session.add(
            ClientArtifact(
                task_id=task_id,
                run_id=run_id,
                round=asked.round,
                client_id=asked.client_id,
                kind=asked.kind,
                path=str(path),
                sha256=sha256,
                num_examples=n,
            )
        )
    session.commit()


def accepted_update(
    reply: Any, asked: Asked, *, task_id: str, folder: Path, held: int, recorded: ClientArtifact | None
) -> ClientUpdate:
    """The weights that task ``task_id`` wrote, if its reply answers ``asked`` (the file this task alone writes in
    the round's exchange ``folder``, at most the ``held`` training images of its client) as its worker recorded,
    and the file's bytes are those recorded. Raises ForgedReply or ArtifactModified otherwise."""
    who = f"the reply of client {asked.client_id}'s {asked.kind} task in round {asked.round}"
    if not isinstance(reply, dict) or set(reply) != REPLY_KEYS:
        raise ForgedReply(f"{who} is not a task reply; it is refused")
    if (reply["client"], reply["round"]) != (asked.client_id, asked.round):
        raise ForgedReply(f"{who} answers for another client or round; it is refused")
    path = output_path(folder, asked.kind, asked.client_id, task_id)
    if reply["ref"] != str(path):
        raise ForgedReply(f"{who} names a file other than the one its task writes; it is refused")
    n = reply["num_examples"]
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= held:
        raise ForgedReply(f"{who} claims a sample count outside 0..{held}, what that client holds; it is refused")
    claimed = (asked.round, asked.client_id, asked.kind, str(path), n)
    if (
        recorded is None
        or (recorded.round, recorded.client_id, recorded.kind, recorded.path, recorded.num_examples) != claimed
    ):
        raise ForgedReply(f"{who} does not match what the worker that wrote its file recorded; it is refused")
    metrics = reply["metrics"]
    if not isinstance(metrics, dict) or not all(isinstance(v, int | float) for v in metrics.values()):
        raise ForgedReply(f"{who} carries metrics that are not numbers; it is refused")
    noun = "update" if asked.kind == "update" else "BatchNorm statistics"
    what = f"the {noun} of client {asked.client_id} in round {asked.round}"
    weights = load_checkpoint(path, sha256=recorded.sha256, what=what).weights
    return ClientUpdate(asked.client_id, weights, n, metrics)


def recorded(sessions: sessionmaker[Session], task_ids: list[str]) -> dict[str, ClientArtifact]:
    """The rows the workers wrote for these tasks, by task id."""
    with sessions() as session:
        rows = session.scalars(select(ClientArtifact).where(ClientArtifact.task_id.in_(task_ids)))
        return {row.task_id: row for row in rows}
