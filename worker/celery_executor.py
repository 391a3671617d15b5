"""Executor that fans each round out as one Celery task per client on the ``train`` queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from celery import Celery, group
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import GroupResult

from app.broker import CLIENT_STATISTICS, TRAIN_CLIENT, TRAIN_QUEUE
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.loop import Cancelled
from worker.engine.types import ClientFailure, ClientUpdate, Weights

CANCEL_CHECK_S = 0.5  # how often a round that waits on its clients checks for a cancel


class ClientTimeout(RuntimeError):
    pass


class CeleryExecutor:
    """Weights travel by reference: the server writes the global weights to the shared artifact store
    and each client task writes its update beside them; broker messages carry only paths."""

    def __init__(
        self, celery: Celery, run_id: uuid.UUID, folder: Path, *, should_stop: Callable[[], bool], timeout_s: float
    ) -> None:
        self.celery = celery
        self.run_id = run_id
        self.folder = folder
        self.should_stop = should_stop
        self.timeout_s = timeout_s

    def train(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate | ClientFailure]:
        outcomes: list[ClientUpdate | ClientFailure] = []
        for cid, outcome in self._fan_out(TRAIN_CLIENT, rnd, weights, client_ids):
            if isinstance(outcome, BaseException):
                outcomes.append(ClientFailure(cid, f"{type(outcome).__name__}: {outcome}"))
            else:
                outcomes.append(self._update(cid, outcome))
        return outcomes

    def batchnorm_statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate]:
        """Moments from the clients that answer; a client that fails here is left out of the pooling."""
        done = self._fan_out(CLIENT_STATISTICS, rnd, weights, client_ids)
        return [self._update(cid, out) for cid, out in done if not isinstance(out, BaseException)]

    def _wait(self, result: GroupResult, rnd: int) -> list[Any]:
        """Block on the result backend (Redis pub/sub, no polling), waking up to check for a cancel."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self.should_stop():
                result.revoke()
                raise Cancelled(f"cancelled during round {rnd}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.revoke()
                raise ClientTimeout(
                    f"round {rnd}: clients did not answer within {self.timeout_s:.0f} s; "
                    "is a worker listening on the 'train' queue?"
                )
            try:
                values: list[Any] = result.get(
                    timeout=min(CANCEL_CHECK_S, remaining), propagate=False, disable_sync_subtasks=False
                )
                return values
            except CeleryTimeout:
                continue

    def _update(self, client_id: str, outcome: dict[str, Any]) -> ClientUpdate:
        weights = load_checkpoint(Path(outcome["ref"])).weights
        return ClientUpdate(client_id, weights, int(outcome["num_examples"]), outcome["metrics"])

    def _fan_out(
        self, task: str, rnd: int, weights: Weights, client_ids: Sequence[str]
    ) -> list[tuple[str, dict[str, Any] | BaseException]]:
        ref = self.folder / f"round-{rnd:04d}" / f"{task.rsplit('.', 1)[-1]}-global.npz"
        save_checkpoint(Checkpoint(rnd, weights), ref, durable=False)
        signatures = [
            self.celery.signature(task, args=[str(self.run_id), rnd, cid, str(ref)], queue=TRAIN_QUEUE)
            for cid in client_ids
        ]
        result = group(signatures).apply_async()
        values = self._wait(result, rnd)
        result.forget()  # the replies are read; drop them from the result backend
        outcomes: list[tuple[str, dict[str, Any] | BaseException]] = []
        for cid, value in zip(client_ids, values, strict=True):
            if isinstance(value, dict) and value.get("cancelled"):
                raise Cancelled(f"cancelled during round {rnd}")
            outcomes.append((cid, value))
        result.forget()
        return outcomes
