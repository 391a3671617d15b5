"""Executor over hospital sites: each round becomes one task per site in the database, pulled by the site's agent.

The orchestrator never reaches a site: it publishes the global weights under their SHA-256, queues the tasks and
waits for the sites' answers, which arrive through the /api/site/ protocol. A site that is offline when the round
starts, or silent until ``federation.round_timeout_s``, counts as a failed client of that round (the intermittent
approach then drops it or keeps its last update); its late answer is recorded as late and never merged. A site
whose heartbeats stop during a round, while the other sites' still arrive, is given up at once instead of at the
timeout: its agent died, and a slow site that is still alive keeps its whole ``round_timeout_s``.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from app.digest import file_sha256
from app.models import Run, Site, SiteTask, utcnow
from app.notify import Subscription, answers_channel, publish, site_channel
from app.run_config import RunConfig, SiteRef
from app.settings import Settings
from app.sites import blobs, registry
from app.sites.join import lock_experiment
from app.sites.protocol import DpSettings, SecAggTask, TaskResult, TaskSettings
from worker.engine.aggregate import balanced_class_weight
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.data import DataError
from worker.engine.loop import Cancelled
from worker.engine.thresholds import GridCounts, empty_counts
from worker.engine.types import ClientEvaluation, ClientFailure, ClientUpdate, Weights
from worker.failures import Reported

POLL_S = 0.5  # the longest the executor goes without looking at its tasks (answers, heartbeats, a cancel)
logger = logging.getLogger(__name__)


class Signals:
    """Redis notifications that save a round the polling delays: the agents' long polls wake when their task is
    queued, and the executor wakes when a site posts an answer. The database stays the source of truth, so a lost
    notification costs at most ``POLL_S`` here and ``stream_recheck_s`` for an agent."""

    def __init__(self, settings: Settings, run_id: uuid.UUID) -> None:
        self.settings, self.run_id = settings, run_id

    def queued(self, site_ids: Collection[uuid.UUID]) -> None:
        publish(self.settings, *(site_channel(site_id) for site_id in site_ids))

    @contextmanager
    def answers(self) -> Iterator[Subscription]:
        """Subscribed to the run's answers from before a stage's tasks are queued until their answers are in."""
        subscription = Subscription(self.settings, answers_channel(self.run_id))
        subscription.open()
        try:
            yield subscription
        finally:
            subscription.close()


class TooFewSites(Reported):
    """Fewer sites answered a round than ``federation.min_sites`` (or than secure aggregation's threshold)."""


@dataclass(frozen=True)
class SiteSlot:
    """Client ``client_id`` of the run is this site, training on this dataset."""

    client_id: str
    site_id: uuid.UUID
    name: str
    dataset: str
    counts: dict[str, dict[str, int]]  # the dataset's declared images per split and class


def site_slots(session: Session, cfg: RunConfig) -> list[SiteSlot]:
    """The run's sites in config order (client i is site i), with what each declared of its dataset.

    Raises DataError naming a site that does not exist or a dataset its agent has not declared.
    """
    return [site_slot(session, number, ref) for number, ref in enumerate(cfg.federation.sites, start=1)]


def site_slot(session: Session, number: int, ref: SiteRef) -> SiteSlot:
    """Client ``number`` of a run is site ``ref``; raises DataError as ``site_slots`` does."""
    try:
        site, summary = registry.declared_dataset(session, ref.site, ref.dataset)
    except registry.Undeclared as missing:
        raise DataError(str(missing), "federation.sites") from None
    return SiteSlot(str(number), site.id, site.name, ref.dataset, summary["counts"])


def _train_images(slot: SiteSlot) -> int:
    return sum(slot.counts.get("train", {}).values())


def class_weight(cfg: RunConfig, slots: Sequence[SiteSlot]) -> dict[int, float] | None:
    """Balanced loss weights from the sites' declared training counts: counts are all that leave a site."""
    if cfg.model.class_weight == "none":
        return None
    train = [s.counts.get("train", {}) for s in slots]
    return balanced_class_weight([(c.get("negative", 0), c.get("positive", 0)) for c in train])


def dp_settings(cfg: RunConfig) -> DpSettings | None:
    dp = cfg.privacy.dp
    if dp is None:
        return None
    return DpSettings(level=dp.level, noise_multiplier=dp.noise_multiplier, clip_norm=dp.clip_norm, delta=dp.delta)


class SiteExecutor:
    """The third Executor, beside in-process and Celery: the engine loop is the same whoever trains."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        run_id: uuid.UUID,
        cfg: RunConfig,
        slots: Sequence[SiteSlot],
        artifacts: Path,
        *,
        should_stop: Callable[[], bool],
        offline_after_s: float,
        signals: Signals,
    ) -> None:
        """``offline_after_s``: settings.site_offline_after_s, after which a silent site counts as offline."""
        self.sessions, self.run_id, self.cfg, self.artifacts = sessions, run_id, cfg, artifacts
        self.signals = signals
        self.slots = {s.client_id: s for s in slots}
        self.should_stop = should_stop
        self.offline_after_s = offline_after_s
        self.settings = TaskSettings(
            image_size=cfg.data.image_size,
            model=cfg.model.model_dump(mode="json"),
            local_epochs=cfg.federation.local_epochs,
            seed=cfg.seed,
            class_weight=class_weight(cfg, slots),
            dp=dp_settings(cfg),
        )
        self._pooled_test: GridCounts | None = None
        self._published: tuple[Weights, str] | None = None  # the last weights published and their blob's SHA-256

    def samples(self) -> dict[str, int]:
        return {cid: _train_images(s) for cid, s in self.slots.items()}

    def newcomers(self, rnd: int) -> dict[str, tuple[int, int]]:
        """Sites added to the run while it trains (``POST /api/runs/{id}/sites``) since the last look, as the loop's
        ``Newcomers``: client id to (join round, training images). A site that cannot join yet is asked again next
        round; the class weights stay those chosen at launch. Marks round ``rnd`` begun under the experiment's row
        lock, which a joining site takes too: it is either seen here or promised a later round."""
        with self.sessions() as session:
            run = session.get(Run, self.run_id)
            if run is None:
                return {}
            experiment = lock_experiment(session, run.experiment_id)
            run.started_round = max(run.started_round, rnd)
            cfg = RunConfig.model_validate(experiment.config)
            joined = {e.client: e.joins for e in cfg.federation.intermittent.events if e.joins is not None}
            fresh = []
            for number, ref in enumerate(cfg.federation.sites, start=1):
                if str(number) in self.slots:
                    continue
                try:
                    fresh.append(site_slot(session, number, ref))
                except DataError as error:  # e.g. its agent stopped declaring the dataset: asked again next round
                    logger.warning("run %s: site %s cannot join round %d yet: %s", self.run_id, ref.site, rnd, error)
            session.commit()
        for slot in fresh:
            self.slots[slot.client_id] = slot
            logger.info("run %s: site %s joins at round %d", self.run_id, slot.name, rnd)
        return {s.client_id: (joined.get(int(s.client_id), rnd), _train_images(s)) for s in fresh}

    def train(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate | ClientFailure]:
        outcomes: list[ClientUpdate | ClientFailure] = []
        for cid, answer in self.round_trip("train", rnd, weights, client_ids).items():
            outcomes.append(answer if isinstance(answer, ClientFailure) else self._update(cid, answer))
        trained = sum(isinstance(o, ClientUpdate) for o in outcomes)
        if client_ids and trained < self.cfg.federation.min_sites:
            raise TooFewSites(
                f"round {rnd}: {trained} of {len(client_ids)} sites answered; federation.min_sites is "
                f"{self.cfg.federation.min_sites} (see the Sites page for which are offline)"
            )
        return outcomes

    def batchnorm_statistics(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientUpdate]:
        answers = self.round_trip("statistics", rnd, weights, client_ids)
        updates = [self._update(cid, a) for cid, a in answers.items() if not isinstance(a, ClientFailure)]
        return [u for u in updates if isinstance(u, ClientUpdate)]

    def evaluate(self, rnd: int, weights: Weights, client_ids: Sequence[str]) -> list[ClientEvaluation]:
        evaluations = []
        for cid, answer in self.round_trip("evaluate", rnd, weights, client_ids).items():
            if isinstance(answer, ClientFailure) or answer.validation is None or answer.test is None:
                continue
            try:
                validation, test = GridCounts.from_lists(answer.validation), GridCounts.from_lists(answer.test)
            except (KeyError, ValueError) as error:
                logger.warning("round %d: site %s sent malformed counts (%s)", rnd, self.slots[cid].name, error)
                continue
            evaluations.append(ClientEvaluation(cid, validation, test))
        self._pooled_test = sum((e.test for e in evaluations), empty_counts()) if evaluations else None
        return evaluations

    def pooled_test(self) -> GridCounts | None:
        """The sites' own test sets pooled, from the last evaluation: federated evaluation of the global model."""
        return self._pooled_test

    def received(self, cid: str, answer: TaskResult, what: str = "update") -> Weights | ClientFailure:
        """The arrays a site uploaded with a train or statistics result, refused if the file's bytes changed since."""
        assert answer.weights_sha256 is not None  # the API refuses a train result without it
        path = blobs.blob_path(self.artifacts, answer.weights_sha256)
        if file_sha256(path) != answer.weights_sha256:
            return ClientFailure(cid, f"its {what} file was modified after it was uploaded; it was not used")
        return load_checkpoint(path).weights

    def _update(self, cid: str, answer: TaskResult) -> ClientUpdate | ClientFailure:
        weights = self.received(cid, answer)
        if isinstance(weights, ClientFailure):
            return weights
        return ClientUpdate(cid, weights, answer.num_examples, answer.metrics)

    def _publish(self, rnd: int, weights: Weights) -> str:
        """The weights as a blob the sites download; the same weights object is written once, however many task
        kinds (secure aggregation's four steps) send it."""
        if self._published is not None and self._published[0] is weights:
            return self._published[1]
        folder = blobs.incoming(self.artifacts)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as handle:
            temporary = Path(handle.name)
        save_checkpoint(Checkpoint(rnd, weights), temporary, durable=False)
        sha = blobs.put_file(self.artifacts, temporary)
        self._published = (weights, sha)
        return sha

    def round_trip(
        self,
        kind: str,
        rnd: int,
        weights: Weights,
        client_ids: Sequence[str],
        secagg: Mapping[str, SecAggTask] | None = None,
    ) -> dict[str, TaskResult | ClientFailure]:
        """One task of round ``rnd`` per online site, answered within ``federation.round_timeout_s``.

        ``secagg`` gives each site its step of secure aggregation (``worker.site_secure``)."""
        settings = {
            cid: self.settings.model_copy(update={"secagg": secagg[cid] if secagg else None}) for cid in client_ids
        }
        return self.send(kind, rnd, weights, settings, timeout_s=self.cfg.federation.round_timeout_s)

    def send(
        self,
        kind: str,
        rnd: int,
        weights: Weights,
        settings: Mapping[str, TaskSettings],
        *,
        timeout_s: float,
        stage: str | None = None,
    ) -> dict[str, TaskResult | ClientFailure]:
        """Queue one task per online site of ``settings`` (client id to its task's settings), wait for their
        answers for ``timeout_s``, expire the rest. ``stage`` names the step in messages (default: the round)."""
        stage = stage or f"round {rnd}"
        sha = self._publish(rnd, weights)
        deadline = utcnow() + timedelta(seconds=timeout_s)
        answers: dict[str, TaskResult | ClientFailure] = {}
        with self.signals.answers() as subscription:  # subscribed before any task exists: no answer slips by
            tasks = self._queue(kind, rnd, sha, settings, deadline, stage, answers)
            self.signals.queued({self.slots[cid].site_id for cid in tasks.values()})
            answers |= self._wait(kind, stage, tasks, deadline, timeout_s, subscription)
        return {cid: answers[cid] for cid in settings}

    def _queue(
        self,
        kind: str,
        rnd: int,
        sha: str,
        settings: Mapping[str, TaskSettings],
        deadline: datetime,
        stage: str,
        answers: dict[str, TaskResult | ClientFailure],
    ) -> dict[uuid.UUID, str]:
        """One task per online site, committed together (task id to client id); an offline site's failure goes
        straight into ``answers``. Tasks of this round and kind left from an earlier try are expired first."""
        tasks: dict[uuid.UUID, str] = {}
        with self.sessions() as session:
            stale = (SiteTask.run_id == self.run_id, SiteTask.round == rnd, SiteTask.kind == kind)
            session.execute(
                update(SiteTask).where(*stale, SiteTask.status.in_(["queued", "taken"])).values(status="expired")
            )
            for cid, task_settings in settings.items():
                slot = self.slots[cid]
                site = session.get(Site, slot.site_id)
                if site is None or not registry.is_online(site, self.offline_after_s):
                    answers[cid] = ClientFailure(cid, f"site {slot.name} was offline when {stage} started")
                    continue
                task = SiteTask(
                    run_id=self.run_id,
                    round=rnd,
                    client_id=cid,
                    site_id=slot.site_id,
                    kind=kind,
                    dataset=slot.dataset,
                    weights_sha256=sha,
                    settings=task_settings.model_dump(mode="json"),
                    deadline=deadline,
                )
                session.add(task)
                session.flush()
                tasks[task.id] = cid
            session.commit()
        return tasks

    def _wait(
        self,
        kind: str,
        stage: str,
        tasks: dict[uuid.UUID, str],
        deadline: datetime,
        timeout_s: float,
        subscription: Subscription,
    ) -> dict[str, TaskResult | ClientFailure]:
        answers: dict[str, TaskResult | ClientFailure] = {}
        pending = dict(tasks)
        while pending:
            if self.should_stop():
                self._expire(list(pending))
                raise Cancelled(f"cancelled during {stage}")
            self._collect(kind, stage, pending, answers)
            if pending and utcnow() >= deadline:
                self._expire(list(pending))
                for cid in pending.values():
                    name = self.slots[cid].name
                    answers[cid] = ClientFailure(
                        cid, f"site {name} did not answer the {kind} task within {timeout_s:.0f} s"
                    )
                break
            if pending:
                subscription.wait(POLL_S)
        return answers

    def _collect(
        self,
        kind: str,
        stage: str,
        pending: dict[uuid.UUID, str],
        answers: dict[str, TaskResult | ClientFailure],
    ) -> None:
        """Move the tasks answered so far, and those of sites gone silent, from ``pending`` to ``answers``."""
        with self.sessions() as session:
            rows = session.execute(
                select(SiteTask.id, SiteTask.status, SiteTask.result).where(SiteTask.id.in_(list(pending)))
            ).all()
            for task_id, status, result in rows:
                if status in ("done", "failed"):
                    cid = pending.pop(task_id)
                    answer = TaskResult.model_validate(result)
                    failed = status == "failed" or answer.error is not None
                    answers[cid] = ClientFailure(cid, f"the site reported: {answer.error}") if failed else answer
            silent = self._silent(session, pending)
        for task_id in self._expire(list(silent)):  # a task answered meanwhile is read at the next look
            cid = pending.pop(task_id)
            answers[cid] = ClientFailure(
                cid,
                f"site {self.slots[cid].name} went offline during {stage}: no heartbeat for "
                f"{silent[task_id]:.0f} s, so its {kind} task was given up",
            )

    def _silent(self, session: Session, pending: Mapping[uuid.UUID, str]) -> dict[uuid.UUID, float]:
        """The pending tasks whose site has sent no heartbeat for ``offline_after_s``, with its seconds of silence.

        Only while the server still hears from another site of the run: when none is heard from (the API is down,
        say), the silence says nothing about one site, and the round waits for its deadline as before."""
        if not pending:
            return {}
        site_ids = {slot.site_id for slot in self.slots.values()}
        silent = {
            site.id: registry.silent_s(site) for site in session.scalars(select(Site).where(Site.id.in_(site_ids)))
        }
        if min(silent.values(), default=float("inf")) > self.offline_after_s:
            return {}
        quiet = {task_id: silent.get(self.slots[cid].site_id, float("inf")) for task_id, cid in pending.items()}
        return {task_id: seconds for task_id, seconds in quiet.items() if seconds > self.offline_after_s}

    def _expire(self, task_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """Mark these tasks expired unless they have an answer already; returns those it expired."""
        if not task_ids:
            return []
        with self.sessions() as session:
            expired = session.scalars(
                update(SiteTask)
                .where(SiteTask.id.in_(task_ids), SiteTask.status.in_(["queued", "taken"]))
                .values(status="expired")
                .returning(SiteTask.id)
            ).all()
            session.commit()
        return list(expired)
