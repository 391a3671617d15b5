"""The site protocol through the API: enrollment, signed requests and each refusal, task isolation, uploads."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from app.models import AuditEvent, Role, Run, Site, utcnow
from app.notify import publish, site_channel
from app.settings import Settings
from app.sites.protocol import body_sha256, public_key_text, sign
from tests.api.conftest import bearer
from tests.api.factories import add_experiment, add_run
from tests.api.pagetree import page
from tests.api.sites import Agent, add_task
from worker.engine.thresholds import empty_counts

HEARTBEAT = {
    "agent_version": "0.1",
    "hardware": {"cpus": 4, "memory_gb": 16.0, "gpus": []},
    "datasets": [
        {
            "name": "chest",
            "format": "image-folder",
            "counts": {"train": {"negative": 30, "positive": 70}, "test": {"negative": 10, "positive": 10}},
            "image_sizes": ["1024x1024"],
            "fingerprint": "ab" * 32,
            "split_seed": 7,
        }
    ],
}


def test_an_enrollment_token_works_once_and_only_before_it_expires(
    client: TestClient, anonymous: TestClient, session: Session
) -> None:
    invitations = [client.post("/api/sites", json={"name": name}).json() for name in ("a", "b")]
    site_b = session.get(Site, uuid.UUID(invitations[1]["id"]))
    assert site_b is not None
    site_b.enrollment_expires_at = utcnow() - timedelta(seconds=1)
    session.commit()

    def enroll(token: str) -> int:
        key = public_key_text(Ed25519PrivateKey.generate())
        body = {"token": token, "public_key": key, "agent_version": "0.1"}
        return anonymous.post("/api/site/enroll", json=body).status_code

    assert [enroll(invitations[0]["enrollment_token"]), enroll(invitations[0]["enrollment_token"])] == [201, 401]
    assert enroll(invitations[1]["enrollment_token"]) == 401
    assert session.scalar(select(Site.enrollment_sha256).where(Site.name == "a")) is None  # only a hash, then none


def test_a_signed_heartbeat_marks_the_site_online_with_its_dataset_counts(
    enroll: Callable[[str], Agent], client: TestClient
) -> None:
    agent = enroll("hospital-a")

    assert agent.post("/api/site/heartbeat", HEARTBEAT).status_code == 200

    (site,) = client.get("/api/sites").json()
    assert (site["name"], site["online"], site["enrolled"]) == ("hospital-a", True, True)
    assert site["datasets"][0]["counts"]["train"] == {"negative": 30, "positive": 70}


def test_unsigned_replayed_and_wrongly_signed_requests_get_401_and_are_audited(
    enroll: Callable[[str], Agent], anonymous: TestClient, session: Session
) -> None:
    agent = enroll("hospital-a")
    body = json.dumps(HEARTBEAT).encode()
    signed = sign(agent.key, agent.site_id, "POST", "/api/site/heartbeat", body_sha256(body))
    headers = signed | {"content-type": "application/json"}

    first = anonymous.post("/api/site/heartbeat", content=body, headers=headers)
    replayed = anonymous.post("/api/site/heartbeat", content=body, headers=headers)
    unsigned = anonymous.post("/api/site/heartbeat", json=HEARTBEAT)
    impostor = Agent(anonymous, agent.site_id, Ed25519PrivateKey.generate()).post("/api/site/heartbeat", HEARTBEAT)
    tampered = anonymous.post(
        "/api/site/heartbeat",
        content=body + b" ",
        headers=sign(agent.key, agent.site_id, "POST", "/api/site/heartbeat", body_sha256(body))
        | {"content-type": "application/json"},
    )

    assert [r.status_code for r in (first, replayed, unsigned, impostor, tampered)] == [200, 401, 401, 401, 401]
    assert "replayed" in replayed.json()["detail"]
    outcomes = session.scalars(select(AuditEvent.outcome).where(AuditEvent.actor == "site:hospital-a")).all()
    assert "replayed request" in outcomes and "wrong signature" in outcomes


def test_a_disabled_site_and_a_rotated_key_are_refused(enroll: Callable[[str], Agent], client: TestClient) -> None:
    disabled, rotated = enroll("hospital-a"), enroll("hospital-b")

    client.post(f"/api/sites/{disabled.site_id}/disable")
    invitation = client.post(f"/api/sites/{rotated.site_id}/rotate").json()

    assert disabled.post("/api/site/heartbeat", HEARTBEAT).json()["detail"].endswith("disabled site")
    assert "rotated" in rotated.post("/api/site/heartbeat", HEARTBEAT).json()["detail"]
    assert len(invitation["enrollment_token"]) > 40  # a new token to enroll the new key


def test_a_site_sees_only_its_own_tasks_and_weights(enroll: Callable[[str], Agent], session: Session) -> None:
    a, b = enroll("hospital-a"), enroll("hospital-b")
    run = add_run(session, add_experiment(session))
    theirs = add_task(session, b.site_id, run.id, "b" * 64)
    mine = add_task(session, a.site_id, run.id, "a" * 64)

    claimed = a.request("GET", "/api/site/tasks/next?wait=0")
    a.post(f"/api/site/tasks/{mine.id}/result", {"num_examples": 0, "error": "no such dataset"})
    nothing = a.request("GET", "/api/site/tasks/next?wait=0")

    assert claimed.json()["id"] == str(mine.id) and nothing.status_code == 204
    assert a.request("GET", f"/api/site/weights/{'b' * 64}").status_code == 403
    assert a.post(f"/api/site/tasks/{theirs.id}/result", {"num_examples": 1, "error": "x"}).status_code == 403


def uploaded_update(agent: Agent) -> dict[str, object]:
    """A train task's result whose weights the agent has uploaded: 100 images, one metric."""
    content = b"update"
    agent.request("PUT", f"/api/site/blobs/{body_sha256(content)}", content)
    return {"weights_sha256": body_sha256(content), "num_examples": 100, "metrics": {"train.loss": 0.5}}


def test_a_task_its_agent_lost_is_handed_out_again_before_its_deadline_and_takes_one_result(
    enroll: Callable[[str], Agent], session: Session
) -> None:
    """An agent asks for work only when it holds none: a task of its own still taken was lost (agent restarted)."""
    agent = enroll("hospital-a")
    agent.post("/api/site/heartbeat", HEARTBEAT)
    run = add_run(session, add_experiment(session))
    long_ago = utcnow() - timedelta(minutes=1)
    lost = add_task(session, agent.site_id, run.id, "a" * 64, status="taken", taken_at=long_ago)
    add_task(session, agent.site_id, run.id, "b" * 64, status="taken", taken_at=long_ago, deadline=long_ago)
    result = uploaded_update(agent)

    again = agent.request("GET", "/api/site/tasks/next?wait=0")
    answered = agent.post(f"/api/site/tasks/{lost.id}/result", result)
    second = agent.post(f"/api/site/tasks/{lost.id}/result", result | {"metrics": {"train.loss": 0.4}})
    after = agent.request("GET", "/api/site/tasks/next?wait=0")

    assert again.json()["id"] == str(lost.id)
    assert answered.json() == {"accepted": True, "late": False}
    assert second.status_code == 422 and "has a result already" in second.json()["detail"][0]["message"]
    assert after.status_code == 204, "a done task, and a lost one past its deadline, are not handed out"
    session.refresh(lost)
    assert lost.status == "done" and lost.taken_at is not None and lost.taken_at > long_ago


def test_an_upload_in_one_request_is_stored_by_its_hash_once_and_a_changed_one_is_refused(
    enroll: Callable[[str], Agent],
) -> None:
    agent = enroll("hospital-a")
    content = b"weights" * 1000
    sha = body_sha256(content)

    changed = agent.request("PUT", f"/api/site/blobs/{sha}", content + b"!")
    first = agent.request("PUT", f"/api/site/blobs/{sha}", content)
    again = agent.request("PUT", f"/api/site/blobs/{sha}", content)

    assert (changed.status_code, first.status_code, again.status_code) == (400, 201, 200)
    assert "changed on the way" in changed.json()["detail"]
    assert first.json()["stored"] and again.json()["stored"]


@pytest.fixture
def declared(enroll: Callable[[str], Agent], session: Session) -> tuple[Agent, Run]:
    """hospital-a, enrolled, having declared 100 training images in "chest", and a run to give it tasks of."""
    agent = enroll("hospital-a")
    agent.post("/api/site/heartbeat", HEARTBEAT)
    return agent, add_run(session, add_experiment(session))


def test_a_result_too_large_for_the_declared_data_is_refused_and_a_late_one_is_recorded_late(
    declared: tuple[Agent, Run], session: Session
) -> None:
    agent, run = declared
    on_time = add_task(session, agent.site_id, run.id, "c" * 64, status="taken")
    late = add_task(session, agent.site_id, run.id, "d" * 64, status="taken", deadline=utcnow() - timedelta(seconds=1))
    result = uploaded_update(agent)

    too_many = agent.post(f"/api/site/tasks/{on_time.id}/result", result | {"num_examples": 101})
    accepted = agent.post(f"/api/site/tasks/{on_time.id}/result", result)
    after_deadline = agent.post(f"/api/site/tasks/{late.id}/result", result)

    assert too_many.status_code == 422 and "exceeds the 100 training images" in too_many.json()["detail"][0]["message"]
    assert accepted.json() == {"accepted": True, "late": False}
    assert after_deadline.json() == {"accepted": True, "late": True}
    session.refresh(late)
    assert late.status == "late"


def test_an_answer_to_a_task_given_up_before_its_deadline_is_late_and_the_task_is_not_handed_out_again(
    declared: tuple[Agent, Run], session: Session
) -> None:
    """A round gives up the task of a site whose heartbeats stopped; the agent, back, may still deliver it."""
    agent, run = declared
    given_up = add_task(session, agent.site_id, run.id, "e" * 64, status="expired")  # deadline still 5 min away
    result = uploaded_update(agent)

    polled = agent.request("GET", "/api/site/tasks/next?wait=0")
    answered = agent.post(f"/api/site/tasks/{given_up.id}/result", result)

    assert polled.status_code == 204
    assert answered.json() == {"accepted": True, "late": True}
    session.refresh(given_up)
    assert given_up.status == "late"


def test_a_local_task_reaches_its_site_and_its_result_must_carry_both_splits_counts(
    declared: tuple[Agent, Run], session: Session
) -> None:
    agent, run = declared
    settings = {"image_size": 32, "model": {}, "local_epochs": 2, "seed": 1, "rounds": 5}
    task = add_task(session, agent.site_id, run.id, "e" * 64, kind="local", round=0, settings=settings)
    counts = empty_counts().as_lists()
    result = {"num_examples": 100, "validation": counts, "test": counts, "metrics": {"train.loss": 0.3}}

    claimed = agent.request("GET", "/api/site/tasks/next?wait=0").json()
    without_test = agent.post(f"/api/site/tasks/{task.id}/result", result | {"test": None})
    too_many = agent.post(f"/api/site/tasks/{task.id}/result", result | {"num_examples": 101})
    accepted = agent.post(f"/api/site/tasks/{task.id}/result", result)

    assert (claimed["kind"], claimed["round"], claimed["settings"]["rounds"]) == ("local", 0, 5)
    assert "needs the validation and test grid counts" in without_test.json()["detail"][0]["message"]
    assert "exceeds the 100 training images" in too_many.json()["detail"][0]["message"]
    assert accepted.json() == {"accepted": True, "late": False}
    session.refresh(task)
    assert task.status == "done" and task.result is not None and task.result["test"] == counts


def test_the_sites_page_shows_counts_and_skew_and_only_admins_get_the_controls(
    enroll: Callable[[str], Agent],
    client: TestClient,
    make_client: Callable[..., TestClient],
    settings: Settings,
    session: Session,
) -> None:
    agent = enroll("hospital-a")
    agent.post("/api/site/heartbeat", HEARTBEAT)
    viewer = make_client(settings, headers=bearer(session, "vic", Role.VIEWER))

    admin_page = page(client.get("/sites"))
    viewer_page = page(viewer.get("/sites"))

    row = admin_page.by_id("sites").find("tbody").find("tr")
    assert "30 + 70" in row.text and "online" in row.text
    assert viewer_page.find_all("form", action="/sites") == [] and admin_page.find_all("form", action="/sites")
    added = page(client.post("/sites", data={"name": "hospital-b"}))
    assert "fedlens site enroll --server http://testserver --token " in added.by_id("invitation").text


def _long_poll(agent: Agent, wait_s: float) -> tuple[list[tuple[float, Response]], threading.Thread]:
    """Start the agent's long poll in a thread; the list gets (seconds it took, response) when it answers."""
    answers: list[tuple[float, Response]] = []

    def poll() -> None:
        started = time.monotonic()
        response = agent.request("GET", f"/api/site/tasks/next?wait={wait_s}")
        answers.append((time.monotonic() - started, response))

    thread = threading.Thread(target=poll)
    thread.start()
    return answers, thread


def test_a_waiting_agent_costs_no_database_look_until_its_task_is_announced_then_gets_it_at_once(
    enroll: Callable[[str], Agent],
    make_client: Callable[..., TestClient],
    settings: Settings,
    session: Session,
    engine: Engine,
) -> None:
    quiet = settings.model_copy(update={"stream_recheck_s": 30.0})  # no recheck within the test
    enrolled = enroll("hospital-a")
    agent = Agent(make_client(quiet, headers={}), enrolled.site_id, enrolled.key)
    looks: list[str] = []
    count = lambda *args: looks.append(args[2]) if "FROM site_task" in args[2] else None  # noqa: E731
    event.listen(engine, "before_cursor_execute", count)
    try:
        answers, thread = _long_poll(agent, 10)
        time.sleep(2.0)
        idle_looks = len(looks)
        task = add_task(session, enrolled.site_id, add_run(session, add_experiment(session)).id, "a" * 64)
        announced = time.monotonic()
        publish(quiet, site_channel(uuid.UUID(enrolled.site_id)))
        thread.join(10)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    ((_, response),) = answers
    assert idle_looks <= 2  # when the poll began and when its subscription opened; the old loop looked every 0.5 s
    assert response.status_code == 200 and response.json()["id"] == str(task.id)
    assert time.monotonic() - announced < 1.5


def test_a_task_whose_announcement_was_lost_is_found_at_the_next_recheck(
    enroll: Callable[[str], Agent], make_client: Callable[..., TestClient], settings: Settings, session: Session
) -> None:
    rechecking = settings.model_copy(update={"stream_recheck_s": 1.0})
    enrolled = enroll("hospital-a")
    agent = Agent(make_client(rechecking, headers={}), enrolled.site_id, enrolled.key)

    answers, thread = _long_poll(agent, 10)
    time.sleep(0.5)
    task = add_task(session, enrolled.site_id, add_run(session, add_experiment(session)).id, "a" * 64)
    thread.join(10)

    ((took, response),) = answers
    assert response.status_code == 200 and response.json()["id"] == str(task.id)
    assert took < 3.0
