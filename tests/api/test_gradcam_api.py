"""REST API of the Grad-CAM galleries: indexes as the worker writes them, their PNGs, requests for another round."""

from __future__ import annotations

import base64
import io
import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.orm import Session

from app.gradcam import gallery_folder
from app.models import FlRound, Run
from app.settings import Settings
from tests.api.factories import add_experiment, add_run, round_result
from worker import explain
from worker.engine.checkpoint import ArtifactModified, save_round_weights
from worker.engine.data import Dataset
from worker.engine.digest import weights_sha256
from worker.engine.gallery import write_index
from worker.failures import user_message
from worker.store import save_round


def png_bytes(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_gallery(settings: Settings, run_id: uuid.UUID, rnd: int, categories: tuple[str, ...] = ("tp", "fn")) -> Path:
    """A gallery as worker.engine.gallery writes one: PNGs, then the round's index naming them."""
    folder = gallery_folder(settings.artifacts, run_id)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for category in categories:
        name = f"r{rnd:04d}-{category}-1.png"
        (folder / name).write_bytes(png_bytes((rnd, 0, 0)))
        positive = category in ("tp", "fn")
        predicted = category in ("tp", "fp")
        items.append(
            {
                "file": name,
                "category": category.upper(),
                "rank": 1,
                "index": 7,
                "label": "PNEUMONIA" if positive else "NORMAL",
                "prediction": "PNEUMONIA" if predicted else "NORMAL",
                "probability": 0.9 if predicted else 0.2,
            }
        )
    counts = {"TP": 5, "TN": 4, "FP": 1, "FN": 2}
    write_index(folder, rnd, {"status": "ready", "items": items, "counts": counts, "layer": "conv2d_3"})
    return folder


def test_gallery_is_missing_until_a_worker_writes_one(client: TestClient, session: Session) -> None:
    run = add_run(session, add_experiment(session))

    body = client.get(f"/api/runs/{run.id}/gradcam").json()

    assert (body["status"], body["round"], body["rounds"], body["items"]) == ("missing", None, [], [])
    assert client.get(f"/api/runs/{uuid.uuid4()}/gradcam").status_code == 404


def test_gallery_shows_the_latest_round_explained_and_serves_its_pngs(
    client: TestClient, session: Session, settings: Settings
) -> None:
    run = add_run(session, add_experiment(session))
    write_gallery(settings, run.id, 2, ("tp",))
    write_gallery(settings, run.id, 3)

    latest = client.get(f"/api/runs/{run.id}/gradcam").json()
    second = client.get(f"/api/runs/{run.id}/gradcam", params={"round": 2}).json()
    png = client.get(f"/api/runs/{run.id}/gradcam/r0003-fn-1.png")

    assert (latest["status"], latest["round"], latest["rounds"]) == ("ready", 3, [2, 3])
    assert [(i["file"], i["category"], i["label"], i["prediction"]) for i in latest["items"]] == [
        ("r0003-tp-1.png", "TP", "PNEUMONIA", "PNEUMONIA"),
        ("r0003-fn-1.png", "FN", "PNEUMONIA", "NORMAL"),
    ]
    assert latest["items"][1]["probability"] == 0.2 and latest["counts"]["FN"] == 2
    assert (second["round"], [i["file"] for i in second["items"]]) == (2, ["r0002-tp-1.png"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == png_bytes((3, 0, 0))
    missing = client.get(f"/api/runs/{run.id}/gradcam", params={"round": 1}).json()
    assert (missing["status"], missing["round"]) == ("missing", 1)


def test_a_pending_or_failed_gallery_says_so(client: TestClient, session: Session, settings: Settings) -> None:
    run = add_run(session, add_experiment(session))
    folder = gallery_folder(settings.artifacts, run.id)
    write_index(folder, 3, {"status": "pending"})
    write_index(folder, 2, {"status": "failed", "error": "FileNotFoundError: round-0002.npz"})

    pending = client.get(f"/api/runs/{run.id}/gradcam").json()
    failed = client.get(f"/api/runs/{run.id}/gradcam", params={"round": 2}).json()

    assert (pending["status"], pending["items"], pending["updated_at"] is not None) == ("pending", [], True)
    assert (failed["status"], failed["error"]) == ("failed", "FileNotFoundError: round-0002.npz")


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("round-0003.json", 422),  # an index, not a PNG
        ("..%2Fmodel.keras", 404),  # an encoded slash never reaches the handler
        ("..%2F..%2F..%2Fetc%2Fpasswd", 404),
        ("%2E%2E.png", 422),  # "...png"
        (".r0003-tp-1.png", 422),
        ("r0003-tp-1.png%00.png", 422),
        ("r0003 tp 1.png", 422),
        ("r0003-tn-1.png", 404),  # well formed, but no index names it
        ("stray.png", 404),  # on disk, but no index names it
    ],
)
def test_gallery_file_refuses_names_that_no_index_of_the_run_gives(
    client: TestClient, session: Session, settings: Settings, name: str, status: int
) -> None:
    run = add_run(session, add_experiment(session))
    folder = write_gallery(settings, run.id, 3)
    (folder / "stray.png").write_bytes(png_bytes((0, 0, 9)))
    (folder.parent / "model.keras").write_bytes(b"weights")

    response = client.get(f"/api/runs/{run.id}/gradcam/{name}")

    assert response.status_code == status, response.text
    assert response.headers["content-type"] != "image/png"


def test_a_file_of_another_runs_gallery_is_not_served(client: TestClient, session: Session, settings: Settings) -> None:
    experiment = add_experiment(session)
    mine, other = add_run(session, experiment), add_run(session, experiment)
    write_gallery(settings, other.id, 3)

    assert client.get(f"/api/runs/{mine.id}/gradcam/r0003-tp-1.png").status_code == 404
    assert client.get(f"/api/runs/{other.id}/gradcam/r0003-tp-1.png").status_code == 200


@pytest.fixture
def three_rounds(session: Session, tmp_path: Path) -> Run:
    """A run with rounds 1-3 as the orchestrator stores them: round 1 as stored before every round's weights were
    kept (its checkpoint is gone), round 2 with only its weights file left, round 3 with both."""
    run = add_run(session, add_experiment(session))
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for number in (1, 2, 3):
        checkpoint, weights = folder / f"round-{number:04d}.npz", None
        if number == 3:
            checkpoint.write_bytes(b"npz")
        if number > 1:
            weights = save_round_weights(number, [np.full(2, number, np.float32)], tmp_path / "weights")
        save_round(session, run.id, round_result(number), str(checkpoint), weights_path=weights and str(weights))
    return run


def queued_gradcam_tasks(broker: redis.Redis) -> list[tuple[str, list[object]]]:
    messages = [json.loads(raw) for raw in broker.lrange("check", 0, -1)]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]


def test_request_queues_a_kept_round_on_the_check_queue(
    client: TestClient, broker: redis.Redis, three_rounds: Run
) -> None:
    run = three_rounds

    response = client.post(f"/api/runs/{run.id}/gradcam", params={"round": 2})
    final = client.post(f"/api/runs/{run.id}/gradcam")

    assert response.status_code == 202
    assert response.json() | {"task_id": ""} == {"run_id": str(run.id), "round": 2, "task_id": "", "status": "queued"}
    assert final.json()["round"] == 3
    assert sorted(queued_gradcam_tasks(broker)) == [
        ("fedlens.gradcam", [str(run.id), 2]),
        ("fedlens.gradcam", [str(run.id), 3]),
    ]


def test_request_for_a_round_without_checkpoint_or_not_stored_is_refused(
    client: TestClient, session: Session, broker: redis.Redis, three_rounds: Run
) -> None:
    run = three_rounds

    dropped = client.post(f"/api/runs/{run.id}/gradcam", params={"round": 1})
    unknown = client.post(f"/api/runs/{run.id}/gradcam", params={"round": 4})
    fresh = client.post(f"/api/runs/{add_run(session, add_experiment(session)).id}/gradcam")

    assert dropped.status_code == 409
    assert "round 1 are no longer on the server" in dropped.json()["detail"]
    assert "explained: 2, 3" in dropped.json()["detail"]
    assert unknown.status_code == 404 and "completed: rounds 1 to 3" in unknown.json()["detail"]
    assert fresh.status_code == 404 and "none yet" in fresh.json()["detail"]
    assert client.post(f"/api/runs/{run.id}/gradcam", params={"round": 0}).status_code == 422
    assert queued_gradcam_tasks(broker) == []


class BrokenTrainer:
    def predict(self, weights: object, images: object) -> object:
        raise RuntimeError("cannot allocate tensor in /srv/secret/cache.bin")


def test_a_gallery_that_fails_on_the_worker_shows_a_short_error_without_its_details(
    client: TestClient, session: Session, settings: Settings
) -> None:
    run = add_run(session, add_experiment(session))
    federation = SimpleNamespace(test=Dataset(np.zeros((4, 8, 8, 1), np.float32), np.array([0, 1, 0, 1], np.uint8)))
    ctx = SimpleNamespace(trainer=BrokenTrainer(), federation=federation, config=SimpleNamespace(seed=1))
    explain.announce(settings.artifacts, run.id, 3)
    pending = client.get(f"/api/runs/{run.id}/gradcam").json()["status"]

    outcome = explain.compute(settings, ctx, run.id, 3, [])

    body = client.get(f"/api/runs/{run.id}/gradcam").json()
    assert (pending, outcome) == ("pending", "failed")
    assert (body["status"], body["round"]) == ("failed", 3)
    assert body["error"] == "internal error (RuntimeError); the server log has the details"


def test_an_old_rounds_weights_are_read_from_their_own_file_and_refused_once_modified(
    session: Session, tmp_path: Path
) -> None:
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    run = add_run(session, add_experiment(session))
    path = save_round_weights(1, weights, tmp_path / "weights")
    gone = tmp_path / "checkpoints" / "round-0001.npz"  # dropped: a run keeps only its last few checkpoints
    digest = weights_sha256(weights)
    save_round(session, run.id, round_result(1), str(gone), weights_sha256=digest, weights_path=str(path))
    stored = session.get(FlRound, (run.id, 1))
    assert stored is not None

    read = explain.stored_weights(stored)
    save_round_weights(1, [w + 1 for w in weights], tmp_path / "weights")  # overwritten after it was recorded

    assert [w.tolist() for w in read] == [w.tolist() for w in weights]
    with pytest.raises(ArtifactModified) as modified:
        explain.stored_weights(stored)
    # what the gallery shows: the engine's own message, not "internal error"
    assert (
        user_message(modified.value) == "ArtifactModified: the weights of round 1 were modified after they were written"
    )
