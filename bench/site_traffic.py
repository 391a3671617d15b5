"""What a federation over sites moves and waits for, read from the server's site_task rows and blob store."""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fastapi.responses import JSONResponse
from sqlalchemy import select

from app.models import SiteTask
from app.sites import blobs
from app.sites.protocol import TaskResult
from app.sites.tasks import message
from tests.e2e.stack import Stack

KINDS = ("train", "statistics", "evaluate")  # a round's three round trips, in order
KEYS = ("down", "up", "json")


@dataclass(frozen=True)
class TaskRow:
    round: int
    kind: str
    created: datetime
    taken: datetime
    answered: datetime
    down: int  # bytes of the global weights file it starts from; 0 when the agent's cache holds that file already
    up: int  # bytes of the weights file it uploaded (an update or BatchNorm moments)
    json: int  # bytes of the task message the agent received and of the result body it posted


@dataclass(frozen=True)
class SitesTiming:
    """One timed run over the sites: its id, and when each round was stored and when its event reached us."""

    run_id: str
    arrived: dict[int, datetime]
    stored: dict[int, datetime]


def _size(artifacts: Path, sha256: str) -> int:
    return blobs.blob_path(artifacts, sha256).stat().st_size


def task_rows(stack: Stack, run_id: str) -> list[TaskRow]:
    """The run's tasks in the order they were queued; a weights file counts as downloaded the first time each site
    needs it in the run, as the agent's cache fetches it (the train task of round k+1 starts from the weights the
    evaluate task of round k fetched)."""
    artifacts = Path(stack.env["FEDLENS_DATA_DIR"]) / "artifacts"
    fetched: set[tuple[uuid.UUID, str]] = set()
    rows = []
    with stack.database() as session:
        query = select(SiteTask).where(SiteTask.run_id == uuid.UUID(run_id)).order_by(SiteTask.created_at)
        for task in session.scalars(query):
            if task.status != "done" or task.result is None or task.taken_at is None or task.finished_at is None:
                raise SystemExit(f"task {task.id} of run {run_id} is {task.status}, not done")
            result = TaskResult.model_validate(task.result)
            first = (task.site_id, task.weights_sha256) not in fetched
            fetched.add((task.site_id, task.weights_sha256))
            sent = JSONResponse(message(task).model_dump(mode="json")).body  # as GET /api/site/tasks/next sends it
            rows.append(
                TaskRow(
                    task.round,
                    task.kind,
                    task.created_at,
                    task.taken_at,
                    task.finished_at,
                    _size(artifacts, task.weights_sha256) if first else 0,
                    _size(artifacts, result.weights_sha256) if result.weights_sha256 else 0,
                    len(sent) + len(result.model_dump_json().encode()),
                )
            )
    return rows


def _ms(samples: Sequence[float]) -> str:
    return f"median {statistics.median(samples) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms"


def _traffic(runs: Sequence[list[TaskRow]]) -> None:
    rounds = sorted({t.round for rows in runs for t in rows})
    print("\nbytes per round on the wire (sites, all 3 agents together; median over the timed runs):")
    for rnd in rounds:
        per_run = [[t for t in rows if t.round == rnd] for rows in runs]
        down, up, json = (statistics.median(sum(getattr(t, key) for t in ts) for ts in per_run) for key in KEYS)
        files = statistics.median(sum(t.down > 0 for t in ts) for ts in per_run)
        print(
            f"  round {rnd}: down {down / 1e6:.2f} MB ({files:.0f} weights files), up {up / 1e6:.2f} MB, "
            f"JSON {json / 1e3:.1f} kB; total {(down + up + json) / 1e6:.2f} MB"
        )
    print(
        "  counted: weights files downloaded (the global model, each file once per site as the agent's cache does; "
        "round 1's file is the initial model, which the agents here cached in an earlier run) and uploaded (each "
        "site's update and BatchNorm moments), and the JSON of each task and result. Not counted: HTTP headers "
        "and request signatures, TLS records and handshakes, heartbeats (each agent every 10 s), empty long polls."
    )


def _round_trips(runs: Sequence[list[TaskRow]], stored: Sequence[dict[int, datetime]]) -> None:
    print("round trips per round (median over the timed runs' rounds and sites):")
    for step, kind in enumerate(KINDS):
        tasks = [t for rows in runs for t in rows if t.kind == kind]
        pickup = [(t.taken - t.created).total_seconds() for t in tasks]
        at_site = [(t.answered - t.taken).total_seconds() for t in tasks]
        gaps = []  # from this step's last answer to the server's next move: the next step queued, or the round stored
        for rows, stored_at in zip(runs, stored, strict=True):
            for rnd in sorted({t.round for t in rows}):
                last = max(t.answered for t in rows if t.round == rnd and t.kind == kind)
                later = [t.created for t in rows if t.round == rnd and t.kind in KINDS[step + 1 :]]
                gaps.append(((min(later) if later else stored_at[rnd]) - last).total_seconds())
        then = "round stored" if step == len(KINDS) - 1 else f"{KINDS[step + 1]} queued"
        print(
            f"  {kind:<10} queued -> taken {statistics.median(pickup):5.2f} s, taken -> answered "
            f"{statistics.median(at_site):5.2f} s (slowest site {max(at_site):5.2f} s); last answer -> {then} "
            f"{statistics.median(gaps):5.2f} s"
        )


def report_sites(stack: Stack, timings: Sequence[SitesTiming]) -> None:
    """Bytes per round, the three round trips of a round, and the delay from a site's upload to the dashboard."""
    runs = [task_rows(stack, t.run_id) for t in timings]
    _traffic(runs)
    _round_trips(runs, [t.stored for t in timings])
    upload, answer, stream = [], [], []
    for rows, timing in zip(runs, timings, strict=True):
        for rnd, arrived in timing.arrived.items():
            last_update = max(t.answered for t in rows if t.round == rnd and t.kind == "train")
            last_answer = max(t.answered for t in rows if t.round == rnd)
            upload.append((arrived - last_update).total_seconds())
            answer.append((arrived - last_answer).total_seconds())
            stream.append((arrived - timing.stored[rnd]).total_seconds())
    print(f"upload -> dashboard, over {len(upload)} rounds (the round's event on GET /api/runs/{{id}}/events):")
    print(f"  last site's update posted -> round event {_ms(upload)} (BatchNorm and evaluation round trips included)")
    print(f"  last site's evaluation posted -> round event {_ms(answer)}")
    print(f"  round stored -> round event {_ms(stream)}")
