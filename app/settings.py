"""Service settings from FEDLENS_* environment variables (or .env): the embedded default needs none."""

from __future__ import annotations

import json
import os
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FEDLENS_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("fedlens-data"), description="home of the embedded database, broker and artifacts")
    database_url: str | None = Field(None, description="default: SQLite file in data_dir")
    broker_url: str | None = Field(
        None, description="default: the Redis that `fedlens up` runs on a socket in data_dir"
    )
    artifacts_dir: Path | None = Field(None, description="checkpoints, client updates, final models; default data_dir")
    heartbeat_s: float = Field(5.0, gt=0, description="how often a running task proves it is alive")
    stale_after_s: float = Field(60.0, gt=0, description="a running run silent this long is requeued")
    redelivery_after_s: int = Field(600, ge=10, description="a task whose worker died is delivered again after this")
    client_timeout_s: float = Field(3600.0, gt=0, description="longest wait for one round's client tasks")
    site_offline_after_s: float = Field(
        45.0,
        gt=0,
        description="a site silent this long is offline: it gets no new task, and a round gives up the task it holds "
        "while other sites' heartbeats still arrive; a few times the agents' heartbeat interval (10 s)",
    )
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="an idle browser session ends after this")
    token_days: int = Field(90, ge=1, le=3650, description="default lifetime of a new API token")
    data_roots: Annotated[tuple[Path, ...] | None, NoDecode] = Field(
        None,
        description="the only folders workers read training data from: absolute paths, as a JSON list or separated "
        "by os.pathsep; default: data_dir/datasets and ./data (resolved at start)",
    )
    max_body_bytes: int = Field(2**20, ge=1024, description="largest request body accepted (413 above it)")
    max_upload_bytes: int = Field(
        512 * 2**20, ge=1024, description="largest weights file a site may upload (the study's CNN is 2.2 MB)"
    )
    max_chunk_bytes: int = Field(
        16 * 2**20, ge=1024, description="largest chunk of a site's upload, one request's body (413 above it)"
    )
    max_worker_memory_gib: float = Field(
        8.0, gt=0, description="a config whose data a worker would need more memory for is refused at create"
    )
    max_training_pixels: float = Field(
        1e13,
        gt=0,
        description="largest images x pixels x passes (rounds x local epochs + baseline epochs) a config "
        "may ask for; refused at create above it",
    )
    max_active_runs_per_user: int = Field(4, ge=1, description="queued or running runs one user may have at once")
    orchestrators: int = Field(
        4, ge=1, description="federated runs that proceed at once (processes of the runs queue that fedlens up starts)"
    )
    required_workers: list[Literal["runs", "train", "check"]] = Field(
        ["runs", "train"], description="queues that need a live worker for /healthz to answer 200"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes behind the port (uvicorn workers), one per core for a server many people watch; "
        "each has its own broker subscription and caches (the per-user stream cap is shared through Redis)",
    )
    tls: bool = Field(False, description="serve HTTPS with a certificate from fedlens' own CA in data_dir/tls")
    tls_cert: Path | None = Field(None, description="serve HTTPS with this certificate (PEM chain) instead")
    tls_key: Path | None = Field(None, description="private key (PEM) of tls_cert")
    tls_hosts: list[str] = Field(
        default_factory=list, description="extra DNS names or IPs for the generated certificate (JSON list)"
    )
    redis_ca_file: Path | None = Field(
        None, description="CA (PEM) that a rediss:// broker's certificate must chain to; default: the system's"
    )
    stream_recheck_s: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="event streams and sites' long polls look at the database this often without a notification",
    )
    stream_heartbeat_s: float = Field(15.0, gt=0, le=3600, description="a comment line on a stream idle this long")
    streams_per_caller: int = Field(50, ge=1, le=100_000, description="open event streams allowed per caller")

    @field_validator("data_roots", mode="before")
    @classmethod
    def _roots_from_text(cls, value: Any) -> Any:
        """FEDLENS_DATA_ROOTS as a JSON list or as a PATH-style list; empty means the default."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return None
        if not value.lstrip().startswith("["):
            return value.split(os.pathsep)
        try:
            return json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"a JSON list of folders was expected ({error.msg} at character {error.pos})") from error

    @field_validator("data_roots")
    @classmethod
    def _absolute(cls, roots: tuple[Path, ...] | None) -> tuple[Path, ...] | None:
        relative = [str(root) for root in roots or () if not root.is_absolute()]
        if relative:
            raise ValueError(f"data roots must be absolute folders, got {relative}")
        return roots

    @cached_property
    def roots(self) -> tuple[Path, ...]:
        """The data roots with their links resolved, fixed at first use: the default's ./data is this directory."""
        roots = self.data_roots if self.data_roots is not None else (self.data_dir / "datasets", Path("data"))
        return tuple(Path(os.path.realpath(root)) for root in roots)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'fedlens.db').resolve()}"

    @property
    def redis_socket(self) -> Path:
        return (self.data_dir / "redis.sock").resolve()

    @property
    def broker(self) -> str:
        return self.broker_url or f"redis+socket://{self.redis_socket}"

    @property
    def tls_enabled(self) -> bool:
        """The API is served over HTTPS: session cookies must be Secure."""
        return self.tls or self.tls_cert is not None

    @property
    def tls_dir(self) -> Path:
        return (self.data_dir / "tls").resolve()

    @property
    def artifacts(self) -> Path:
        return (self.artifacts_dir or self.data_dir / "artifacts").resolve()


@lru_cache
def get_settings() -> Settings:
    return Settings()
