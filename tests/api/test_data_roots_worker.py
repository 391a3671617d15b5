"""Data roots on the worker: a config that bypassed the API (stored before the roots, or written straight into the
database) is refused by the orchestrator, the client tasks and the data check, and the run's error leaks nothing."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image
from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.broker import client_for
from app.models import Experiment, Run, RunKind, RunStatus
from app.run_config import OutsideDataRoots, RunConfig
from app.schemas import RunRead
from app.settings import Settings, get_settings
from tests.api.conftest import BROKER_URL, DATABASE_URL
from worker import context, orchestrator, tasks
from worker.engine.data import DataError


@pytest.fixture
def worker_settings(
    tmp_path: Path, engine: Engine, broker: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """The settings a worker process reads from its environment, with the test's folder as its only data root."""
    env = {
        "FEDLENS_DATABASE_URL": DATABASE_URL,
        "FEDLENS_BROKER_URL": BROKER_URL,
        "FEDLENS_DATA_DIR": str(tmp_path),
        "FEDLENS_DATA_ROOTS": str(tmp_path / "root"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
    context.run_context.cache_clear()


@pytest.fixture
def stored_run(engine: Engine) -> Iterator[Callable[[dict[str, Any]], uuid.UUID]]:
    """Commit a queued run of this config, as an old API or a hand-written row would have; removed afterwards."""
    made: list[uuid.UUID] = []

    def store(train: dict[str, Any]) -> uuid.UUID:
        config = RunConfig.model_validate({"data": {"train": train, "image_size": 16}, "federation": {"clients": 2}})
        with Session(engine) as session:
            experiment = Experiment(name="bypass", config=config.model_dump(mode="json"))
            run = Run(experiment=experiment, kind=RunKind.FEDERATED, seed=1, total_rounds=10, status=RunStatus.QUEUED)
            session.add(run)
            session.commit()
            made.append(experiment.id)
            return run.id

    yield store
    with Session(engine) as session:
        session.execute(delete(Experiment).where(Experiment.id.in_(made)))
        session.commit()


def outside_source(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "outside").mkdir(exist_ok=True)
    return {"format": "image-folder", "path": str(tmp_path / "outside")}


def run_error(engine: Engine, run_id: uuid.UUID) -> tuple[str, str | None]:
    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        return str(run.status), run.error


def test_the_orchestrator_fails_a_run_whose_data_lies_outside_with_the_roots_message(
    worker_settings: Settings, stored_run: Callable[[dict[str, Any]], uuid.UUID], engine: Engine, tmp_path: Path
) -> None:
    run_id = stored_run(outside_source(tmp_path))

    outcome = orchestrator.execute_run(run_id, worker_settings, client_for(worker_settings.broker, None))

    assert outcome == "failed"
    message = f"data error in data.train: this path is {OutsideDataRoots(worker_settings.roots)}"
    assert run_error(engine, run_id) == ("failed", message)


def test_a_busy_database_fails_the_run_with_a_short_message_and_no_sql(
    worker_settings: Settings,
    stored_run: Callable[[dict[str, Any]], uuid.UUID],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = stored_run({"format": "synthetic", "samples": 40})
    locked = OperationalError(
        "UPDATE run SET error=? WHERE path = ?", ("x", "/srv/secret"), sqlite3.OperationalError("database is locked")
    )

    def busy(*_args: object, **_kwargs: object) -> None:
        raise locked

    monkeypatch.setattr(orchestrator, "context_for", busy)
    orchestrator.execute_run(run_id, worker_settings, client_for(worker_settings.broker, None))

    status, error = run_error(engine, run_id)
    assert status == "failed"
    assert error == "the database was busy; resume the run once it answers again (the server log has the details)"


def test_a_run_heartbeats_while_its_orchestrator_starts_up(
    worker_settings: Settings,
    stored_run: Callable[[dict[str, Any]], uuid.UUID],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loading the data and importing TensorFlow can outlast stale_after_s; a run silent that long is requeued."""
    settings = worker_settings.model_copy(update={"heartbeat_s": 0.2})
    run_id = stored_run({"format": "synthetic", "samples": 40})
    beats: list[datetime | None] = []

    def slow_start(*_args: object, **_kwargs: object) -> None:
        for _ in range(2):
            with Session(engine) as session:
                beats.append(session.scalar(select(Run.heartbeat_at).where(Run.id == run_id)))
            time.sleep(1.0)
        raise DataError("the data went away", "data.train")

    monkeypatch.setattr(orchestrator, "context_for", slow_start)
    orchestrator.execute_run(run_id, settings, client_for(settings.broker, None))

    claimed, during = beats
    assert claimed is not None and during is not None and during > claimed


@pytest.mark.parametrize("task", [tasks.train_client, tasks.client_batchnorm_statistics, tasks.evaluate_client])
def test_each_client_task_refuses_data_outside_before_it_reads_anything(
    worker_settings: Settings,
    stored_run: Callable[[dict[str, Any]], uuid.UUID],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    task: Any,
) -> None:
    run_id = stored_run(outside_source(tmp_path))
    monkeypatch.setattr(tasks, "Lease", lambda *_args: contextlib.nullcontext())  # leases are tested elsewhere

    with pytest.raises(DataError) as caught:
        task(str(run_id), 1, "1", str(tmp_path / "global.npz"), "0" * 64)

    assert str(caught.value) == f"this path is {OutsideDataRoots(worker_settings.roots)}"


def test_the_check_task_refuses_a_config_sent_straight_to_the_broker(worker_settings: Settings, tmp_path: Path) -> None:
    config = RunConfig.model_validate({"data": {"train": outside_source(tmp_path)}}).model_dump(mode="json")

    report = tasks.check_data_task(config)

    message = f"this path is {OutsideDataRoots(worker_settings.roots)}"
    assert report == {"ok": False, "errors": [{"field": "data.train", "message": message}]}


def test_a_run_keeps_what_its_data_loaders_skipped_even_when_it_fails_later(
    worker_settings: Settings,
    stored_run: Callable[[dict[str, Any]], uuid.UUID],
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Files a loader skipped are on record with the run (API, run page), not only in a worker's log."""
    folder = tmp_path / "root" / "chest"
    rng = np.random.default_rng(0)
    for cls in ("NORMAL", "PNEUMONIA"):
        (folder / "train" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(folder / "train" / cls / f"{i}.png")
    (folder / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    (folder / "train" / "NORMAL" / "._0.png").write_bytes(b"AppleDouble")  # hidden: ignored, not counted
    run_id = stored_run({"format": "image-folder", "path": str(folder)})

    def lost(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the training worker went away")

    monkeypatch.setattr(orchestrator, "_train", lost)
    assert orchestrator.execute_run(run_id, worker_settings, client_for(worker_settings.broker, None)) == "failed"

    with Session(engine) as session:
        run = session.get(Run, run_id)
        assert run is not None
        report = RunRead.model_validate(run).data_report
    assert report is not None and list(report) == ["data.train"]
    train = report["data.train"]
    assert (train.classes, train.sizes, train.bit_depths) == ({"NORMAL": 6, "PNEUMONIA": 6}, {"24x20": 12}, {"8": 12})
    assert train.skipped == {"unsupported file type '.txt'": 1}
