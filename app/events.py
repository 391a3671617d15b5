"""Server-sent events of a run, read from the database whenever a worker says the run changed (and at least
once a second): nothing is lost if the API restarts mid-run."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.db import session_factory
from app.models import RunStatus
from app.notify import changes
from app.results import load_rounds, run_read
from app.runs import get_run
from app.schemas import RoundRead, RunRead
from app.settings import Settings

KEEPALIVE_S = 15.0


def _snapshot(settings: Settings, run_id: uuid.UUID, since: int) -> tuple[RunRead, list[RoundRead]]:
    with session_factory(settings)() as session:
        run = run_read(get_run(session=session, run_id=run_id))
        return run, load_rounds(session=session, run_id=run_id, since=since)


def _event(kind: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n"


async def run_events(run_id: uuid.UUID, settings: Settings, request: Request, since: int) -> AsyncIterator[str]:
    """Raises NotFound before streaming starts; then yields until the run has finished and all rounds are out."""
    first = await run_in_threadpool(_snapshot, settings, run_id, since)

    async def stream() -> AsyncIterator[str]:
        run, rounds = first
        last_round, last_status, quiet_since = since, None, time.monotonic()
        changed = changes(settings.broker, run_id)
        try:
            while True:
                shown = "cancelling" if run.cancel_requested and run.status == RunStatus.RUNNING else str(run.status)
                if shown != last_status:
                    last_status = shown
                    yield _event("status", run.model_dump_json())
                    quiet_since = time.monotonic()
                for r in rounds:
                    yield _event("round", r.model_dump_json(), r.number)
                    last_round, quiet_since = r.number, time.monotonic()
                if RunStatus(run.status).finished and not rounds:
                    yield _event("end", json.dumps({"status": str(run.status)}))
                    return
                if time.monotonic() - quiet_since > KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    quiet_since = time.monotonic()
                await anext(changed)  # a worker's notification, or the fallback poll
                if await request.is_disconnected():
                    return
                run, rounds = await run_in_threadpool(_snapshot, settings, run_id, last_round)
        finally:
            await changed.aclose()

    return stream()
