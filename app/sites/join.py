"""A hospital site joining an experiment that is already training (the study's new clients).

The site is appended to the experiment's ``federation.sites`` with a join event at the first round that has not
started, so the config alone says who trained when: a resumed run and the dashboard read the same schedule. The
orchestrator picks the newcomer up before that round (``SiteExecutor.newcomers``).
"""

from __future__ import annotations

import copy
import uuid

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import BadRequest, Conflict, InvalidTransition, NotFound
from app.models import Experiment, FlRound, Run, RunKind, RunStatus, SiteTask
from app.run_config import RunConfig, SiteRef, describe_errors
from app.sites import registry


class Joined(BaseModel):
    """Where the site entered the run: its client number and the first round it trains in."""

    client: int
    joins: int


def first_open_round(session: Session, run_id: uuid.UUID) -> int:
    """The round after the last one stored or started: a round has started once its first site tasks are queued.

    The orchestrator looks for newcomers just before it queues a round's tasks, so a site added in that instant
    joins one round later than this; the loop then counts it from the round it was seen (``run_federated``)."""
    stored = session.scalar(select(func.max(FlRound.number)).where(FlRound.run_id == run_id)) or 0
    started = session.scalar(select(func.max(SiteTask.round)).where(SiteTask.run_id == run_id)) or 0
    return max(stored, started) + 1


def join_run(*, session: Session, run_id: uuid.UUID, ref: SiteRef, offline_after_s: float) -> Joined:
    """Add site ``ref`` to a run over hospital sites that has not succeeded yet; it must have sent a heartbeat within
    ``offline_after_s`` (settings.site_offline_after_s).

    Raises InvalidTransition (409) when the run is finished, simulated, or has no round left, Conflict (409) when
    differential privacy was calibrated for the sites at launch or the site takes part already, NotFound when the
    site does not exist, and BadRequest when it is disabled, not enrolled or lacks the dataset.
    """
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    cfg = RunConfig.model_validate(run.experiment.config)
    if run.kind != RunKind.FEDERATED or not cfg.over_sites:
        raise InvalidTransition("only a federated run over hospital sites takes new sites")
    if run.status == RunStatus.SUCCEEDED:
        raise InvalidTransition(f"run {run_id} has finished; start a new experiment with this site")
    if cfg.privacy.dp is not None:
        message = "this run's differential privacy (noise, epsilon per site) was calibrated for the sites at launch; "
        raise Conflict(message + "start a new experiment to add a site")
    _check_site(session, ref, offline_after_s)
    joins = first_open_round(session, run.id)
    if joins > cfg.federation.rounds:
        raise InvalidTransition(f"the run is in its last round ({cfg.federation.rounds}); no round is left to join")
    try:
        client = _append(session, run.experiment_id, ref, joins)
    except BaseException:
        session.rollback()  # release the experiment's row lock at once
        raise
    session.commit()
    return Joined(client=client, joins=joins)


def _append(session: Session, experiment_id: uuid.UUID, ref: SiteRef, joins: int) -> int:
    """Append the site under a row lock (two sites joining at once both land); returns its client number."""
    experiment = session.scalar(select(Experiment).where(Experiment.id == experiment_id).with_for_update())
    assert experiment is not None  # a run's experiment is never deleted before it
    config = copy.deepcopy(experiment.config)
    if any(existing["site"] == ref.site for existing in config["federation"]["sites"]):
        raise Conflict(f"site {ref.site!r} takes part in this run already")
    config["federation"]["sites"].append(ref.model_dump())
    client = len(config["federation"]["sites"])
    if joins > 1:
        config["federation"]["intermittent"]["events"].append({"client": client, "joins": joins, "leaves": None})
    try:
        experiment.config = RunConfig.model_validate(config).model_dump(mode="json")
    except ValidationError as error:  # e.g. more than 100 sites
        raise BadRequest("; ".join(describe_errors(error)), field="site") from None
    return client


def _check_site(session: Session, ref: SiteRef, offline_after_s: float) -> None:
    try:
        site, _counts = registry.declared_dataset(session, ref.site, ref.dataset)
    except registry.Undeclared as missing:
        error = NotFound(str(missing)) if missing.field == "site" else BadRequest(str(missing), field="dataset")
        raise error from None
    if site.disabled or site.public_key is None:
        raise BadRequest(f"site {ref.site!r} is disabled or not enrolled; its agent cannot take tasks", field="site")
    if not registry.is_online(site, offline_after_s):
        raise BadRequest(f"site {ref.site!r} is offline; start its agent first", field="site")
