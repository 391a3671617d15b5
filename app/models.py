"""SQLAlchemy tables: experiment → run → fl_round → round_metric, client_round (participation), users and audit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: Statuses a client can have in a round; the engine's ClientStatus uses the same words.
CLIENT_STATUSES = ("trained", "kept", "absent", "failed")
GLOBAL = ""  # client_id of metrics measured by the server on the common test set


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every database: SQLite stores naive text, so reads get UTC attached back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class Role(StrEnum):
    """What a user may do; each role includes the rights of the ones below it."""

    VIEWER = "viewer"  # read shared experiments and their runs
    RESEARCHER = "researcher"  # create, launch, cancel, resume, compare, download own and shared experiments
    ADMIN = "admin"  # everything, plus users, tokens, sites and settings

    @property
    def rank(self) -> int:
        return (Role.VIEWER, Role.RESEARCHER, Role.ADMIN).index(self)


class TokenKind(StrEnum):
    API = "api"  # Authorization: Bearer, for scripts
    SIGNIN = "signin"  # a one-time sign-in link (first admin, invited users)


class RunKind(StrEnum):
    FEDERATED = "federated"
    CENTRALIZED = "centralized"


def _enum(cls: type[StrEnum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        name=cls.__name__.lower(),
    )


class Base(DeclarativeBase):
    """Every constraint is named, so Alembic diffs stay stable across databases (as MLflow does)."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime}


class User(Base):
    """A person or script identity; passwords are stored as scrypt hashes only."""

    __tablename__ = "user_account"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(_enum(Role))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token or one-time sign-in link: only the SHA-256 of the secret is kept."""

    __tablename__ = "api_token"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    kind: Mapped[TokenKind] = mapped_column(_enum(TokenKind))
    name: Mapped[str] = mapped_column(String(100))
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))  # the first characters, to recognise a token in a list
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class WebSession(Base):
    """A signed-in browser: the cookie holds a random secret, the table its SHA-256 and the CSRF token."""

    __tablename__ = "web_session"

    secret_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()


class AuditEvent(Base):
    """Who did what, when and from where: every mutation and every refused credential."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(64))  # the user's name then, or "anonymous"
    action: Mapped[str] = mapped_column(String(200))  # "POST /api/experiments", "login", "token refused"
    outcome: Mapped[str] = mapped_column(String(200))  # "ok" or why it was refused
    client_ip: Mapped[str | None] = mapped_column(String(64))


class Experiment(Base):
    __tablename__ = "experiment"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # RunConfig.model_dump(mode="json")
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    #: who created it (None: created before accounts existed, admins only); shared: every signed-in user may read it
    owner_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"), index=True)
    shared: Mapped[bool] = mapped_column(default=False, server_default=false())

    runs: Mapped[list[Run]] = relationship(
        back_populates="experiment", order_by="Run.created_at", cascade="all, delete-orphan", passive_deletes=True
    )


class Run(Base):
    __tablename__ = "run"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    experiment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("experiment.id", ondelete="CASCADE"), index=True)
    kind: Mapped[RunKind] = mapped_column(_enum(RunKind))
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus), default=RunStatus.QUEUED, index=True)
    seed: Mapped[int]
    total_rounds: Mapped[int]  # rounds (federated) or epochs (centralized)
    current_round: Mapped[int] = mapped_column(default=0)  # last completed round
    #: last round the orchestrator began; set with the experiment's row locked, as a joining site reads it
    started_round: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    model_path: Mapped[str | None] = mapped_column(String(500))
    #: SHA-256 of the final model file as written; a download checks it
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    #: one-off start-up of the process that ran it (data loading, model building, tracing), summed over resumes
    startup_s: Mapped[float] = mapped_column(default=0.0, server_default="0")
    #: why a run that succeeded ended before its last round (its privacy budget would have been exceeded)
    note: Mapped[str | None] = mapped_column(Text)
    #: the user whose launch (or resume) made it active: their concurrent-run quota counts it; None before users
    launched_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL"), index=True
    )
    #: over hospital sites with ``baselines: [local]``: each site's local-only model on its own test split, one
    #: dict per site (app.schemas.LocalBaselineRead); None until the first site's result is stored
    local_baselines: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    #: what the worker's data loaders saw when the run last started, per config source (app.schemas.SourceReport):
    #: images per class, sizes, bit depths and the files skipped and why; None over sites (each agent keeps its own)
    data_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    experiment: Mapped[Experiment] = relationship(back_populates="runs")


class FlRound(Base):
    """One completed round (or centralized epoch); its primary key makes a redelivered write a no-op."""

    __tablename__ = "fl_round"

    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(primary_key=True)
    wall_s: Mapped[float]
    train_s: Mapped[float]
    calibration_s: Mapped[float]
    aggregation_s: Mapped[float]
    evaluation_s: Mapped[float]
    startup_s: Mapped[float] = mapped_column(default=0.0, server_default="0")  # slowest client's start-up
    bytes_sent: Mapped[int] = mapped_column(BigInteger)
    bytes_received: Mapped[int] = mapped_column(BigInteger)
    test_samples: Mapped[int]
    roc: Mapped[dict[str, list[float]]] = mapped_column(JSON)  # {"fpr": [...], "tpr": [...]}, <= 200 points
    checkpoint: Mapped[str] = mapped_column(String(500))
    #: worker.engine.digest.weights_sha256 of the global weights in the checkpoint; the next round starts from them
    weights_sha256: Mapped[str | None] = mapped_column(String(64))
    #: SHA-256 of the checkpoint file as written (weights, strategy and optimizer state); a resume checks it
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    #: the global weights alone (worker.engine.checkpoint.save_round_weights), kept after the checkpoint is dropped;
    #: None for rounds stored before they were kept
    weights_path: Mapped[str | None] = mapped_column(String(500))
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (CheckConstraint("number >= 1", name="number_positive"),)


class ClientArtifact(Base):
    """A client task's output file (a weights update or BatchNorm statistics), recorded by the worker that wrote
    it; the orchestrator reads the file only if the task's reply and the file's bytes agree with this row."""

    __tablename__ = "client_artifact"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # one file per task (a resend is a new task)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    round: Mapped[int]
    client_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "update" or "stats"
    path: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    num_examples: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoundMetric(Base):
    """One value per (run, round, client, key): global test metrics have client_id "" (MLflow's long table)."""

    __tablename__ = "round_metric"

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    round: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # "test.auc", "train.loss", ...
    value: Mapped[float]
    is_nan: Mapped[bool] = mapped_column(default=False)  # NaN is stored as 0 + flag (SQLite turns NaN into NULL)

    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "round"],
            ["fl_round.run_id", "fl_round.number"],
            ondelete="CASCADE",
            name="fk_round_metric_round",
        ),
    )


class ClientRound(Base):
    """A client's participation in one round: status, join/leave event and sample count."""

    __tablename__ = "client_round"

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    round: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    event: Mapped[str | None] = mapped_column(String(16))
    samples: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    #: {"fpr": [...], "tpr": [...]}: the round's global model on this client's own test set (grid counts)
    roc: Mapped[dict[str, list[float]] | None] = mapped_column(JSON)

    __table_args__ = (
        ForeignKeyConstraint(
            ["run_id", "round"],
            ["fl_round.run_id", "fl_round.number"],
            ondelete="CASCADE",
            name="fk_client_round_round",
        ),
        CheckConstraint(f"status IN ({', '.join(repr(s) for s in CLIENT_STATUSES)})", name="status_known"),
        CheckConstraint("event IS NULL OR event IN ('joined', 'left')", name="event_known"),
    )


class Site(Base):
    """A hospital's agent: its Ed25519 public key once enrolled, and what its last heartbeat said."""

    __tablename__ = "site"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str | None] = mapped_column(String(60))  # raw Ed25519 key, base64; None until enrolled
    #: SHA-256 of the one-time enrollment token (None once used); a key rotation issues a new one
    enrollment_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    enrollment_expires_at: Mapped[datetime | None]
    enrolled_at: Mapped[datetime | None]
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]
    agent_version: Mapped[str | None] = mapped_column(String(40))
    hardware: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    datasets: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)  # protocol.DatasetSummary dumps
    busy_with: Mapped[uuid.UUID | None]


#: what a site task asks: train, BatchNorm statistics, evaluate, the three extra steps of secure aggregation, and
#: local (the site's local-only baseline model, trained on its own data alone after the federated rounds)
SITE_TASK_KINDS = ("train", "statistics", "evaluate", "advertise", "share", "unmask", "local")


class SiteTask(Base):
    """One piece of work for one site in one round; the site pulls it and posts its result."""

    __tablename__ = "site_task"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    round: Mapped[int]
    client_id: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("site.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # one of SITE_TASK_KINDS
    dataset: Mapped[str] = mapped_column(String(64))
    weights_sha256: Mapped[str] = mapped_column(String(64))  # the global weights file the site starts from
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)  # protocol.TaskSettings
    status: Mapped[str] = mapped_column(String(16), default="queued")
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # protocol.TaskResult
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline: Mapped[datetime]
    taken_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("ix_site_task_site_status", "site_id", "status"),
        CheckConstraint("status IN ('queued', 'taken', 'done', 'failed', 'late', 'expired')", name="status_known"),
        CheckConstraint(f"kind IN ({', '.join(repr(k) for k in SITE_TASK_KINDS)})", name="kind_known"),
    )


class PrivacySpend(Base):
    """The epsilon one run has spent of one site's dataset: a hospital's ledger is the sum over runs.

    Rows outlive their run (no foreign key): deleting a run does not give its budget back. Each round overwrites
    the run's row with the run's epsilon so far, so a round redone after a crash is never counted twice.
    """

    __tablename__ = "privacy_spend"

    run_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset: Mapped[str] = mapped_column(String(64), primary_key=True)
    experiment: Mapped[str] = mapped_column(String(200))  # its name when the run spent it
    level: Mapped[str] = mapped_column(String(16))  # sample | client
    epsilon: Mapped[float]
    delta: Mapped[float]
    rounds: Mapped[int]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_privacy_spend_site_dataset", "site", "dataset"),
        CheckConstraint("level IN ('sample', 'client')", name="level_known"),
    )
