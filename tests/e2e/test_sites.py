"""A real federation: the API over HTTPS, an orchestrator and three `fedlens site run` agents, each with its own
images, each pinning the server certificate's fingerprint that enrollment gave it.

Each agent is its own process with its own folder and its own part of ../shared/data written as an image folder;
the server never sees an image, a file name or a per-image prediction, which the test checks by scanning the
server's data directory and every table of its database after the run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from sqlalchemy import MetaData, create_engine, select, text

from app.sites import blobs
from tests.e2e.conftest import PG_E2E, REDIS_E2E, _fresh_postgres
from tests.e2e.stack import Stack, wait_for
from tests.site.images import MARKER, write_image_folder
from worker.engine.checkpoint import load_checkpoint

SITES = ("hospital-a", "hospital-b", "hospital-c")


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Stack]:
    """API (HTTPS) + orchestrator on PostgreSQL and Redis, and three enrolled site agents running."""
    _fresh_postgres()
    redis.Redis.from_url(REDIS_E2E).flushdb()
    env = {
        "FEDLENS_DATA_DIR": str(tmp_path / "server"),
        "FEDLENS_DATABASE_URL": PG_E2E,
        "FEDLENS_BROKER_URL": REDIS_E2E,
        "FEDLENS_HEARTBEAT_S": "0.5",
        "FEDLENS_STALE_AFTER_S": "10",
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
    federation: Stack, tmp_path: Path
) -> None:
    config = three_hospitals("three hospitals")

    run_id = federation.launch(config)["federated"]["id"]
    finished = federation.wait_status(run_id, {"succeeded", "failed", "cancelled"}, timeout_s=600)

    assert finished["status"] == "succeeded", federation.logs()
    rounds = federation.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    assert [r["number"] for r in rounds] == [1, 2]
    for r in rounds:
        assert sorted(c["status"] for c in r["clients"]) == ["trained"] * 3
        assert 0.5 < r["metrics"]["test.auc"] <= 1  # federated evaluation on the sites' own test sets
    server_files = [p for p in (tmp_path / "server").rglob("*") if p.is_file()]
    assert not [p for p in server_files if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".dcm")]
    assert not [p for p in server_files if MARKER.encode() in p.read_bytes()]
    engine = create_engine(PG_E2E)
    tables = MetaData()
    tables.reflect(engine)
    with engine.connect() as conn:
        dump = json.dumps([[list(row) for row in conn.execute(select(t))] for t in tables.sorted_tables], default=str)
    engine.dispose()
    assert MARKER not in dump


def test_with_secure_aggregation_the_server_receives_only_masked_vectors_and_still_learns(
    federation: Stack, tmp_path: Path
) -> None:
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
    assert received_dtypes(run_id, tmp_path) == {np.dtype(np.uint32)}, "only masked vectors reach the server"


def test_sample_level_dp_at_the_sites_fills_both_ledgers(federation: Stack, tmp_path: Path) -> None:
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
        own = json.loads((tmp_path / name / "privacy.json").read_text())
        assert json.dumps(own).count(run_id) == 1, "the hospital keeps its own account of the run"


def done_tasks(run_id: str) -> Counter[str]:
    engine = create_engine(PG_E2E)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT kind FROM site_task WHERE run_id = :run AND status = 'done'"), {"run": run_id}
        ).all()
    engine.dispose()
    return Counter(kind for (kind,) in rows)


def received_dtypes(run_id: str, tmp_path: Path) -> set[np.dtype]:
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
        received = load_checkpoint(blobs.blob_path(tmp_path / "server" / "artifacts", answer["weights_sha256"]))
        dtypes |= {w.dtype for w in received.weights}
    return dtypes
