"""The data check through the API: a worker of the check queue reads the data, the API only relays its report."""

from __future__ import annotations

import zipfile

import pytest

from tests.e2e.stack import Stack

pytestmark = pytest.mark.slow


def test_the_api_reports_what_the_data_holds_before_launch(stack: Stack) -> None:
    stack.start_worker("check")
    config = {
        "name": "check",
        "data": {"train": {"format": "synthetic", "samples": 200, "positive_fraction": 0.25}, "image_size": 32},
        "federation": {"clients": 2, "client_test_fraction": 0.5},
    }
    answer = stack.http.post("/api/experiments", params={"check": "true"}, json={"config": config}, timeout=90)
    assert answer.status_code == 200, answer.text
    check = answer.json()
    assert check["ok"] is True and check["errors"] == []
    assert check["sources"]["data.train"]["classes"] == {"NORMAL": 150, "PNEUMONIA": 50}
    assert check["sources"]["data.train"]["sizes"] == {"32x32": 200}
    assert check["test"] == {"NORMAL": 30, "PNEUMONIA": 10}  # test_fraction 0.2 of each class
    # each client: 60 + 20, half its own test set, 10% of the rest for validation
    assert [c["train"] for c in check["clients"]] == [{"NORMAL": 27, "PNEUMONIA": 9}] * 2
    assert [c["validation"] for c in check["clients"]] == [{"NORMAL": 3, "PNEUMONIA": 1}] * 2
    assert len(check["thumbnails"]) == 6 and check["thumbnails"][0]["png"].startswith("data:image/png;base64,")
    assert stack.http.get("/api/experiments").json()["total"] == 0  # a check stores nothing

    config["data"]["train"] = {"format": "npz", "path": str(stack.folder / "missing.npz")}
    problem = stack.http.post("/api/experiments", params={"check": "true"}, json={"config": config}, timeout=90)
    assert problem.status_code == 200
    assert problem.json()["errors"] == [
        {"field": "data.train", "message": f"{stack.folder / 'missing.npz'}: no such .npz file"}
    ]

    archive = stack.folder / "members.npz"  # inside the roots, but a zip of other files: named by count, not listed
    with zipfile.ZipFile(archive, "w") as opened:
        opened.writestr("patients/jane-doe.txt", "secret")
    config["data"]["train"] = {"format": "npz", "path": str(archive)}
    zipped = stack.http.post("/api/experiments", params={"check": "true"}, json={"config": config}, timeout=90)
    message = f"{archive}: a zip archive holding other files than .npy arrays, not an .npz file"
    assert zipped.json()["errors"] == [{"field": "data.train", "message": message}]

    config["data"]["train"] = {"format": "image-folder", "path": "/", "split": "."}
    outside = stack.http.post("/api/experiments", params={"check": "true"}, json={"config": config}, timeout=90)
    assert outside.status_code == 422
    assert outside.json()["detail"][0]["message"].startswith(f"this path is outside the data roots ({stack.folder}")
