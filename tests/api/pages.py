"""Helpers shared by the page tests."""

from __future__ import annotations

import base64
import json
import uuid

import redis
from sqlalchemy.orm import Session

from app import forms
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


def quickstart_form(**changes: str) -> dict[str, str]:
    """The quick-start form as a browser submits it, with some fields changed (keys use __ for .)."""
    form = forms.form_values(forms.preset_config("quickstart")) | {"description": "first try"}
    return form | {key.replace("__", "."): value for key, value in changes.items()}
