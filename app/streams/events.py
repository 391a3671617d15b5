"""Server-sent events of a run, read from the database whenever the run changes (see hub.py): nothing is lost if
the API restarts mid-run, and an idle stream sends a comment line every ``stream_heartbeat_s`` so that proxies keep
it open and a client that has gone away is noticed."""

from __future__ import annotations

import json
import uuid
import weakref
from collections.abc import AsyncIterator
from functools import partial

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from app.db import session_factory
from app.models import RunStatus
from app.notify import channel
from app.results import load_rounds, run_read
from app.runs import get_run
from app.schemas import RunRead
from app.settings import Settings
from app.streams.hub import hub_for
from app.streams.limits import Slot

HEARTBEAT = ": keep-alive\n\n"


def _exists(settings: Settings, run_id: uuid.UUID) -> None:
    with session_factory(settings)() as session:
        get_run(session=session, run_id=run_id)


def _snapshot(settings: Settings, run_id: uuid.UUID, since: int) -> tuple[RunRead, list[tuple[int, str]]]:
    """The run and its rounds after ``since``, each round already as JSON: every stream of the run shares this
    read (hub.Feed.read), so a round is serialized once, not once per stream."""
    with session_factory(settings)() as session:
        run = run_read(get_run(session=session, run_id=run_id))
        return run, [(r.number, r.model_dump_json()) for r in load_rounds(session=session, run_id=run_id, since=since)]


def _event(kind: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {data}\n\n"


async def run_events(
    run_id: uuid.UUID, settings: Settings, request: Request, since: int, slot: Slot
) -> AsyncIterator[str]:
    """Raises NotFound before streaming starts; then yields until the run has finished and all rounds are out.

    ``slot`` is released when the stream ends, or when it is dropped unstarted (a client gone before the first byte).
    """
    await run_in_threadpool(_exists, settings, run_id)
    load = partial(_snapshot, settings, run_id)

    async def stream() -> AsyncIterator[str]:
        try:
            async with hub_for(settings).watch(channel(run_id)) as feed:
                seen = feed.version
                run, rounds = await run_in_threadpool(load, since)  # after subscribing: no change slips between
                last_round, last_status = since, None
                while True:
                    cancelling = run.cancel_requested and run.status == RunStatus.RUNNING
                    shown = "cancelling" if cancelling else str(run.status)
                    if shown != last_status:
                        last_status = shown
                        yield _event("status", run.model_dump_json())
                    for number, data in rounds:
                        yield _event("round", data, number)
                        last_round = number
                    if RunStatus(run.status).finished and not rounds:
                        yield _event("end", json.dumps({"status": str(run.status)}))
                        return
                    while (now := await feed.wait(seen, settings.stream_heartbeat_s)) == seen:
                        if await request.is_disconnected():
                            return
                        yield HEARTBEAT
                    seen = now
                    run, rounds = await feed.read(last_round, load)
        finally:
            slot.release()

    events = stream()
    weakref.finalize(events, slot.release)
    return events
