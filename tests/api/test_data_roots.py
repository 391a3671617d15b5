"""Data roots at the API: data outside FEDLENS_DATA_ROOTS is a 422 at its field (API, check, form), leaking nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import Experiment
from app.run_config import OutsideDataRoots
from app.settings import Settings
from tests.api.pages import quickstart_form
from tests.api.pagetree import page


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder outside the test's roots holding a file, as /root would."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "secret.npz").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    (folder / "NORMAL").mkdir()
    return folder


def with_train(source: dict[str, Any]) -> dict[str, Any]:
    return {"config": {"name": "escape", "data": {"train": source, "image_size": 32}}}


def refused(settings: Settings) -> str:
    return f"this path is {OutsideDataRoots(settings.roots)}"


@pytest.mark.parametrize(
    "source",
    [
        {"format": "image-folder", "path": "/", "split": "."},
        {"format": "image-folder", "path": "{tmp}/../../../proc/self"},
        {"format": "npz", "path": "{outside}/secret.npz"},
        {"format": "csv", "path": "/etc/passwd"},
    ],
)
def test_a_path_outside_the_roots_is_a_422_at_its_field_naming_the_roots(
    client: TestClient, session: Session, settings: Settings, tmp_path: Path, outside: Path, source: dict[str, str]
) -> None:
    path = source["path"].format(tmp=tmp_path, outside=outside)
    response = client.post("/api/experiments", json=with_train(source | {"path": path}))

    assert response.status_code == 422
    assert response.json() == {  # the whole answer: nothing about the path, not even the path
        "detail": [
            {
                "field": "config.data.train.path",
                "message": refused(settings),
                "type": "data_root",
                "loc": ["body", "config", "data", "train", "path"],
                "msg": refused(settings),
            }
        ]
    }
    assert str(settings.roots[0]) in refused(settings)
    assert session.scalar(select(func.count()).select_from(Experiment)) == 0


def test_two_paths_outside_one_existing_and_one_not_get_byte_identical_answers(
    client: TestClient, outside: Path
) -> None:
    answers = [
        client.post("/api/experiments", json=with_train({"format": "npz", "path": str(path)}))
        for path in (outside / "secret.npz", outside / "missing.npz")
    ]
    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].content == answers[1].content


def test_a_link_inside_the_roots_that_leads_out_is_refused(
    client: TestClient, settings: Settings, tmp_path: Path, outside: Path
) -> None:
    (tmp_path / "chest").symlink_to(outside)
    response = client.post(
        "/api/experiments", json=with_train({"format": "image-folder", "path": str(tmp_path / "chest")})
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["message"] == refused(settings)


def test_a_split_that_climbs_out_of_an_image_folder_is_a_422_at_the_split(client: TestClient, tmp_path: Path) -> None:
    source = {"format": "image-folder", "path": str(tmp_path), "split": "../../etc"}
    response = client.post("/api/experiments", json=with_train(source))

    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert item["field"] == "config.data.train.split"
    assert item["message"].startswith("the folder of this split is outside the data roots (")


def test_data_inside_the_roots_is_stored_as_given(client: TestClient, tmp_path: Path) -> None:
    source = {"format": "npz", "path": str(tmp_path / "not-yet-there.npz")}  # the worker reports a missing file
    response = client.post("/api/experiments", json=with_train(source))

    assert response.status_code == 201, response.text
    assert response.json()["config"]["data"]["train"]["path"] == source["path"]


def test_the_data_check_refuses_a_path_outside_without_asking_a_worker(
    client: TestClient, settings: Settings, broker: redis.Redis
) -> None:
    response = client.post(
        "/api/experiments", params={"check": "true"}, json=with_train({"format": "npz", "path": "/"})
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["message"] == refused(settings)
    assert broker.llen("check") == 0


def test_the_form_shows_the_refusal_at_the_path_field_and_creates_nothing(
    client: TestClient, session: Session, settings: Settings, broker: redis.Redis, outside: Path
) -> None:
    sent = quickstart_form(name="escape", data__train__format="npz", data__train__path=str(outside / "secret.npz"))

    root = page(client.post("/experiments/new", data=sent))

    assert root.find(data_error_for="data.train.path").text == refused(settings)
    assert session.scalar(select(func.count()).where(Experiment.name == "escape")) == 0
    assert broker.llen("runs") == 0


def test_the_forms_check_and_preview_show_the_refusal_at_the_path_field(
    client: TestClient, settings: Settings, broker: redis.Redis
) -> None:
    sent = quickstart_form(data__train__format="image-folder", data__train__path="/root")

    checked = client.post("/experiments/check", data=sent).json()
    preview = client.post("/experiments/preview", data=sent).json()

    assert checked == {"errors": {"data.train.path": refused(settings)}, "check": None}
    assert preview["errors"] == {"data.train.path": refused(settings)}
    assert broker.llen("check") == 0


def test_data_roots_come_from_a_json_list_or_a_path_list_and_default_to_the_data_dir_and_dot_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FEDLENS_DATA_ROOTS", json.dumps(["/srv/a", "/srv/b/../c"]))
    assert Settings().roots == (Path("/srv/a"), Path("/srv/c"))
    monkeypatch.setenv("FEDLENS_DATA_ROOTS", os.pathsep.join(["/srv/a", "/srv/d"]))
    assert Settings().roots == (Path("/srv/a"), Path("/srv/d"))
    monkeypatch.setenv("FEDLENS_DATA_ROOTS", "")
    assert Settings(data_dir=tmp_path / "home").roots == (tmp_path / "home" / "datasets", tmp_path / "data")
    for wrong, says in (("relative/folder", "must be absolute folders"), ("[/srv/a", "a JSON list of folders")):
        monkeypatch.setenv("FEDLENS_DATA_ROOTS", wrong)
        with pytest.raises(ValidationError, match=says):
            Settings()
