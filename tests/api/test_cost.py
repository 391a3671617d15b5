"""The cost of a config (memory per worker, training work) is estimated at create and refused over the budget."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.limits.cost import RUNTIME_GIB, estimate
from app.models import Experiment
from app.run_config import RunConfig
from app.settings import Settings
from tests.api.pages import quickstart_form
from tests.api.pagetree import page

HUGE = {"data": {"train": {"format": "synthetic", "samples": 100_000}, "image_size": 512}}


def test_the_estimate_counts_images_pixels_and_passes() -> None:
    cfg = RunConfig.model_validate(
        {
            "data": {"train": {"format": "synthetic", "samples": 1000}, "image_size": 64},
            "federation": {"rounds": 4, "local_epochs": 2, "clients": 5},
            "centralized": {"epochs": 3},
        }
    )
    cost = estimate(cfg)

    assert (cost.images, cost.pixels, cost.passes) == (1000, 4096, 4 * 2 + 3)
    assert cost.training_pixels == 1000 * 4096 * 11
    assert cost.memory_gib == pytest.approx(1000 * 4096 * 4 * 3.3 / 2**30 + RUNTIME_GIB)


def test_file_sources_have_no_image_count_at_create() -> None:
    cfg = RunConfig.model_validate({"data": {"train": {"format": "npz", "path": "x.npz"}}})
    assert estimate(cfg).images is None and estimate(cfg).memory_gib is None


def test_a_config_over_the_memory_budget_is_422_saying_what_to_reduce(client: TestClient, session: Session) -> None:
    response = client.post("/api/experiments", json={"config": {"name": "too-big", **HUGE}})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["field"] == "config.data.train.samples"
    assert error["message"] == (
        "100,000 images of 512x512 pixels need about 323.3 GiB per worker; the limit is 8 GiB "
        "(FEDLENS_MAX_WORKER_MEMORY_GIB): lower data.train.samples to 2,100 or data.image_size to 64"
    )
    assert session.scalar(select(func.count()).where(Experiment.name == "too-big")) == 0


def test_the_suggested_sizes_fit_the_budget() -> None:
    settings = Settings()
    for fitted in ({"samples": 2100, "size": 512}, {"samples": 100_000, "size": 64}):
        cfg = RunConfig.model_validate(
            {"data": {"train": {"format": "synthetic", "samples": fitted["samples"]}, "image_size": fitted["size"]}}
        )
        memory = estimate(cfg).memory_gib
        assert memory is not None and memory <= settings.max_worker_memory_gib


def test_a_config_over_the_work_budget_is_422_naming_the_rounds(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    client = make_client(settings.model_copy(update={"max_training_pixels": 1e8}))
    config = {"data": {"train": {"format": "synthetic", "samples": 1000}, "image_size": 64}}

    response = client.post("/api/experiments", json={"config": config | {"federation": {"rounds": 100}}})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["field"] == "config.federation.rounds"
    assert "1,000 images x 4,096 pixels x 200 training passes is 8.2e+08 pixel passes" in error["message"]
    assert "(to 24 passes in all)" in error["message"]


def test_the_form_shows_the_budget_refusal_next_to_the_samples_field(
    client: TestClient, session: Session, broker: redis.Redis
) -> None:
    sent = quickstart_form(name="too-big-form", data__train__samples="100000", data__image_size="512")

    root = page(client.post("/experiments/new", data=sent))

    assert "need about 323.3 GiB per worker" in root.find(data_error_for="data.train.samples").text
    assert session.scalar(select(func.count()).where(Experiment.name == "too-big-form")) == 0
    assert broker.llen("runs") == 0


def test_the_live_preview_shows_the_budget_refusal_before_the_form_is_sent(client: TestClient) -> None:
    sent = quickstart_form(data__train__samples="100000", data__image_size="512")

    errors = client.post("/experiments/preview", data=sent).json()["errors"]

    assert list(errors) == ["data.train.samples"] and "the limit is 8 GiB" in errors["data.train.samples"]
