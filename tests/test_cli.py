"""The command line without training: ``fedlens validate`` and ``fedlens db upgrade``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from app.migrate import alembic_config
from tests.services import database_name, drop_database, ensure_database, postgres_url
from tests.test_migrations import TABLES, schema
from worker.cli import main

ROOT = Path(__file__).resolve().parents[1]
PG_DATABASE = database_name("fedlens_cli_test")


def validate(tmp_path: Path, text: str, *options: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``fedlens validate``."""
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["validate", str(config), *options])
    return result.exit_code, result.stdout, result.stderr


def test_validate_prints_the_config_with_every_default_filled_in(tmp_path: Path) -> None:
    code, output, _ = validate(tmp_path, "name: small\nfederation: {clients: 2, rounds: 4}\n", "--skip-data")

    assert code == 0, output
    printed = json.loads(output)
    assert printed["name"] == "small"
    assert printed["federation"]["clients"] == 2 and printed["federation"]["rounds"] == 4
    assert printed["model"] == {
        "optimizer": "rmsprop",
        "learning_rate": 0.001,
        "batch_size": 32,
        "batchnorm": "federated",
        "calibration_samples": 512,
        "class_weight": "balanced",
        "augmentation": True,
        "normalization": "batchnorm",
    }
    assert printed["federation"]["intermittent"]["approach"] == "drop"
    assert printed["privacy"] == {"secure_aggregation": None, "dp": None}
    assert printed["data"]["image_size"] == 150


def test_validate_then_checks_the_data_on_stderr(tmp_path: Path) -> None:
    data = tmp_path / "d.npz"
    np.savez(data, images=np.zeros((200, 16, 16), np.uint16), labels=np.repeat([0, 1], 100))
    text = f"data: {{train: {{format: npz, path: '{data}'}}, image_size: 32}}\nfederation: {{clients: 2}}\n"
    code, output, errors = validate(tmp_path, text)

    assert code == 0, errors
    assert json.loads(output)["data"]["image_size"] == 32
    # 100 + 100; 20 + 20 held out; each client 40 + 40, a quarter its own test set, a tenth of the rest validation
    assert errors.splitlines() == [
        "data.train: 100 NORMAL, 100 PNEUMONIA; sizes 16x16 (200); 16-bit",
        "common test set: 20 NORMAL, 20 PNEUMONIA",
        "client 1: train 27 NORMAL, 27 PNEUMONIA; validation 6; own test 20",
        "client 2: train 27 NORMAL, 27 PNEUMONIA; validation 6; own test 20",
    ]


def test_validate_names_a_data_problem_and_exits_with_2(tmp_path: Path) -> None:
    missing = tmp_path / "none.npz"
    code, _, errors = validate(tmp_path, f"data: {{train: {{format: npz, path: '{missing}'}}}}\n")

    assert code == 2
    assert errors.strip() == f"Error: data.train: {missing}: no such .npz file"


def test_validate_with_data_roots_refuses_a_path_outside_them_as_the_service_would(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    text = f"data: {{train: {{format: image-folder, path: '{root / 'escape'}'}}}}\n"

    code, output, errors = validate(tmp_path, text, "--data-root", str(root))

    assert (code, output) == (2, "")
    assert errors.startswith(f"Error: data.train.path: this path is outside the data roots ({root}); ")
    assert validate(tmp_path, text, "--skip-data")[0] == 0  # without roots, as `fedlens run`, the link is followed


def test_validate_with_data_roots_refuses_an_image_linked_from_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    data = root / "d.npz"
    root.mkdir()
    np.savez(tmp_path / "real.npz", images=np.zeros((200, 16, 16), np.uint8), labels=np.repeat([0, 1], 100))
    data.symlink_to(tmp_path / "real.npz")
    text = f"data: {{train: {{format: npz, path: '{root}/sub/../d.npz'}}}}\n"

    code, _, errors = validate(tmp_path, text, "--data-root", str(root))

    assert code == 2 and "data.train.path: this path is outside the data roots" in errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("federation: {rounds: 0}\n", "federation.rounds: Input should be greater than or equal to 1 (got 0)"),
        ("model: {optimiser: adam}\n", "model.optimiser: Extra inputs are not permitted"),
        ("federation: [unclosed\n", "cannot read config"),
    ],
)
def test_validate_exits_with_2_and_names_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    code, _, errors = validate(tmp_path, text)

    assert code == 2
    assert message in errors
    assert "Traceback" not in errors


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a ``fedlens db upgrade`` against an empty database, and that database's URL."""
    if request.param == "sqlite":  # the default: a SQLite file in the data directory
        yield {
            "FEDLENS_DATA_DIR": str(tmp_path / "data"),
            "url": f"sqlite:///{(tmp_path / 'data' / 'fedlens.db').resolve()}",
        }
        return
    ensure_database(PG_DATABASE, fresh=True)
    try:
        yield {"FEDLENS_DATABASE_URL": postgres_url(PG_DATABASE), "url": postgres_url(PG_DATABASE)}
    finally:
        drop_database(PG_DATABASE)


def test_db_upgrade_migrates_an_empty_database_to_head_and_again_changes_nothing(
    empty_database: dict[str, str], tmp_path: Path
) -> None:
    url = empty_database.pop("url")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDLENS_")} | empty_database
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()

    runs = [
        subprocess.run(
            [sys.executable, "-m", "worker.cli", "db", "upgrade"],
            cwd=tmp_path,  # no .env here
            env=env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
            capture_output=True,
            text=True,
            timeout=120,
        )
        for _ in range(2)
    ]

    for run in runs:
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"database schema is up to date: {url}"
    assert schema(url) == (TABLES | {"alembic_version"}, [head])
