"""Helpers shared by the page tests."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis
from sqlalchemy.orm import Session

from app.models import Experiment, Run
from tests.api.factories import metrics, round_result
from tests.api.pagetree import Element
from worker.store import save_round

SCHEDULE_TEXT = "3 joins 3\n2 leaves 6"
NO_VALUE = "\N{EN DASH}"  # what the pages show for a missing number


def queued_run_ids(broker: redis.Redis, queue: str) -> list[str]:
    return [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in broker.lrange(queue, 0, -1)]


def save_aucs(session: Session, run: Run, *aucs: float) -> None:
    for number, auc in enumerate(aucs, start=1):
        save_round(session, run.id, round_result(number, evaluation=metrics(auc=auc)), f"ckpt/{number}")


def experiment_names(root: Element) -> list[str]:
    return [th.find("a").text for th in root.find("table", class_="experiments").find_all("th", scope="rowgroup")]


def launched_experiment(session: Session, location: str) -> Experiment:
    """The experiment of the run a redirect points to."""
    run = session.get(Run, uuid.UUID(location.removeprefix("/runs/")))
    assert run is not None, location
    return run.experiment


# The new-experiment form's 57 config fields (no site registered) as a browser submits them for each preset, written
# out by hand from the example files in examples/ that the presets are.
QUICKSTART_FORM = {  # examples/quickstart-synthetic.yaml
    "name": "quickstart-synthetic",
    "seed": "42",
    "mode": "simulation",
    "federation.round_timeout_s": "3600",
    "federation.min_sites": "1",
    "baselines": "",
    "data.train.format": "synthetic",
    "data.train.path": "",
    "data.train.split": "",
    "data.train.samples": "900",
    "data.train.positive_fraction": "0.5",
    "data.train.image_column": "path",
    "data.train.label_column": "label",
    "data.train.split_column": "",
    "data.train.positive": "PNEUMONIA, 1",
    "data.train.negative": "NORMAL, 0",
    "data.test.format": "holdout",
    "data.test.path": "",
    "data.test.split": "",
    "data.test.image_column": "path",
    "data.test.label_column": "label",
    "data.test.split_column": "",
    "data.test.positive": "PNEUMONIA, 1",
    "data.test.negative": "NORMAL, 0",
    "data.test_fraction": "0.2",
    "data.image_size": "32",
    "model.optimizer": "rmsprop",
    "model.learning_rate": "0.001",
    "model.batch_size": "32",
    "model.batchnorm": "federated",
    "model.calibration_samples": "512",
    "model.class_weight": "balanced",
    "model.augmentation": "on",
    "federation.clients": "3",
    "federation.rounds": "5",
    "federation.local_epochs": "1",
    "federation.partition.kind": "iid",
    "federation.partition.fractions": "",
    "federation.partition.alpha": "0.5",
    "federation.client_test_fraction": "0.2",
    "federation.client_validation_fraction": "0.1",
    "evaluation.threshold.method": "youden",
    "evaluation.threshold.target_sensitivity": "0.9",
    "evaluation.threshold.value": "0.5",
    "federation.intermittent.approach": "drop",
    "federation.intermittent.events": "",
    "federation.intermittent.availability": "1.0",
    "centralized.enabled": "on",
    "centralized.epochs": "5",
    "privacy.secure_aggregation": "off",
    "privacy.secure_aggregation.threshold": "2",
    "privacy.dp.level": "off",
    "privacy.dp.noise_multiplier": "1.0",
    "privacy.dp.clip_norm": "1.0",
    "privacy.dp.delta": "1e-05",
    "privacy.dp.target_epsilon": "",
    "privacy.dp.adaptive_clipping": "",
}
_KERMANY_FORM = QUICKSTART_FORM | {  # the study's files: the Kermany folders at 150 px, 10 rounds and epochs
    "data.train.format": "image-folder",
    "data.train.path": "data/chest_xray",
    "data.train.split": "train",
    "data.train.samples": "600",
    "data.test.format": "image-folder",
    "data.test.path": "data/chest_xray",
    "data.test.split": "test",
    "data.image_size": "150",
    "federation.rounds": "10",
    "federation.client_test_fraction": "0.25",
    "centralized.epochs": "10",
}
PRESET_FORMS = {
    "quickstart": QUICKSTART_FORM,
    "paper-3": _KERMANY_FORM
    | {
        "name": "paper-3-clients",
        "federation.partition.kind": "sizes",
        "federation.partition.fractions": "0.5, 0.3, 0.2",
    },
    "paper-10": _KERMANY_FORM | {"name": "paper-10-clients", "federation.clients": "10"},
    "paper-drop": _KERMANY_FORM | {"name": "paper-intermittent-drop", "federation.intermittent.events": SCHEDULE_TEXT},
    "paper-keep": _KERMANY_FORM
    | {
        "name": "paper-intermittent-keep-last",
        "federation.intermittent.approach": "keep-last",
        "federation.intermittent.events": SCHEDULE_TEXT,
    },
}


# The config each preset stands for, without its empty values (as the live preview shows it), written out by hand.
QUICKSTART_CONFIG: dict[str, Any] = {
    "name": "quickstart-synthetic",
    "seed": 42,
    "data": {
        "train": {"format": "synthetic", "samples": 900, "positive_fraction": 0.5},
        "test_fraction": 0.2,
        "image_size": 32,
    },
    "model": {
        "optimizer": "rmsprop",
        "learning_rate": 0.001,
        "batch_size": 32,
        "batchnorm": "federated",
        "calibration_samples": 512,
        "class_weight": "balanced",
        "augmentation": True,
        "normalization": "batchnorm",
    },
    "federation": {
        "clients": 3,
        "rounds": 5,
        "local_epochs": 1,
        "partition": {"kind": "iid"},
        "client_test_fraction": 0.2,
        "client_validation_fraction": 0.1,
        "intermittent": {"approach": "drop", "events": [], "availability": 1.0},
        "sites": [],
        "round_timeout_s": 3600.0,
        "min_sites": 1,
    },
    "evaluation": {"threshold": {"method": "youden", "target_sensitivity": 0.9, "value": 0.5}},
    "centralized": {"enabled": True, "epochs": 5},
    "privacy": {},
    "baselines": [],
}


def kermany_config(
    name: str,
    *,
    clients: int = 3,
    approach: str = "drop",
    schedule: bool = False,
    partition: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A study preset: the Kermany folders at 150 px, 10 rounds, the baseline for 10 epochs."""
    kermany = {"format": "image-folder", "path": "data/chest_xray", "samples": 600, "positive_fraction": 0.5}
    events = [{"client": 3, "joins": 3}, {"client": 2, "leaves": 6}] if schedule else []
    return QUICKSTART_CONFIG | {
        "name": name,
        "data": {
            "train": kermany | {"split": "train"},
            "test": kermany | {"split": "test"},
            "test_fraction": 0.2,
            "image_size": 150,
        },
        "federation": QUICKSTART_CONFIG["federation"]
        | {
            "clients": clients,
            "rounds": 10,
            "partition": partition or {"kind": "iid"},
            "client_test_fraction": 0.25,
            "intermittent": {"approach": approach, "events": events, "availability": 1.0},
        },
        "centralized": {"enabled": True, "epochs": 10},
    }


PRESET_CONFIGS = {
    "quickstart": QUICKSTART_CONFIG,
    "paper-3": kermany_config("paper-3-clients", partition={"kind": "sizes", "fractions": [0.5, 0.3, 0.2]}),
    "paper-10": kermany_config("paper-10-clients", clients=10),
    "paper-drop": kermany_config("paper-intermittent-drop", schedule=True),
    "paper-keep": kermany_config("paper-intermittent-keep-last", approach="keep-last", schedule=True),
}


def quickstart_form(**changes: str) -> dict[str, str]:
    """The quick-start form as a browser submits it, with some fields changed (keys use __ for .)."""
    form = QUICKSTART_FORM | {"description": "first try"}
    return form | {key.replace("__", "."): value for key, value in changes.items()}
