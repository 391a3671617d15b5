"""Local-only baselines over hospital sites: after the federated rounds, each site trains the run's model on its own
data alone and sends back only the grid counts of that model on its own validation and test splits.

The local tasks are queued after the last round, so they never delay a round's deadline (an agent runs one task
at a time). A site that is offline or does not answer in time just has no local baseline, with the reason stored.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import retrying
from app.run_config import RunConfig
from app.sites.protocol import TaskResult
from worker import store
from worker.engine.loop import operating_threshold
from worker.engine.thresholds import GridCounts, summary_at
from worker.engine.types import ClientFailure, Weights
from worker.site_executor import SiteExecutor, SiteSlot, class_weight

#: a local task belongs to no round: it starts from the run's initial weights, before round 1
LOCAL_ROUND = 0
STAGE = "the local baseline"
logger = logging.getLogger(__name__)


def _finite(values: Mapping[str, float]) -> dict[str, float | None]:
    """JSON columns refuse NaN on PostgreSQL; a diverged training loss is stored as missing."""
    return {key: value if math.isfinite(value) else None for key, value in values.items()}


def local_baseline(cfg: RunConfig, slot: SiteSlot, answer: TaskResult | ClientFailure) -> dict[str, Any]:
    """What is stored of one site's local-only model (``app.schemas.LocalBaselineRead``): its metrics on the site's
    own test split at an operating threshold chosen as the federated model's is, with the run's method, but on the
    site's own validation split (its model is its own); or why there are none."""
    row: dict[str, Any] = {"client": slot.client_id, "site": slot.name, "dataset": slot.dataset}
    row["epochs"] = cfg.federation.rounds * cfg.federation.local_epochs
    if isinstance(answer, ClientFailure):
        return row | {"error": answer.error}
    assert answer.validation is not None and answer.test is not None  # the API refuses a result without them
    try:
        validation, test = GridCounts.from_lists(answer.validation), GridCounts.from_lists(answer.test)
    except (KeyError, TypeError, ValueError) as error:
        return row | {"error": f"the site sent malformed counts ({error})"}
    if test.n_positive + test.n_negative == 0:
        return row | {"error": "the site's test split is empty: nothing to judge the model on"}
    threshold = operating_threshold(cfg, validation, cfg.evaluation.threshold.value)
    return row | {
        "samples": answer.num_examples,
        "threshold": threshold,
        "metrics": _finite(summary_at(test, threshold)),
        "train": _finite(answer.metrics),
    }


def local_settings(sites: SiteExecutor, cfg: RunConfig, slot: SiteSlot) -> dict[str, Any]:
    """The run's task settings for as many epochs as all rounds, with class weights from the site's own counts
    (alone, it balances its own data); the run's pooled weights where its training split lacks a class."""
    try:
        weights = class_weight(cfg, [slot])
    except ValueError:
        weights = sites.settings.class_weight
    return {"rounds": cfg.federation.rounds, "class_weight": weights}


def train_local_baselines(
    sites: SiteExecutor, cfg: RunConfig, initial: Weights, *, done: Collection[str] = ()
) -> list[dict[str, Any]]:
    """Each site not in ``done`` (client ids whose baseline is stored) trains its local-only model from the run's
    initial weights. The wait is as long as all rounds together, as the training is."""
    settings = {
        cid: sites.settings.model_copy(update=local_settings(sites, cfg, slot))
        for cid, slot in sites.slots.items()
        if cid not in done
    }
    if not settings:
        return []
    timeout_s = cfg.federation.round_timeout_s * cfg.federation.rounds
    answers = sites.send("local", LOCAL_ROUND, initial, settings, timeout_s=timeout_s, stage=STAGE)
    return [local_baseline(cfg, sites.slots[cid], answer) for cid, answer in answers.items()]


def collect(sessions: sessionmaker[Session], run_id: uuid.UUID, sites: SiteExecutor, initial: Weights) -> None:
    """Train the local baselines a run has not stored yet (all of them, unless it resumed) and store them."""
    done = retrying(sessions, lambda session: store.local_baselines_done(session, run_id))
    rows = train_local_baselines(sites, sites.cfg, initial, done=done)
    if rows:
        retrying(sessions, lambda session: store.save_local_baselines(session, run_id, rows))
    trained = sum(1 for row in rows if not row.get("error"))
    logger.info("run %s: %d of %d local baselines trained now", run_id, trained, len(rows))
