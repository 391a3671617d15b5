"""The per-user limit on concurrent runs: a user's queued and running runs are counted before more are added."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import TooManyRuns
from app.models import Run, RunStatus

ACTIVE = (RunStatus.QUEUED, RunStatus.RUNNING)


@dataclass(frozen=True)
class RunQuota:
    """Whose runs these are and how many of them may be active at once (settings.max_active_runs_per_user)."""

    owner_id: uuid.UUID
    max_active: int


def active_runs(*, session: Session, owner_id: uuid.UUID) -> int:
    query = select(func.count()).select_from(Run).where(Run.launched_by == owner_id, Run.status.in_(ACTIVE))
    return session.scalar(query) or 0


def require_room(*, session: Session, quota: RunQuota, adding: int) -> None:
    """Raises TooManyRuns (429) when ``adding`` more runs would take the owner past the limit.

    Two launches at the same instant may both pass (count, then insert): the limit is a fairness bound, not a lock.
    """
    active = active_runs(session=session, owner_id=quota.owner_id)
    if active + adding > quota.max_active:
        runs = "run" if adding == 1 else "runs"
        raise TooManyRuns(
            f"you have {active} active run(s) (queued or running) and this adds {adding} {runs}; the limit is "
            f"{quota.max_active} per user: wait for one to finish or cancel one, or launch without the centralized "
            "baseline (centralized.enabled: false) to add one run instead of two"
        )
