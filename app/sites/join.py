"""A hospital site joining an experiment that is already training (the study's new clients).

The site is appended to the experiment's ``federation.sites`` with a join event at the first round that has not
started, so the config alone says who trained when: a resumed run and the dashboard read the same schedule. The
orchestrator picks the newcomer up before that round (``SiteExecutor.newcomers``); both hold the experiment's row
lock, so a round begins either before the join (the site gets the next one) or after it (the site trains in it).
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
    """The round after the last one stored or begun. Call it with the run's experiment row locked: the orchestrator
    marks a round begun (``run.started_round``) under that lock as it takes the newcomers of that round
    (``SiteExecutor.newcomers``), so the round given here is the one the site really trains from first. The stored
    rounds and queued tasks count too, for runs whose rounds began before ``started_round`` was kept (0014)."""
    stored = session.scalar(select(func.max(FlRound.number)).where(FlRound.run_id == run_id)) or 0
    queued = session.scalar(select(func.max(SiteTask.round)).where(SiteTask.run_id == run_id)) or 0
    begun = session.scalar(select(Run.started_round).where(Run.id == run_id)) or 0
    return max(stored, queued, begun) + 1


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
    try:
        experiment = lock_experiment(session, run.experiment_id)
        joins = first_open_round(session, run.id)
        if joins > cfg.federation.rounds:
            raise InvalidTransition(f"the run is in its last round ({cfg.federation.rounds}); no round is left to join")
        client = _append(experiment, ref, joins)
    except BaseException:
        session.rollback()  # release the experiment's row lock at once
        raise
    session.commit()
    return Joined(client=client, joins=joins)


def lock_experiment(session: Session, experiment_id: uuid.UUID) -> Experiment:
    """The experiment, its row locked until the transaction ends: joins and the start of a round take turns."""
    locked = select(Experiment).where(Experiment.id == experiment_id).with_for_update()
    experiment = session.scalar(locked.execution_options(populate_existing=True))  # as committed, not as cached
    assert experiment is not None  # a run's experiment is never deleted before it
    return experiment


def _append(experiment: Experiment, ref: SiteRef, joins: int) -> int:
    """Append the site to the locked experiment (two sites joining at once both land); returns its client number."""
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
