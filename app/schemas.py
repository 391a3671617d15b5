"""Pydantic models of the REST API's requests and responses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.models import RunKind, RunStatus
from app.run_config import RunConfig

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class ExperimentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200, description="default: config.name")
    description: str = Field("", max_length=10_000)
    config: RunConfig


class RunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    experiment_id: uuid.UUID
    kind: RunKind
    status: RunStatus
    seed: int
    total_rounds: int
    current_round: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    worker: str | None
    error: str | None
    cancel_requested: bool
    has_model: bool = False


class ExperimentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    config: RunConfig
    created_at: datetime
    runs: list[RunRead]


class ClientRoundRead(BaseModel):
    id: str
    status: str
    event: str | None
    presence: Literal["not-joined", "present", "left"] = Field(
        "present",
        description="where the join/leave schedule puts the client this round: before its join round, between its "
        "join and leave rounds, or from its leave round on; an absent client that is present did not answer",
    )
    samples: int
    error: str | None = None
    metrics: dict[str, float | None] = {}


class RoundRead(BaseModel):
    number: int
    metrics: dict[str, float | None]
    clients: list[ClientRoundRead]
    wall_s: float
    train_s: float
    calibration_s: float
    aggregation_s: float
    evaluation_s: float
    critical_path_s: float
    bytes_sent: int
    bytes_received: int
    test_samples: int
    finished_at: datetime


class RunRounds(BaseModel):
    run: RunRead
    rounds: list[RoundRead]


class RocRead(BaseModel):
    run_id: uuid.UUID
    round: int
    auc: float | None
    fpr: list[float]
    tpr: list[float]


class CompareRow(BaseModel):
    run_id: uuid.UUID
    experiment: str
    kind: RunKind
    status: RunStatus
    clients: int | None
    loss: float | None
    accuracy: float | None
    auc: float | None
    rounds: int
    execution_time_s: float
    parallel_time_s: float
    centralized_run_id: uuid.UUID | None
    time_reduction: float | None = Field(None, description="(centralized - parallel) / centralized")


class Launch(BaseModel):
    federated: RunRead
    centralized: RunRead | None


class DataProblem(BaseModel):
    field: str = Field(description="the config field to change, e.g. data.train or federation.partition")
    message: str


class SourceReport(BaseModel):
    classes: dict[str, int] = Field(description="images per class")
    sizes: dict[str, int] = Field(description="images per stored size, 'WxH'")
    bit_depths: dict[str, int] = Field(description="images per stored bit depth")
    skipped: dict[str, int] = Field(description="files skipped, per reason (hidden files are not counted)")


class ClientCounts(BaseModel):
    id: str
    train: dict[str, int]
    test: dict[str, int]


class Thumbnail(BaseModel):
    label: str
    png: str = Field(description="a data: URL of a small PNG of the image as decoded")


class DataCheck(BaseModel):
    """What a config's data holds and how it splits, from a worker (the API never reads images)."""

    ok: bool
    errors: list[DataProblem]
    sources: dict[str, SourceReport] = {}
    test: dict[str, int] = {}
    clients: list[ClientCounts] = []
    thumbnails: list[Thumbnail] = []
