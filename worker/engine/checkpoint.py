"""Round checkpoints: global weights, strategy state and optimizer state in one atomically written .npz."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from worker.engine.digest import weights_sha256 as digest_of
from worker.engine.types import ClientUpdate, Weights


@dataclass(frozen=True)
class Checkpoint:
    round: int
    weights: Weights
    strategy_state: list[ClientUpdate] = field(default_factory=list)
    optimizer_state: Weights = field(default_factory=list)  # the centralized run's optimizer
    privacy_state: dict[str, float] = field(default_factory=dict)  # the DP accountant's counts (loop.PrivacyBudget)


class ArtifactModified(ValueError):
    """A file's bytes no longer have the SHA-256 recorded when it was written: never train on it."""


def save_checkpoint(checkpoint: Checkpoint, path: Path, *, durable: bool = True) -> str:
    """Write to a temporary file and rename, so a killed process never leaves a half-written checkpoint.

    Returns the SHA-256 of the bytes written, for the writer to record where the file is referenced and the
    reader to verify. ``durable=False`` skips the fsync, for weights that only travel within a round (a crash
    redoes the round).
    """
    meta = {
        "round": checkpoint.round,
        "layers": len(checkpoint.weights),
        "optimizer": len(checkpoint.optimizer_state),
        "strategy": [[u.client_id, u.num_examples, len(u.weights)] for u in checkpoint.strategy_state],
        "privacy": checkpoint.privacy_state,
    }
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
    arrays |= {f"w{i}": w for i, w in enumerate(checkpoint.weights)}
    arrays |= {f"o{i}": w for i, w in enumerate(checkpoint.optimizer_state)}
    for k, update in enumerate(checkpoint.strategy_state):
        arrays |= {f"s{k}_{i}": w for i, w in enumerate(update.weights)}
    buffer = io.BytesIO()
    np.savez(buffer, **cast(dict[str, Any], arrays))  # the stub mistakes array names for options
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load_checkpoint(path: Path, *, sha256: str | None = None, what: str = "checkpoint") -> Checkpoint:
    """Read a checkpoint; with ``sha256``, refuse (ArtifactModified, naming ``what``) bytes that differ from
    those written. The bytes are hashed and parsed from one read, so the file cannot change in between."""
    data = path.read_bytes()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactModified(f"{what} was modified after it was written")
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
        state = [
            ClientUpdate(cid, [archive[f"s{k}_{i}"] for i in range(n_layers)], n)
            for k, (cid, n, n_layers) in enumerate(meta["strategy"])
        ]
        return Checkpoint(
            round=meta["round"],
            weights=[archive[f"w{i}"] for i in range(meta["layers"])],
            strategy_state=state,
            optimizer_state=[archive[f"o{i}"] for i in range(meta["optimizer"])],
            privacy_state=meta.get("privacy", {}),
        )


def save_round_weights(rnd: int, weights: Weights, folder: Path) -> Path:
    """Write one round's global weights alone to ``folder/round-NNNN.npz`` and return the path.

    Checkpoints also hold the strategy's per-client weights and the optimizer state, so a run keeps only its last
    few; these files (one model's weights, 2.2 MB at 150x150) stay for the run's life, so the model of any round
    can still be explained (Grad-CAM) once its checkpoint is gone. The reader verifies them with the round's
    ``weights_sha256`` (``worker.engine.digest``).
    """
    path = folder / f"round-{rnd:04d}.npz"
    save_checkpoint(Checkpoint(round=rnd, weights=weights), path)
    return path


def load_round_weights(path: Path, *, weights_sha256: str | None, rnd: int) -> Weights:
    """The weights ``save_round_weights`` wrote, refused (ArtifactModified) unless their digest is the one recorded
    with the round."""
    weights = load_checkpoint(path).weights
    if weights_sha256 is None or digest_of(weights) != weights_sha256:
        raise ArtifactModified(f"the weights of round {rnd} were modified after they were written")
    return weights


class CheckpointDir:
    """``round-NNNN.npz`` files in one folder, keeping the newest few."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder = folder
        self.keep = keep

    def path(self, rnd: int) -> Path:
        return self.folder / f"round-{rnd:04d}.npz"

    def save(self, checkpoint: Checkpoint) -> str:
        """Write the round's checkpoint and drop the oldest; returns the file's SHA-256."""
        digest = save_checkpoint(checkpoint, self.path(checkpoint.round))
        for old in self.rounds()[: -self.keep]:
            self.path(old).unlink(missing_ok=True)
        return digest

    def rounds(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        found = (re.fullmatch(r"round-(\d+)\.npz", p.name) for p in self.folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load(self, rnd: int) -> Checkpoint:
        return load_checkpoint(self.path(rnd))
