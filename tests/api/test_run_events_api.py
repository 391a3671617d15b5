"""Server-sent events of a run: status changes, rounds and the end, read through the API's own sessions; at scale
(on a real uvicorn server in a thread) one Redis subscription for all streams, heartbeats and the cap per caller."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import timedelta

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from app.auth import accounts
from app.main import create_app
from app.models import Experiment, Role, Run, RunStatus, User
from app.notify import notify
from app.settings import Settings
from app.streams.hub import hub_client_name
from tests.api.conftest import BROKER_URL
from tests.api.factories import add_experiment, add_run, new_id, round_result, trained
from tests.e2e.stack import free_port, wait_for
from worker.store import save_round


@pytest.fixture
def commit_run(engine: Engine) -> Iterator[Callable[..., Run]]:
    """Runs with 2 stored rounds, committed for real: the event stream reads through its own sessions.

    Their experiments are deleted afterwards; the foreign keys cascade to runs, rounds and metrics.
    """
    experiments: list[uuid.UUID] = []

    def commit(status: RunStatus = RunStatus.SUCCEEDED, *, cancel_requested: bool = False) -> Run:
        with Session(engine, expire_on_commit=False) as session:
            experiment = add_experiment(session, name="sse")
            experiments.append(experiment.id)
            run = add_run(session, experiment, status=status, total_rounds=2)
            run.cancel_requested = cancel_requested
            session.commit()
        for number in (1, 2):
            with Session(engine) as session:
                assert save_round(session, run.id, round_result(number, clients=[trained("1")]), f"ckpt/{number}")
        return run

    yield commit
    with Session(engine) as session:
        session.execute(delete(Experiment).where(Experiment.id.in_(experiments)))
        session.commit()
        assert session.scalar(select(func.count()).select_from(Run).where(Run.experiment_id.in_(experiments))) == 0


@pytest.fixture
def committed_run(commit_run: Callable[..., Run]) -> Run:
    return commit_run()


def subscribed_clients(watcher: redis.Redis) -> int:
    """Connections of this process's event hubs that hold the pattern subscription to run notifications."""
    return sum(1 for c in watcher.client_list() if c["name"] == hub_client_name() and int(c["psub"]) > 0)


@contextmanager
def once_the_stream_waits(change: Callable[[], None]) -> Iterator[Callable[[], bool]]:
    """Make ``change`` in another thread once the event hub has subscribed to run notifications.

    The stream subscribes only after it has sent the rounds and status it read first, so the change cannot
    slip in before that first read, however slowly the request starts. ``change`` runs even if the stream
    never subscribes (so the stream ends); the yielded function says whether it did.
    """
    subscribed: list[bool] = []

    def wait_then_change() -> None:
        try:
            with redis.Redis.from_url(BROKER_URL) as watcher, suppress(TimeoutError):  # the test asserts it
                wait_for(lambda: subscribed_clients(watcher) > 0, 30, "the stream to subscribe")
                subscribed.append(True)
        finally:
            change()

    thread = threading.Thread(target=wait_then_change)
    thread.start()
    try:
        yield lambda: bool(subscribed)
    finally:
        thread.join()


def parse_events(body: str) -> list[dict[str, str]]:
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append(fields)
    return events


def test_events_of_a_finished_run_stream_status_rounds_and_end(client: TestClient, committed_run: Run) -> None:
    response = client.get(f"/api/runs/{committed_run.id}/events")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_events(response.text)
    assert [(e["event"], e.get("id")) for e in events] == [
        ("status", None),
        ("round", "1"),
        ("round", "2"),
        ("end", None),
    ]
    assert json.loads(events[0]["data"])["status"] == "succeeded"
    assert [json.loads(e["data"])["number"] for e in events[1:3]] == [1, 2]
    assert json.loads(events[3]["data"]) == {"status": "succeeded"}


def test_events_resume_after_the_last_event_id(client: TestClient, committed_run: Run) -> None:
    by_header = client.get(f"/api/runs/{committed_run.id}/events", headers={"Last-Event-ID": "1"})
    by_query = client.get(f"/api/runs/{committed_run.id}/events", params={"since": 1})

    for response in (by_header, by_query):
        assert [(e["event"], e.get("id")) for e in parse_events(response.text)] == [
            ("status", None),
            ("round", "2"),
            ("end", None),
        ]


def test_events_of_a_cancelled_run_report_its_status_once(client: TestClient, commit_run: Callable[..., Run]) -> None:
    run = commit_run(RunStatus.CANCELLED, cancel_requested=True)

    events = parse_events(client.get(f"/api/runs/{run.id}/events").text)

    assert [(e["event"], e.get("id")) for e in events] == [
        ("status", None),
        ("round", "1"),
        ("round", "2"),
        ("end", None),
    ]
    assert json.loads(events[-1]["data"]) == {"status": "cancelled"}


def test_events_report_cancelling_once_until_the_run_stops(
    make_client: Callable[[Settings], TestClient], settings: Settings, engine: Engine, commit_run: Callable[..., Run]
) -> None:
    client = make_client(settings.model_copy(update={"stream_recheck_s": 0.5}))
    run = commit_run(RunStatus.RUNNING, cancel_requested=True)

    def worker_stops() -> None:  # no notification: the hub's recheck notices
        with Session(engine) as session:
            session.execute(update(Run).where(Run.id == run.id).values(status=RunStatus.CANCELLED))
            session.commit()

    with once_the_stream_waits(worker_stops) as waited:
        events = parse_events(client.get(f"/api/runs/{run.id}/events").text)

    assert waited(), "the stream never subscribed to the run's changes"
    statuses = [json.loads(e["data"])["status"] for e in events if e["event"] == "status"]
    assert statuses == ["running", "cancelled"]  # the first one has cancel_requested set: shown as cancelling
    assert [e["event"] for e in events if e["event"] != "status"] == ["round", "round", "end"]


def test_events_of_an_unknown_run_are_404(client: TestClient) -> None:
    assert client.get(f"/api/runs/{new_id()}/events").status_code == 404


def test_a_notified_change_reaches_the_stream_without_waiting_for_the_recheck(
    make_client: Callable[[Settings], TestClient], settings: Settings, engine: Engine, commit_run: Callable[..., Run]
) -> None:
    settings = settings.model_copy(update={"stream_recheck_s": 600.0})  # only a notification ends this stream in time
    client = make_client(settings)
    run = commit_run(RunStatus.RUNNING)
    notified_at: list[float] = []

    def worker_finishes() -> None:
        with Session(engine) as session:
            session.execute(update(Run).where(Run.id == run.id).values(status=RunStatus.SUCCEEDED))
            session.commit()
        notify(settings, run.id)
        notified_at.append(time.monotonic())

    with once_the_stream_waits(worker_finishes) as waited:
        events = parse_events(client.get(f"/api/runs/{run.id}/events").text)

    assert waited(), "the stream never subscribed to the run's changes"
    assert time.monotonic() - notified_at[0] < 30, "the stream waited for its recheck"
    assert [json.loads(e["data"])["status"] for e in events if e["event"] == "status"] == ["running", "succeeded"]


Serve = Callable[[Settings], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start the app on a free port in a thread: its event hub runs on uvicorn's one loop, as in production."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(settings: Settings) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_config=None, lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        servers.append((server, thread))
        wait_for(lambda: server.started, 30, "uvicorn to start")
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def auth(engine: Engine) -> Iterator[dict[str, str]]:
    """A viewer's bearer token committed for real: the served app reads it through its own sessions."""
    with Session(engine, expire_on_commit=False) as session:
        user = accounts.create_user(session=session, name=f"streams-{uuid.uuid4().hex[:8]}", role=Role.ADMIN)
        issued = accounts.issue_token(session=session, user=user, name="streams", lifetime=timedelta(hours=1))
    yield {"Authorization": f"Bearer {issued.secret}"}
    with Session(engine) as session:
        session.execute(delete(User).where(User.id == user.id))
        session.commit()


def open_stream(stack: ExitStack, url: str, run: Run, auth: dict[str, str]) -> httpx.Response:
    stream = httpx.stream("GET", f"{url}/api/runs/{run.id}/events", headers=auth, timeout=30)
    response: httpx.Response = stack.enter_context(stream)
    return response


def read_until(lines: Iterator[str], wanted: str) -> list[str]:
    seen = []
    for line in lines:
        seen.append(line)
        if line == wanted:
            return seen
    raise AssertionError(f"the stream ended before {wanted!r}: {seen}")


def finish(engine: Engine, run: Run) -> None:
    with Session(engine) as session:
        session.execute(update(Run).where(Run.id == run.id).values(status=RunStatus.SUCCEEDED))
        session.commit()


def test_many_streams_share_one_subscription_and_all_see_a_notified_change(
    serve: Serve, settings: Settings, engine: Engine, commit_run: Callable[..., Run], auth: dict[str, str]
) -> None:
    settings = settings.model_copy(update={"stream_recheck_s": 600.0})  # only the notification can end the streams
    url = serve(settings)
    run = commit_run(RunStatus.RUNNING)
    with ExitStack() as stack, redis.Redis.from_url(BROKER_URL) as watcher:
        streams = [open_stream(stack, url, run, auth).iter_lines() for _ in range(20)]
        for lines in streams:
            read_until(lines, "id: 2")  # both stored rounds are out: the stream waits for a change
        assert subscribed_clients(watcher) == 1

        finish(engine, run)
        notify(settings, run.id)
        for lines in streams:
            read_until(lines, "event: end")
        wait_for(lambda: subscribed_clients(watcher) == 0, 30, "the hub to unsubscribe once no stream is left")


def test_an_idle_stream_sends_heartbeats(
    serve: Serve, settings: Settings, commit_run: Callable[..., Run], auth: dict[str, str]
) -> None:
    url = serve(settings.model_copy(update={"stream_heartbeat_s": 0.2, "stream_recheck_s": 600.0}))
    run = commit_run(RunStatus.RUNNING)
    with ExitStack() as stack:
        lines = open_stream(stack, url, run, auth).iter_lines()
        read_until(lines, "id: 2")
        started = time.monotonic()
        read_until(lines, ": keep-alive")
        read_until(lines, ": keep-alive")
        assert time.monotonic() - started < 10


def test_streams_above_the_cap_per_caller_are_refused_until_one_closes(
    serve: Serve, settings: Settings, commit_run: Callable[..., Run], auth: dict[str, str]
) -> None:
    url = serve(settings.model_copy(update={"streams_per_caller": 2}))
    run = commit_run(RunStatus.RUNNING)
    with ExitStack() as first, ExitStack() as second:
        held = [open_stream(stack, url, run, auth).iter_lines() for stack in (first, second)]
        for lines in held:  # kept referenced: a line iterator that is collected closes its response
            read_until(lines, "id: 2")
        refused = httpx.get(f"{url}/api/runs/{run.id}/events", headers=auth, timeout=30)
        assert refused.status_code == 429
        assert "2 event streams are already open" in refused.json()["detail"]
        first.close()  # the server notices at its next write (a heartbeat at the latest) and frees the slot

        def accepted() -> bool:
            with httpx.stream("GET", f"{url}/api/runs/{run.id}/events", headers=auth, timeout=30) as response:
                return response.status_code == 200

        wait_for(accepted, 60, "a slot to be freed", interval_s=0.5)
