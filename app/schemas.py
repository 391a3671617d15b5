"""Pydantic models of the REST API's requests and responses."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.limits.bounds import Text
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

    name: Text | None = Field(None, min_length=1, max_length=200, description="default: config.name")
    description: Text = Field("", max_length=10_000)
    shared: bool = Field(False, description="let every signed-in user see it (researchers may also launch it)")
    config: RunConfig


class LocalBaselineRead(BaseModel):
    """One hospital site's local-only model (``baselines: [local]``): trained on the site's data alone, judged on its
    own test split from grid counts; compare it with the global model's ``global.*`` metrics of that site."""

    client: str
    site: str
    dataset: str
    epochs: int = Field(description="rounds x local_epochs, as the federated model trained")
    samples: int | None = Field(None, description="the site's training images")
    threshold: float | None = Field(
        None, description="the operating threshold, chosen with the run's method on the site's own validation split"
    )
    metrics: dict[str, float | None] = Field(
        {}, description="on the site's own test split: auc (grid), accuracy, sensitivity, specificity, ..."
    )
    train: dict[str, float | None] = Field({}, description="training loss, accuracy and seconds at the site")
    error: str | None = Field(None, description="why the site has no local baseline (offline, late, failed)")


class SourceReport(BaseModel):
    classes: dict[str, int] = Field(description="images per class")
    sizes: dict[str, int] = Field(description="images per stored size, 'WxH'")
    bit_depths: dict[str, int] = Field(description="images per stored bit depth")
    skipped: dict[str, int] = Field(description="files skipped, per reason (hidden files are not counted)")


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
    note: str | None = Field(None, description="why a run that succeeded stopped before its last round")
    cancel_requested: bool
    startup_s: float = Field(0.0, description="the run's own start-up: data loading, model building, tracing")
    has_model: bool = False
    local_baselines: list[LocalBaselineRead] | None = Field(
        None, description="over sites with baselines [local]: each site's local-only model; null until stored"
    )
    data_report: dict[str, SourceReport] | None = Field(
        None,
        description="per data source, what the worker's loaders read when the run started: images per class, "
        "sizes, bit depths and every file skipped and why; null before it starts and over hospital sites",
    )


class ExperimentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    config: RunConfig
    created_at: datetime
    shared: bool
    owner_id: uuid.UUID | None
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


class RoundPrivacyRead(BaseModel):
    epsilon: float = Field(description="epsilon spent by the run up to and including this round (RDP accountant)")
    delta: float
    noise_multiplier: float
    clip_norm: float = Field(description="the clipping bound used this round (adaptive clipping moves it)")
    sites: dict[str, float] = Field({}, description="sample level: each site's own epsilon")


class RoundRead(BaseModel):
    number: int
    metrics: dict[str, float | None]
    clients: list[ClientRoundRead]
    wall_s: float
    train_s: float
    calibration_s: float
    aggregation_s: float
    evaluation_s: float
    startup_s: float = Field(description="slowest client's one-off start-up in this round (first task of a worker)")
    critical_path_s: float
    bytes_sent: int
    bytes_received: int
    test_samples: int
    finished_at: datetime
    privacy: RoundPrivacyRead | None = Field(None, description="with differential privacy: the budget spent so far")


class RunRounds(BaseModel):
    run: RunRead
    rounds: list[RoundRead]


class ClientRoc(BaseModel):
    id: str
    auc: float | None = Field(description="grid AUC of the global model on the client's own test set")
    fpr: list[float]
    tpr: list[float]


class RocRead(BaseModel):
    run_id: uuid.UUID
    round: int
    auc: float | None
    fpr: list[float]
    tpr: list[float]
    clients: list[ClientRoc] = Field([], description="the same model on each client's own test set")


class CompareRow(BaseModel):
    run_id: uuid.UUID
    experiment: str
    kind: RunKind
    status: RunStatus
    clients: int | None
    loss: float | None
    accuracy: float | None = Field(description="at the operating threshold")
    sensitivity: float | None = None
    specificity: float | None = None
    threshold: float | None = Field(None, description="the operating threshold of the final model")
    auc: float | None
    auc_ci_low: float | None = Field(None, description="95% DeLong interval of the AUC")
    auc_ci_high: float | None = None
    n_negative: int | None = Field(None, description="NORMAL images in the common test set")
    n_positive: int | None = Field(None, description="PNEUMONIA images in the common test set")
    rounds: int
    execution_time_s: float
    parallel_time_s: float
    startup_s: float = Field(0.0, description="one-off start-up: the run's own plus each round's slowest client's")
    centralized_run_id: uuid.UUID | None
    time_reduction: float | None = Field(None, description="(centralized - parallel) / centralized, start-up apart")
    time_reduction_with_startup: float | None = Field(
        None, description="the same with each side's start-up added to its time"
    )
    epsilon: float | None = Field(None, description="with differential privacy: the epsilon after the last round")


class Launch(BaseModel):
    federated: RunRead
    centralized: RunRead | None


class DataProblem(BaseModel):
    field: str = Field(description="the config field to change, e.g. data.train or federation.partition")
    message: str


class ClientCounts(BaseModel):
    id: str
    train: dict[str, int]
    validation: dict[str, int] = Field(description="the part that chooses the operating threshold")
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
