"""A real federation: the API over HTTPS, an orchestrator and three `fedlens site run` agents, each with its own
images, each pinning the server certificate's fingerprint that enrollment gave it.

Each agent is its own process with its own folder and its own part of ../shared/data written as an image folder;
the server never sees an image, a file name or a per-image prediction, which the test checks by scanning the
server's data directory and every table of its database after the run.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from sqlalchemy import Engine, MetaData, create_engine, select, text

from app.models import Run, RunStatus
from app.sites import blobs
from tests.api.pagetree import page
from tests.browser import chromium
from tests.e2e.conftest import PG_E2E, REDIS_E2E, _fresh_postgres
from tests.e2e.stack import Stack, wait_for
from tests.site.images import MARKER, write_image_folder
from worker.engine.checkpoint import load_checkpoint

SITES = ("hospital-a", "hospital-b", "hospital-c")
#: the killed-agent runs: a first round compiles the model in every agent, minutes on two busy cores
ROUND_TIMEOUT_S = 600
SITE = [sys.executable, "-m", "worker.cli", "site"]


def agent(folder: Path, name: str) -> list[str]:
    """``fedlens site run`` of site ``name``: its own folder (key, pinned certificate) and its own images."""
    images = folder / f"{name}-images"
    return [*SITE, "run", "--dir", str(folder / name), "--dataset", f"chest=image-folder:{images}"]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """API (HTTPS) + orchestrator on PostgreSQL and Redis, and three enrolled site agents running, shared by this
    module's tests (starting them takes half a minute): each test's runs are its own, and a test that stops an
    agent starts it again."""
    tmp_path = tmp_path_factory.mktemp("federation")
    _fresh_postgres()
    redis.Redis.from_url(REDIS_E2E).flushdb()
    env = {
        "FEDLENS_DATA_DIR": str(tmp_path / "server"),
        "FEDLENS_DATABASE_URL": PG_E2E,
        "FEDLENS_BROKER_URL": REDIS_E2E,
        "FEDLENS_HEARTBEAT_S": "0.5",
        "FEDLENS_STALE_AFTER_S": "60",  # the killed-agent test freezes the orchestrator for a restart
        "FEDLENS_SITE_HEARTBEAT_S": "1",  # the agents'
        "FEDLENS_SITE_OFFLINE_AFTER_S": "10",  # ten missed heartbeats, even on a busy machine
    }
    stack = Stack(tmp_path, env)
    try:
        stack.start_api(tls=True)
        stack.start_worker("runs")
        for i, name in enumerate(SITES):
            stack.start_site(name, write_image_folder(tmp_path / f"{name}-images", per_class=40, offset=40 * i))
        wait_for(lambda: stack.sites_online() == set(SITES), 120, "the three agents' first heartbeats")
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def no_run_left_running(federation: Stack) -> Iterator[None]:
    """A test that fails mid-run cancels what it left, so that the next test's runs find the agents idle."""
    yield
    with federation.database() as session:
        unfinished = session.scalars(select(Run.id).where(Run.status.in_([RunStatus.QUEUED, RunStatus.RUNNING])))
        for run_id in list(unfinished):
            federation.http.post(f"/api/runs/{run_id}/cancel")


def three_hospitals(name: str) -> dict[str, object]:
    """Two rounds over the three agents at 28 px; a round goes on with two of them."""
    return {
        "name": name,
        "seed": 5,
        "data": {"image_size": 28},
        "model": {"calibration_samples": 64},
        "federation": {
            "rounds": 2,
            "sites": [{"site": site, "dataset": "chest"} for site in SITES],
            "round_timeout_s": 180,
            "min_sites": 2,
        },
    }


def test_three_site_agents_train_a_federated_model_and_no_image_or_file_name_reaches_the_server(
    federation: Stack,
) -> None:
    """With ``baselines: [local]``: after the last round each agent also trains the model on its own images alone
    and sends only the counts of its test and validation splits; the run page puts it beside the federated one."""
    config = three_hospitals("three hospitals") | {"baselines": ["local"]}

    run_id = federation.launch(config)["federated"]["id"]
    finished = federation.wait_status(run_id, {"succeeded", "failed", "cancelled"}, timeout_s=600)

    assert finished["status"] == "succeeded", federation.logs()
    rounds = federation.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    assert [r["number"] for r in rounds] == [1, 2]
    for r in rounds:
        assert sorted(c["status"] for c in r["clients"]) == ["trained"] * 3
        assert 0.5 < r["metrics"]["test.auc"] <= 1  # federated evaluation on the sites' own test sets
    local = finished["local_baselines"]
    assert [(row["site"], row["epochs"], row["error"]) for row in local] == [(site, 2, None) for site in SITES]
    assert all(0 <= row["metrics"]["auc"] <= 1 and 0 <= row["metrics"]["sensitivity"] <= 1 for row in local)
    assert done_tasks(run_id)["local"] == 3
    table = page(federation.http.get(f"/runs/{run_id}")).by_id("local-table")
    rows = table.find("tbody").find_all("tr")
    shown = {row.find("th").text: row.find("td", data_difference="auc").text for row in rows}
    assert set(shown) == set(SITES) and all(text[0] in "+-" for text in shown.values())
    server_files = [p for p in (federation.folder / "server").rglob("*") if p.is_file()]
    assert not [p for p in server_files if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm")]
    assert not [p for p in server_files if MARKER.encode() in p.read_bytes()]
    engine = create_engine(PG_E2E)
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        dump = json.dumps([[list(row) for row in conn.execute(select(t))] for t in tables.sorted_tables], default=str)
    engine.dispose()
    assert MARKER not in dump


def test_with_secure_aggregation_the_server_receives_only_masked_vectors_and_still_learns(federation: Stack) -> None:
    """The agents run SecAgg+: the server relays keys and sealed shares, stores one masked uint32 vector per site
    and round (for the updates and for the BatchNorm statistics), and unmasks only their sum."""
    secure = {"privacy": {"secure_aggregation": {"threshold": 2}}}
    run_id = federation.launch(three_hospitals("three hospitals, secure aggregation") | secure)["federated"]["id"]
    finished = federation.wait_status(run_id, {"succeeded", "failed", "cancelled"}, timeout_s=600)

    assert finished["status"] == "succeeded", (finished["error"], federation.logs())
    rounds = federation.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    assert [r["number"] for r in rounds] == [1, 2]
    assert all(sorted(c["status"] for c in r["clients"]) == ["trained"] * 3 for r in rounds)
    assert all(0.5 < r["metrics"]["test.auc"] <= 1 for r in rounds)
    steps = {k: 2 * 2 * 3 for k in ("advertise", "share", "unmask")}  # two sums a round: updates and statistics
    assert done_tasks(run_id) == steps | {"train": 6, "statistics": 6, "evaluate": 6}
    assert received_dtypes(run_id, federation.folder) == {np.dtype(np.uint32)}, "only masked vectors reach the server"


def test_sample_level_dp_at_the_sites_fills_both_ledgers(federation: Stack) -> None:
    """DP-SGD in each agent under secure aggregation: every round reports each site's epsilon, the server's ledger
    holds one row per (site, dataset) of the run, and each hospital's own privacy.json agrees with it."""
    privacy = {"secure_aggregation": {"threshold": 2}, "dp": {"level": "sample", "noise_multiplier": 1.0}}
    run_id = federation.launch(three_hospitals("three hospitals, DP") | {"privacy": privacy})["federated"]["id"]
    finished = federation.wait_status(run_id, {"succeeded", "failed", "cancelled"}, timeout_s=600)

    assert finished["status"] == "succeeded", (finished["error"], federation.logs())
    rounds = federation.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    last = rounds[-1]["privacy"]
    assert set(last["sites"]) == {"1", "2", "3"} and last["epsilon"] == max(last["sites"].values()) > 0
    assert done_tasks(run_id) == {"advertise": 6, "share": 6, "unmask": 6, "train": 6, "evaluate": 6}  # GroupNorm
    ledger = {row["site"]: row for row in federation.http.get("/api/sites/ledger").json()}
    assert set(ledger) == set(SITES)
    for i, name in enumerate(SITES, start=1):
        assert ledger[name]["epsilon_spent"] == pytest.approx(last["sites"][str(i)])
        own = json.loads((federation.folder / name / "privacy.json").read_text())
        assert json.dumps(own).count(run_id) == 1, "the hospital keeps its own account of the run"


def test_a_site_added_on_the_run_page_joins_at_the_next_round_and_the_panel_follows_live(
    federation: Stack, tmp_path: Path
) -> None:
    """The study's new clients over real agents: hospital-c is added from the run page of a running two-site run
    and trains from the first round that had not started, counted by FedAvg with the others; the page's site panel
    shows its rounds as they finish, without a reload."""
    config = three_hospitals("two hospitals, then three")
    federation_config = config["federation"]
    assert isinstance(federation_config, dict)
    n_rounds = 6  # slack for chromium's start-up: a round of two sites at 28 px takes a few seconds
    federation_config |= {"rounds": n_rounds, "sites": [{"site": s, "dataset": "chest"} for s in SITES[:2]]}
    run_id = federation.launch(config)["federated"]["id"]
    wait_for(lambda: sum(queued_tasks(run_id).values()), 180, "round 1's site tasks")

    with chromium(tmp_path / "chromium-home") as browser:
        headers = {"Authorization": federation.http.headers["Authorization"]}
        context = browser.new_context(ignore_https_errors=True, extra_http_headers=headers)
        tab = context.new_page()
        tab.goto(f"{federation.url}/runs/{run_id}")
        now = tab.locator("#site-table .site-now").all_text_contents()
        assert len(now) == 2 and all(n == "idle" or re.search(r"round \d+$", n) for n in now), now
        tab.select_option("#add-site-choice", f"{SITES[2]}/chest")
        tab.click("#add-site button")
        said = tab.wait_for_selector("#add-site-result:has-text('joins as client 3')", timeout=30_000)
        joins = int(said.text_content().rsplit(" ", 1)[-1])  # type: ignore[union-attr]
        assert 2 <= joins < n_rounds  # a round had started when the site was added, and one is left after it
        cell = f"#site-table tr[data-site='{SITES[2]}'] td[data-round='{joins}'] .state-trained"
        tab.wait_for_selector(cell, timeout=300_000)  # the panel refreshes itself
        context.close()

    finished = federation.wait_status(run_id, {"succeeded", "failed", "cancelled"}, timeout_s=600)
    assert finished["status"] == "succeeded", (finished["error"], federation.logs())
    rounds = federation.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    newcomer = {r["number"]: next((c for c in r["clients"] if c["id"] == "3"), None) for r in rounds}
    trained = [n for n in range(1, n_rounds + 1) if newcomer[n] is not None and newcomer[n]["status"] == "trained"]
    assert trained == list(range(joins, n_rounds + 1)), trained  # from the very round the page promised
    assert all(newcomer[n] is None or newcomer[n]["status"] == "absent" for n in range(1, joins))
    assert done_tasks(run_id)["train"] == 2 * n_rounds + len(trained)


def test_the_api_stops_at_once_while_agents_long_poll_and_they_come_back_online_when_it_is_up_again(
    federation: Stack,
) -> None:
    """An operator restarts the server: the agents' open long polls do not hold the stop up, and the agents
    reconnect by themselves."""
    began = time.monotonic()
    federation.kill("api", signal.SIGTERM)
    assert time.monotonic() - began < 10, "the agents' long polls held the API's stop up"
    federation.start_api(tls=True)
    wait_for(lambda: federation.sites_online() == set(SITES), 60, "the agents back online")


def test_an_agent_killed_mid_round_is_given_up_counted_by_the_approach_and_rejoins_once_restarted(
    federation: Stack,
) -> None:
    """hospital-c's agent is SIGKILLed in round 2 of a keep-last run while it holds its train task. Its heartbeats
    stop, so the round gives it up long before round_timeout_s and goes on with the other two, counting c's round-1
    update. Restarted on its folder (same key), it is online again and trains in round 3. Its start-up takes half a
    minute on a busy machine, longer than a round of the other two: the orchestrator is frozen meanwhile, so that
    round 3 starts after the agent is back. (Drop leaves a given-up site out: tests/api/test_site_executor.py and
    the engine's intermittent tests; a second run here cost CI two minutes.)"""
    database = create_engine(PG_E2E)
    try:
        keep = federation.launch(killed_agent_config("keep-last", rounds=3))["federated"]["id"]
        given_up_s = [kill_and_wait_until_given_up(federation, database, keep)]
        with frozen(federation.processes["runs"]):
            federation._spawn("hospital-c", agent(federation.folder, "hospital-c"))
            wait_for(lambda: "hospital-c" in federation.sites_online(), 120, "the restarted agent's heartbeats")
        kept = federation.wait_status(keep, {"succeeded", "failed", "cancelled"}, timeout_s=ROUND_TIMEOUT_S)
        tasks = {keep: site_tasks(database, keep)}
    finally:
        database.dispose()

    assert kept["status"] == "succeeded", (kept, federation.logs())
    assert max(given_up_s) < 60, given_up_s  # ten seconds without a heartbeat, against a round timeout of 600
    went = "site hospital-c went offline during round 2: no heartbeat for "
    for run_id, away, rounds in ((keep, "kept", 3),):  # keep-last counts its round-1 update
        site_c = the_rounds_of_site_c(federation, run_id, rounds)
        assert (site_c[1]["status"], site_c[2]["status"]) == ("trained", away)
        assert site_c[2]["error"].startswith(went), site_c[2]
        assert tasks[run_id][(2, "train", "hospital-c")] == ["expired"], "given up; no late answer from the dead"
        for statuses in tasks[run_id].values():  # a round redone (its orchestrator replaced) expired its tasks
            assert statuses.count("done") <= 1 and set(statuses) <= {"done", "expired", "late"}, tasks[run_id]
    assert the_rounds_of_site_c(federation, keep, 3)[3]["status"] == "trained", "the restarted agent rejoins"


@contextmanager
def frozen(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """SIGSTOP the process for the block; its run stays claimed while stale_after_s is longer than the block."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


def killed_agent_config(approach: str, rounds: int) -> dict[str, Any]:
    config = three_hospitals(f"agent killed in round 2, {approach}")
    config["model"] |= {"batchnorm": "local"}  # no statistics pass: shorter rounds
    federation = {"rounds": rounds, "round_timeout_s": ROUND_TIMEOUT_S, "intermittent": {"approach": approach}}
    config["federation"] |= federation
    return config


def kill_and_wait_until_given_up(stack: Stack, database: Engine, run_id: str) -> float:
    """SIGKILL hospital-c's agent while it holds its round-2 train task, then wait until the round gives the task up;
    returns the seconds in between. The agent is frozen (SIGSTOP) while the test checks that it still holds the
    task, so it cannot deliver between the look and the kill."""
    process = stack.processes["hospital-c"]
    assert b"site\x00run" in Path(f"/proc/{process.pid}/cmdline").read_bytes(), "the agent itself, not a wrapper"

    def holds(status: str) -> bool:
        return site_tasks(database, run_id).get((2, "train", "hospital-c")) == [status]

    def killed() -> bool:
        if not holds("taken"):
            return False
        process.send_signal(signal.SIGSTOP)
        if not holds("taken"):
            process.send_signal(signal.SIGCONT)
            return False
        stack.kill("hospital-c")
        return True

    wait_for(killed, ROUND_TIMEOUT_S, "hospital-c to take its round-2 train task", interval_s=0.05)
    killed_at = time.monotonic()
    wait_for(lambda: holds("expired"), ROUND_TIMEOUT_S, "round 2 to give up hospital-c's train task")
    return time.monotonic() - killed_at


def the_rounds_of_site_c(stack: Stack, run_id: str, rounds: int) -> dict[int, dict[str, Any]]:
    """hospital-c (client 3) in each round, once the rounds are 1 to ``rounds``, each stored once, the other two
    sites trained in every one, and as many train tasks done as sites trained."""
    stored = stack.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    assert [r["number"] for r in stored] == list(range(1, rounds + 1))
    assert stack.run_in_database(run_id) == ("succeeded", list(range(1, rounds + 1))), "no round lost or twice"
    assert all(c["status"] == "trained" for r in stored for c in r["clients"] if c["id"] != "3")
    trained = sum(c["status"] == "trained" for r in stored for c in r["clients"])
    assert done_tasks(run_id)["train"] == trained
    return {r["number"]: next(c for c in r["clients"] if c["id"] == "3") for r in stored}


def site_tasks(database: Engine, run_id: str) -> dict[tuple[int, str, str], list[str]]:
    """(round, kind, site) to the statuses of the run's tasks of that kind for that site in that round."""
    query = text(
        "SELECT t.round, t.kind, s.name, t.status FROM site_task t JOIN site s ON s.id = t.site_id "
        "WHERE t.run_id = :run"
    )
    with database.connect() as conn:
        rows = conn.execute(query, {"run": run_id}).all()
    tasks: dict[tuple[int, str, str], list[str]] = {}
    for rnd, kind, site, status in rows:
        tasks.setdefault((rnd, kind, site), []).append(status)
    return tasks


def done_tasks(run_id: str) -> Counter[str]:
    return queued_tasks(run_id, status="done")


def queued_tasks(run_id: str, status: str | None = None) -> Counter[str]:
    """The run's site tasks by kind, of any status or of ``status``."""
    engine = create_engine(PG_E2E)
    where = "run_id = :run" + (" AND status = :status" if status else "")
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT kind FROM site_task WHERE {where}"), {"run": run_id, "status": status}).all()
    engine.dispose()
    return Counter(kind for (kind,) in rows)


def received_dtypes(run_id: str, folder: Path) -> set[np.dtype]:
    """The dtypes of every array the sites uploaded for the run's train and statistics tasks."""
    engine = create_engine(PG_E2E)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT result FROM site_task WHERE run_id = :run AND kind IN ('train', 'statistics')"),
            {"run": run_id},
        ).all()
    engine.dispose()
    dtypes = set()
    for (result,) in rows:
        answer = result if isinstance(result, dict) else json.loads(result)
        received = load_checkpoint(blobs.blob_path(folder / "server" / "artifacts", answer["weights_sha256"]))
        dtypes |= {w.dtype for w in received.weights}
    return dtypes
