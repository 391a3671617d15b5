"""Where each client stands in a run's join/leave schedule, read from the config stored with its experiment."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Experiment, Run

Presence = Literal["not-joined", "present", "left"]
#: client id -> (first round it trains, first round it is gone or None); clients without events: (1, None)
Schedule = Mapping[str, tuple[int, int | None]]


def schedule_of(config: Mapping[str, Any]) -> dict[str, tuple[int, int | None]]:
    """The schedule of a stored config's ``federation.intermittent.events`` (at most one join and one leave each)."""
    events = config.get("federation", {}).get("intermittent", {}).get("events", [])
    found: dict[str, tuple[int, int | None]] = {}
    for event in events:
        joins, leaves = found.get(str(event["client"]), (1, None))
        joins = event.get("joins") or joins
        leaves = event.get("leaves") or leaves
        found[str(event["client"])] = (joins, leaves)
    return found


def run_schedule(*, session: Session, run_id: uuid.UUID) -> dict[str, tuple[int, int | None]]:
    config = session.scalar(
        select(Experiment.config).join(Run, Run.experiment_id == Experiment.id).where(Run.id == run_id)
    )
    return schedule_of(config or {})


def presence(schedule: Schedule, client_id: str, rnd: int) -> Presence:
    """Before its join round a client has not joined; from its leave round on it has left."""
    joins, leaves = schedule.get(client_id, (1, None))
    if rnd < joins:
        return "not-joined"
    if leaves is not None and rnd >= leaves:
        return "left"
    return "present"
