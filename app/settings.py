"""Service settings from FEDLENS_* environment variables (or .env): the embedded default needs none."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
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
        5.0, gt=0, le=3600, description="an event stream re-reads its run this often even without a notification"
    )
    stream_heartbeat_s: float = Field(15.0, gt=0, le=3600, description="a comment line on a stream idle this long")
    streams_per_caller: int = Field(50, ge=1, le=100_000, description="open event streams allowed per caller")

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
