"""Site tasks seen from the site: claim the next one, post a result, which weights it may download."""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from app.errors import BadRequest, Forbidden, NotFound
from app.models import Site, SiteTask, utcnow
from app.sites.protocol import SiteTask as SiteTaskMessage
from app.sites.protocol import TaskResult, TaskSettings

logger = logging.getLogger(__name__)

#: statuses after which a task takes no further result
FINAL = ("done", "failed", "late")
#: statuses in which a site that asks for work is given the task
CLAIMABLE = ("queued", "taken")


def claim_next(*, session: Session, site: Site) -> SiteTaskMessage | None:
    """The oldest task of this site that is queued, or taken but lost, now marked taken.

    An agent runs one task at a time and asks for work only when it holds none, so a task of its own still marked
    taken when it asks was lost: its agent was killed and restarted, or the answer to its long poll never reached
    it. Such a task is handed out again until its deadline, so a restarted agent does not leave its round waiting
    for an answer that cannot come; the task still takes one result, so it is never counted twice.
    """
    task = session.scalar(
        select(SiteTask)
        .where(SiteTask.site_id == site.id, SiteTask.status.in_(CLAIMABLE), SiteTask.deadline > utcnow())
        .order_by(SiteTask.created_at)
        .limit(1)
    )
    if task is None:
        return None
    lost = task.status == "taken"
    claimed = session.execute(
        update(SiteTask)
        .where(
            SiteTask.id == task.id,
            SiteTask.status == task.status,
            SiteTask.taken_at.is_not_distinct_from(task.taken_at),  # nobody claimed it since it was read
        )
        .values(status="taken", taken_at=utcnow())
    )
    session.commit()
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    if lost:
        logger.warning(
            "site %s asked for work while holding task %s: its agent lost it, so it is sent again", site.name, task.id
        )
    return message(task)


def message(task: SiteTask) -> SiteTaskMessage:
    return SiteTaskMessage(
        id=task.id,
        run_id=task.run_id,
        round=task.round,
        client_id=task.client_id,
        kind=task.kind,
        dataset=task.dataset,
        weights_sha256=task.weights_sha256,
        settings=TaskSettings.model_validate(task.settings),
        deadline=task.deadline,
    )


def task_of(*, session: Session, task_id: uuid.UUID) -> SiteTask:
    task = session.get(SiteTask, task_id)
    if task is None:
        raise NotFound(f"no task with id {task_id}")
    return task


def may_download(*, session: Session, site: Site, sha256: str) -> bool:
    """A site downloads only the global weights of its own tasks."""
    query = select(exists().where(SiteTask.site_id == site.id, SiteTask.weights_sha256 == sha256))
    return bool(session.scalar(query))


def post_result(*, session: Session, site: Site, task_id: uuid.UUID, result: TaskResult, holds: int | None) -> bool:
    """Record a site's answer; returns whether it came late (after the deadline: kept, never merged).

    ``holds`` is the number of training images the site declared for the task's dataset: a sample count above it
    is refused, as is a result for another site's task (403) or a weights hash that was never uploaded.
    """
    task = task_of(session=session, task_id=task_id)
    if task.site_id != site.id:
        raise Forbidden("this task belongs to another site")
    if task.status in FINAL:
        if task.result == result.model_dump(mode="json"):
            return task.status == "late"  # the same answer again: idempotent
        raise BadRequest(f"task {task_id} has a result already")
    if result.error is None and task.kind in ("train", "statistics") and result.weights_sha256 is None:
        raise BadRequest("a train or statistics result needs weights_sha256 (upload the file first)")
    counted = task.kind in ("evaluate", "local")
    if result.error is None and counted and (result.validation is None or result.test is None):
        raise BadRequest("an evaluate or local result needs the validation and test grid counts")
    if holds is not None and result.num_examples > holds:
        raise BadRequest(f"num_examples {result.num_examples} exceeds the {holds} training images this site declared")
    late = utcnow() > task.deadline or task.status == "expired"
    task.status = "late" if late else ("failed" if result.error else "done")
    task.result = result.model_dump(mode="json")
    task.finished_at = utcnow()
    session.commit()
    return late


def declared_train_images(site: Site, dataset: str) -> int | None:
    for summary in site.datasets:
        if summary.get("name") == dataset:
            return int(sum(summary.get("counts", {}).get("train", {}).values()))
    return None
