"""Executor that fans each round out as one Celery task per client on the ``train`` queue."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult
from kombu.exceptions import OperationalError as BrokerUnreachable
from redis.exceptions import ConnectionError as RedisUnreachable
from sqlalchemy.orm import Session, sessionmaker

from app.broker import CLIENT_STATISTICS, EVALUATE_CLIENT, TRAIN_CLIENT, TRAIN_QUEUE
from app.models import ClientArtifact
from worker import integrity, lease
from worker.engine.checkpoint import Checkpoint, save_checkpoint
from worker.engine.loop import Cancelled
from worker.engine.thresholds import GridCounts
from worker.engine.types import ClientEvaluation, ClientFailure, ClientUpdate, Weights
from worker.failures import Reported, user_message

CANCEL_CHECK_S = 0.5  # how often a round that waits on its clients checks for a cancel and for dead workers
BROKER_RETRY_S = 1.0  # how often a round whose broker is down tries it again
MAX_SENDS = 3  # a client whose worker dies this often in one round counts as failed for that round
MAX_STARTUP_S = 24 * 3600.0  # an evaluation reply claiming a longer (or negative) start-up is malformed
logger = logging.getLogger(__name__)


class ClientTimeout(Reported):
    """No answer from a round's clients within ``FEDLENS_CLIENT_TIMEOUT_S``."""


class StaleRound(RuntimeError):
    """The task found its round already stored: another orchestrator has taken the run over."""


#: (client id, id of the task whose outcome this is, the task's reply or what it raised)
Outcome = tuple[str, str, dict[str, Any] | BaseException]


class CeleryExecutor:
    """Weights travel by reference: the server writes the global weights to the shared artifact store
    and each client task writes its update beside them; broker messages carry only paths and digests.

    Every file is checked against the SHA-256 its writer recorded, and every reply against what its task was
    asked (``samples``: the training images each client holds); a mismatch raises ArtifactModified, which fails
    the run rather than train on weights nobody can vouch for."""

    def __init__(
        self,
        celery: Celery,
        run_id: uuid.UUID,
        folder: Path,
        *,
        sessions: sessionmaker[Session],
        samples: Mapping[str, int],
        should_stop: Callable[[], bool],
        timeout_s: float,
    ) -> None:
        self.celery = celery
        self.run_id = run_id
        self.folder = folder
        self.sessions = sessions
        self.samples = samples
        self.should_stop = should_stop
        self.timeout_s = timeout_s

    def train(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate | ClientFailure]:
        outcomes: list[ClientUpdate | ClientFailure] = []
        for cid, outcome in self._updates(TRAIN_CLIENT, "update", rnd, weights, client_ids):
            if isinstance(outcome, BaseException):
                logger.warning("round %d: client %s failed: %r", rnd, cid, outcome)
                outcomes.append(ClientFailure(cid, user_message(outcome)))
            else:
                outcomes.append(outcome)
        return outcomes

    def batchnorm_statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate]:
        """Moments from the clients that answer; a client that fails here is left out of the pooling."""
        done = self._updates(CLIENT_STATISTICS, "stats", rnd, weights, client_ids)
        return [out for _, out in done if not isinstance(out, BaseException)]

    def evaluate(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientEvaluation]:
        """Grid counts from the clients that answer; a failed or malformed reply leaves that client out."""
        evaluations = []
        for cid, _, out in self._fan_out(EVALUATE_CLIENT, rnd, weights, client_ids):
            try:
                if isinstance(out, BaseException):
                    raise out
                validation, test = GridCounts.from_lists(out["validation"]), GridCounts.from_lists(out["test"])
                startup_s = float(out.get("startup_s", 0.0))
                if not 0 <= startup_s < MAX_STARTUP_S:
                    raise ValueError(f"a start-up of {startup_s} s")
            except Exception as error:  # whatever the task raised, or a reply that fails validation
                logger.warning("round %d: no evaluation from client %s (%s)", rnd, cid, error)
                continue
            evaluations.append(ClientEvaluation(cid, validation, test, startup_s))
        return evaluations

    def _updates(
        self, task: str, kind: str, rnd: int, weights: Weights, client_ids: Sequence[str]
    ) -> list[tuple[str, ClientUpdate | BaseException]]:
        """Each client's weights as its task wrote them, or what the task raised; integrity errors propagate."""
        done = self._fan_out(task, rnd, weights, client_ids)
        rows = integrity.recorded(self.sessions, [tid for _, tid, out in done if not isinstance(out, BaseException)])
        return [
            (
                cid,
                out
                if isinstance(out, BaseException)
                else self._update(rnd, integrity.Asked(rnd, cid, kind), tid, out, rows.get(tid)),
            )
            for cid, tid, out in done
        ]

    def _update(
        self, rnd: int, asked: integrity.Asked, task_id: str, reply: dict[str, Any], row: ClientArtifact | None
    ) -> ClientUpdate:
        folder = self.folder / f"round-{rnd:04d}"
        held = self.samples[asked.client_id]
        return integrity.accepted_update(reply, asked, task_id=task_id, folder=folder, held=held, recorded=row)

    def _fan_out(self, task: str, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[Outcome]:
        ref = self.folder / f"round-{rnd:04d}" / f"{task.rsplit('.', 1)[-1]}-global.npz"
        digest = save_checkpoint(Checkpoint(rnd, weights), ref, durable=False)
        fan_out = FanOut(
            self.celery, task, [str(self.run_id), rnd], ref, digest, client_ids, broker_wait_s=self.timeout_s
        )
        try:
            values = self._wait(fan_out, rnd)
        finally:
            fan_out.forget()
        outcomes: list[Outcome] = []
        for cid in client_ids:
            value = values[cid]
            if isinstance(value, dict) and value.get("cancelled"):
                raise Cancelled(f"cancelled during round {rnd}")
            if isinstance(value, dict) and value.get("stale"):
                value = StaleRound(f"round {rnd} is already stored")
            outcomes.append((cid, fan_out.task_id(cid), value))
        return outcomes

    def _wait(self, fan_out: FanOut, rnd: int) -> dict[str, Any]:
        """Block on the result backend (Redis pub/sub, no polling), waking up to check for a cancel and for
        clients whose worker died (their lease expired), which are sent again."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self.should_stop():
                fan_out.revoke()
                raise Cancelled(f"cancelled during round {rnd}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                fan_out.revoke()
                raise ClientTimeout(
                    f"round {rnd}: clients did not answer within {self.timeout_s:.0f} s; "
                    "is a worker listening on the 'train' queue?"
                )
            try:
                return fan_out.get(min(CANCEL_CHECK_S, remaining))
            except CeleryTimeout:
                fan_out.resend_lost(rnd)
            except (RedisUnreachable, BrokerUnreachable) as error:
                # The broker is restarting (fedlens up supervises it; its AOF keeps tasks and replies): wait for it
                # within the round's timeout instead of failing the run on a connection reset.
                logger.warning("round %d: the broker does not answer (%s); waiting for it", rnd, error)
                time.sleep(BROKER_RETRY_S)


class WorkerLost(Reported):
    """A client's task lost its worker ``MAX_SENDS`` times in one round."""


class FanOut:
    """One fan-out: the task of each client, sent again (up to ``MAX_SENDS`` times) when its worker dies."""

    def __init__(
        self,
        celery: Celery,
        task: str,
        args: list[Any],
        ref: Path,
        sha256: str,
        client_ids: Sequence[str],
        *,
        broker_wait_s: float = 0.0,
    ) -> None:
        self.celery, self.task, self.args, self.ref, self.sha256 = celery, task, args, ref, sha256
        self.broker_wait_s = broker_wait_s
        self.redis = celery.backend.client
        self.sends = dict.fromkeys(client_ids, 0)
        self.failed: dict[str, BaseException] = {}
        self.current = {cid: self._send(cid) for cid in client_ids}
        self.retired: list[AsyncResult] = []

    def _send(self, client_id: str) -> AsyncResult:
        """Queue the client's task, waiting up to ``broker_wait_s`` for a broker that is restarting (fedlens up
        supervises it), so that a round that starts in that second does not fail the run."""
        self.sends[client_id] += 1
        args = [*self.args, client_id, str(self.ref), self.sha256]
        signature = self.celery.signature(self.task, args=args, queue=TRAIN_QUEUE)
        give_up = time.monotonic() + self.broker_wait_s
        while True:
            try:
                return signature.apply_async()
            except (RedisUnreachable, BrokerUnreachable) as error:
                if time.monotonic() >= give_up:
                    raise
                logger.warning("the broker does not answer (%s); sending client %s's task again", error, client_id)
                time.sleep(BROKER_RETRY_S)

    def task_id(self, client_id: str) -> str:
        """The id of the client's last attempt, whose outcome ``get`` reports."""
        return str(self.current[client_id].id) if client_id in self.current else ""

    def get(self, timeout: float) -> dict[str, Any]:
        """Every client's outcome (a reply dict or an exception), or CeleryTimeout if one waits past ``timeout``."""
        outcomes = dict(self.failed)
        while True:
            for cid, result in self.current.items():
                if cid not in outcomes and result.ready():
                    outcomes[cid] = result.get(propagate=False, disable_sync_subtasks=False)
            waiting = [r for cid, r in self.current.items() if cid not in outcomes]
            if not waiting:
                return outcomes
            # The backend wakes us as soon as this reply arrives (Redis pub/sub), or raises after ``timeout``.
            waiting[0].get(timeout=timeout, propagate=False, disable_sync_subtasks=False)

    def resend_lost(self, rnd: int) -> None:
        by_id = {str(r.id): cid for cid, r in self.current.items()}
        for task_id in lease.expired(self.redis, by_id):
            cid, lost = by_id[task_id], self.current[by_id[task_id]]
            if lost.ready():  # it finished just as its lease lapsed
                continue
            lost.revoke()
            self.retired.append(lost)
            if self.sends[cid] >= MAX_SENDS:
                self.failed[cid] = WorkerLost(f"the worker training client {cid} died {MAX_SENDS} times")
                del self.current[cid]
                logger.error("round %d: client %s lost its worker %d times; giving up on it", rnd, cid, MAX_SENDS)
            else:
                self.current[cid] = self._send(cid)
                logger.warning("round %d: the worker training client %s died; sent its task again", rnd, cid)

    def revoke(self) -> None:
        for result in self.current.values():
            result.revoke()

    def forget(self) -> None:
        results = [*self.current.values(), *self.retired]
        lease.release(self.redis, [str(r.id) for r in results])
        for result in results:
            result.forget()  # the replies are read; drop them from the result backend
