"""The agent loop against a fake server over TLS: real Keras tasks at 28 px, a local failure, SIGTERM and its logs."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.run_config import ModelConfig
from app.sites.protocol import DpSettings, Heartbeat, SiteTask, TaskResult, TaskSettings, body_sha256, verify
from tests.site.conftest import TOKEN
from tests.site.fake_server import Certificate, FakeSiteServer
from tests.site.images import MARKER, write_image_folder
from worker.engine.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from worker.engine.data import DataError
from worker.engine.thresholds import GridCounts
from worker.site.agent import Agent, failure_text
from worker.site.datasets import SiteData, TaskRefused, site_config
from worker.site.identity import KEY_FILE, SiteIdentity
from worker.site.runner import TaskRunner

MODEL = ModelConfig(batch_size=16, calibration_samples=32, augmentation=False)


def _task(kind: str, sha256: str, dataset: str = "chest", **changes: object) -> dict[str, object]:
    settings = TaskSettings(
        image_size=28, model=MODEL.model_dump(mode="json"), local_epochs=1, seed=3, class_weight={0: 1.0, 1: 1.5}
    ).model_copy(update=changes)
    deadline = datetime.now(UTC) + timedelta(minutes=10)
    task = SiteTask(
        id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        round=1,
        client_id="2",
        kind=kind,  # type: ignore[arg-type]
        dataset=dataset,
        weights_sha256=sha256,
        settings=settings,
        deadline=deadline,
    )
    return task.model_dump(mode="json")


def _global_weights(server: FakeSiteServer, folder: Path) -> str:
    """The study's CNN at 28 px, fresh, published as the server publishes a round's global weights."""
    from worker.engine.model import build_cnn

    path = folder / "global.npz"
    save_checkpoint(Checkpoint(0, build_cnn(28).get_weights()), path, durable=False)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    server.state.blobs[sha256] = path.read_bytes()
    return sha256


def _public(identity: SiteIdentity) -> str:
    return base64.b64encode(identity.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@pytest.mark.slow
def test_the_agent_runs_tasks_and_reports_only_weights_counts_and_a_failure_without_paths(
    server: FakeSiteServer, enrolled: SiteIdentity, tmp_path: Path
) -> None:
    images = write_image_folder(tmp_path / "chest", per_class=40)
    data = SiteData(site_config(None, [f"chest=image-folder:{images}"]), enrolled.folder)
    data.prepare()
    sha256 = _global_weights(server, tmp_path)
    tasks = [_task(kind, sha256) for kind in ("train", "evaluate", "statistics")] + [_task("train", sha256, "other")]
    tasks.append(_task("local", sha256, rounds=2))
    for task in tasks:
        server.state.tasks.put(task)
    agent = Agent(enrolled, data, TaskRunner(data), heartbeat_s=0.2, wait_s=1)
    thread = threading.Thread(target=agent.run)

    thread.start()
    deadline = time.monotonic() + 150
    while len(server.state.results) < len(tasks) and time.monotonic() < deadline:
        time.sleep(0.2)
    agent.stop.set()
    thread.join(30)

    assert not thread.is_alive()
    results = (TaskResult.model_validate(server.state.results[str(t["id"])]) for t in tasks)
    train, evaluate, statistics, failed, local = results
    split = data.prepared["chest"].parts
    assert train.error is None and train.num_examples == len(split["train"]) == 56
    assert {"train.loss", "train.accuracy", "test.loss", "test.accuracy"} <= set(train.metrics)
    assert train.weights_sha256 is not None
    uploaded = server.state.blobs[train.weights_sha256]
    assert hashlib.sha256(uploaded).hexdigest() == train.weights_sha256
    new = load_checkpoint(_saved(tmp_path, uploaded)).weights
    old = load_checkpoint(_saved(tmp_path, server.state.blobs[sha256])).weights
    assert [w.shape for w in new] == [w.shape for w in old]
    assert any(not np.array_equal(a, b) for a, b in zip(new, old, strict=True))
    assert evaluate.validation is not None and evaluate.test is not None and evaluate.weights_sha256 is None
    counts = GridCounts.from_lists(evaluate.test)
    assert (counts.n_negative, counts.n_positive) == (8, 8)
    assert GridCounts.from_lists(evaluate.validation).n_positive == 4
    assert statistics.weights_sha256 in server.state.blobs and statistics.num_examples == 56
    assert failed.error == "this site has no dataset named 'other'"
    assert local.error is None and local.weights_sha256 is None and local.num_examples == 56
    assert local.validation is not None and local.test is not None
    assert (GridCounts.from_lists(local.test).n_negative, GridCounts.from_lists(local.test).n_positive) == (8, 8)
    assert {"train.loss", "train.accuracy", "train.seconds"} <= set(local.metrics)
    puts = [r.path for r in server.state.requests if r.method == "PUT" and r.path.startswith("/api/site/blobs/")]
    uploads = {path.split("?")[0] for path in puts}  # a file may go up in several chunks
    assert len(uploads) == 2  # the update and the statistics: the local-only model never leaves
    assert (enrolled.folder / "cache" / f"{sha256}.npz").is_file()
    downloads = [r for r in server.state.requests if r.path.startswith("/api/site/weights/")]
    assert len(downloads) == 1  # cached by hash after the first task
    beats = [Heartbeat.model_validate_json(r.body) for r in server.state.requests if r.path == "/api/site/heartbeat"]
    assert any(b.busy_with is not None for b in beats) and beats[-1].datasets == data.summaries()
    for request in server.state.requests[1:]:
        verify(_public(enrolled), request.headers, request.method, request.path, body_sha256(request.body))
        assert MARKER.encode() not in request.body and str(tmp_path).encode() not in request.body


def test_a_local_task_that_asks_for_differential_privacy_is_refused_before_any_training(
    enrolled: SiteIdentity, tmp_path: Path
) -> None:
    """The site's privacy ledger counts DP training rounds only: a DP local model would escape it."""
    images = write_image_folder(tmp_path / "chest", per_class=10)
    data = SiteData(site_config(None, [f"chest=image-folder:{images}"]), enrolled.folder)
    dp = DpSettings(level="sample", noise_multiplier=1.0, clip_norm=1.0, delta=1e-5)
    task = SiteTask.model_validate(_task("local", "0" * 64, rounds=2, dp=dp))

    with pytest.raises(TaskRefused, match="a local baseline trains without differential privacy"):
        TaskRunner(data).run(task, [])


def _saved(folder: Path, data: bytes) -> Path:
    path = folder / f"{hashlib.sha256(data).hexdigest()}.npz"
    path.write_bytes(data)
    return path


def test_fedlens_site_run_stops_on_sigterm_and_logs_no_key_token_or_file_name(
    server: FakeSiteServer, certificates: tuple[Certificate, Certificate], tmp_path: Path
) -> None:
    images = write_image_folder(tmp_path / "chest", per_class=10)
    site = tmp_path / "site"
    env = os.environ | {"FEDLENS_SITE_TOKEN": TOKEN, "PYTHONPATH": str(Path(__file__).parents[2])}
    command = [sys.executable, "-m", "worker.cli", "site"]
    enrolled = subprocess.run(
        [*command, "enroll", "--server", server.url, "--fingerprint", certificates[0].fingerprint, "--dir", str(site)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert enrolled.returncode == 0, enrolled.stderr
    agent = subprocess.Popen(
        [*command, "run", "--dir", str(site), "--dataset", f"chest=image-folder:{images}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    deadline = time.monotonic() + 60
    while not any(r.path == "/api/site/heartbeat" for r in server.state.requests) and time.monotonic() < deadline:
        time.sleep(0.1)
    agent.send_signal(signal.SIGTERM)
    out, err = agent.communicate(timeout=30)

    assert agent.returncode == 0, err
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [entry["msg"] for entry in logs][-1] == "site agent stopped"
    assert any(entry["msg"].startswith("dataset chest:") for entry in logs)
    key = (site / KEY_FILE).read_text().splitlines()[1]
    for text in (enrolled.stdout + enrolled.stderr, out + err):
        assert TOKEN not in text and key not in text and MARKER not in text
    beat = Heartbeat.model_validate_json(next(r.body for r in server.state.requests if r.path.endswith("heartbeat")))
    assert beat.datasets[0].counts["test"] == {"negative": 2, "positive": 2}


@pytest.mark.parametrize(
    ("error", "reported"),
    [
        (
            DataError("/srv/x-rays/NORMAL/patient-name-7.png: unreadable image (OSError)"),
            "DataError: <path> unreadable",
        ),
        (DataError("row 3: no such image file 'patient-name-7.png' next to the CSV"), "DataError: row 3: no such"),
        (TaskRefused("this site has no dataset named 'x'"), "this site has no dataset named 'x'"),
    ],
)
def test_a_failure_is_reported_without_paths_or_file_names(error: Exception, reported: str) -> None:
    text = failure_text(error)

    assert text.startswith(reported)
    assert MARKER not in text and "/srv" not in text


def test_an_unreachable_server_is_retried_with_back_off_without_crashing(
    enrolled: SiteIdentity, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    images = write_image_folder(tmp_path / "chest", per_class=5)
    data = SiteData(site_config(None, [f"chest=image-folder:{images}"]), enrolled.folder)
    data.prepare()
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    gone = dataclasses.replace(
        enrolled, server=dataclasses.replace(enrolled.server, port=port, url=f"https://127.0.0.1:{port}")
    )
    agent = Agent(gone, data, TaskRunner(data), heartbeat_s=0.2, wait_s=1)
    thread = threading.Thread(target=agent.run)

    thread.start()
    time.sleep(2.5)
    alive = thread.is_alive()
    agent.stop.set()
    thread.join(10)

    assert alive and not thread.is_alive()
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("polling for work failed")]
    assert [message.rsplit(" in ", 1)[1] for message in failures[:2]] == ["1 s", "2 s"]  # the pauses double
    assert all("ConnectError" in message for message in failures)
