"""The ``fedlens`` command line."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from app.embedded import EmbeddedRedis, die_with_parent
from app.health.supervisor import Child, Supervisor
from app.run_config import RunConfig, describe_errors, paths_outside_roots
from app.settings import Settings, get_settings
from worker.site import cli as site_commands

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the progress bar


class UserError(click.ClickException):
    """Something the user can fix in the config or the data: one message, no traceback, exit code 2."""

    exit_code = 2


def load_config(path: Path) -> RunConfig:
    """Read a YAML or JSON config; exit with one line per wrong field instead of a traceback."""
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"cannot read config {path}: {error}") from error
    try:
        return RunConfig.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        lines = "\n".join(f"  {line}" for line in describe_errors(error))
        raise UserError(f"invalid config {path}:\n{lines}") from error


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """fedlens: federated learning on medical images."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for rounds, checkpoints, results.json and federated.keras.",
)
@click.option("--fresh", is_flag=True, help="Start over instead of resuming what the folder holds.")
def run(config: Path, output: Path, fresh: bool) -> None:
    """Run the federated experiment in CONFIG and its centralized baseline in this process.

    It reads the data as you, on your machine: FEDLENS_DATA_ROOTS, which bounds the service's workers, does not
    apply here.
    """
    cfg = load_config(config)
    from tqdm import tqdm

    from worker.engine.data import DataError
    from worker.engine.types import RoundResult
    from worker.local_run import RunFolderError, run_local
    from worker.report import table3

    bars: dict[str, tqdm[Any]] = {}
    totals = {"federated": cfg.federation.rounds, "centralized": cfg.centralized_epochs}

    def progress(phase: str, result: RoundResult) -> None:
        if phase not in bars:
            for bar in bars.values():
                bar.close()
            unit = "round" if phase == "federated" else "epoch"
            bars[phase] = tqdm(total=totals[phase], initial=result.round - 1, desc=phase, unit=unit, file=sys.stderr)
        m = result.metrics
        # refresh=False: drawn once by update(), so round N's count and round N's metrics appear together
        bars[phase].set_postfix(loss=f"{m.loss:.3f}", acc=f"{m.accuracy:.3f}", auc=f"{m.auc:.3f}", refresh=False)
        bars[phase].update(1)

    try:
        results = run_local(cfg, output, progress=progress, notice=lambda line: click.echo(line, err=True), fresh=fresh)
    except DataError as error:
        raise UserError(f"{error.field}: {error}" if error.field else str(error)) from error
    except RunFolderError as error:
        raise UserError(str(error)) from error
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(table3(results))
    click.echo(f"results: {output / 'results.json'}  model: {output / 'federated.keras'}")


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--skip-data", is_flag=True, help="Check the config only; do not read the data.")
@click.option(
    "--data-root",
    "data_roots",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Refuse data outside this folder, as a service with these FEDLENS_DATA_ROOTS would (repeatable).",
)
def validate(config: Path, skip_data: bool, data_roots: tuple[Path, ...]) -> None:
    """Check CONFIG, print it with every default filled in (JSON, stdout), then check its data (stderr).

    The data check loads and splits the data as a run would and reports the images per split, class and client,
    the sizes and bit depths seen and the files skipped; a data problem exits with code 2.
    """
    cfg = load_config(config)
    roots = tuple(Path(os.path.realpath(root)) for root in data_roots) or None
    outside = paths_outside_roots(cfg, roots) if roots else {}
    if outside:
        raise UserError("\n".join(f"{'.'.join(loc)}: {message}" for loc, message in outside.items()))
    click.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    if skip_data:
        return
    from worker.datacheck import check_data, describe

    check = check_data(cfg, roots)
    if not check["ok"]:
        raise UserError("\n".join(describe(check)))
    for line in describe(check):
        click.echo(line, err=True)


def _service_env(settings: Settings) -> dict[str, str]:
    """Pin every path, so that workers started from anywhere share the API's database, broker and artifacts."""
    return os.environ | {
        "FEDLENS_DATA_DIR": str(settings.data_dir.resolve()),
        "FEDLENS_DATABASE_URL": settings.database,
        "FEDLENS_BROKER_URL": settings.broker,
        "FEDLENS_ARTIFACTS_DIR": str(settings.artifacts),
        "FEDLENS_DATA_ROOTS": json.dumps([str(root) for root in settings.roots]),
    }


def worker_command(queues: str, concurrency: int, name: str) -> list[str]:
    pool = ["--pool=solo"] if concurrency == 1 else ["--pool=prefork", f"--concurrency={concurrency}"]
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        "worker",
        "-Q",
        queues,
        *pool,
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--loglevel=INFO",
    ]


@main.command()
@click.option(
    "-Q",
    "--queues",
    type=click.Choice(["runs", "train", "check"]),
    default="train",
    show_default=True,
    help="runs: orchestrate federated runs; train: client training and centralized runs; check: data checks.",
)
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Processes (each holds one model). Default: FEDLENS_ORCHESTRATORS for the runs queue, else 1.",
)
def worker(queues: str, concurrency: int | None) -> None:
    """Run a Celery worker; a GPU host joins with ``fedlens worker -Q train``.

    One queue per worker: an orchestrator waiting on its clients must never hold the process they need. Each
    orchestrator process carries one run, so the runs queue gets several: a short run never waits for a long one.
    """
    settings = get_settings()
    processes = concurrency or (settings.orchestrators if queues == "runs" else 1)
    os.execvpe(sys.executable, worker_command(queues, processes, queues), _service_env(settings))


def tls_options(command: Callable[..., None]) -> Callable[..., None]:
    """--tls, --tls-cert and --tls-key, shared by the commands that serve the API."""
    for option in reversed(
        [
            click.option("--tls", is_flag=True, default=None, help="HTTPS with a certificate from fedlens' own CA."),
            click.option(
                "--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="HTTPS with this PEM chain."
            ),
            click.option(
                "--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Private key of --tls-cert."
            ),
        ]
    ):
        command = option(command)
    return command


def with_tls(settings: Settings, tls: bool | None, tls_cert: Path | None, tls_key: Path | None) -> Settings:
    """Command-line TLS options override FEDLENS_TLS*, so that the app (Secure cookies) sees what is served."""
    given = {"tls": tls, "tls_cert": tls_cert, "tls_key": tls_key}
    return settings.model_copy(update={k: v for k, v in given.items() if v is not None})


GRACEFUL_SHUTDOWN_S = 3


def _settings_env(settings: Settings, fields: tuple[str, ...]) -> dict[str, str]:
    """Settings given on the command line, as the FEDLENS_* variables that other processes read them from."""
    values = {name: getattr(settings, name) for name in fields}
    return {
        f"FEDLENS_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in values.items()
        if value is not None
    }


def serve(settings: Settings, host: str, port: int) -> None:
    """Run uvicorn on the app, over HTTPS when the settings ask for it, and say where (and which certificate)."""
    import uvicorn

    from app.main import MANAGER_PID, create_app
    from app.nodelay import NoDelayH11Protocol
    from app.tls.certs import CertificateError, default_hosts, server_cert

    try:
        cert = server_cert(
            tls=settings.tls,
            cert=settings.tls_cert,
            key=settings.tls_key,
            folder=settings.tls_dir,
            hosts=default_hosts(host, settings.tls_hosts),
        )
    except CertificateError as error:
        raise UserError(str(error)) from error
    scheme = "https" if cert else "http"
    _announce_first_admin(settings, f"{scheme}://{host}:{port}")
    click.echo(f"fedlens on {scheme}://{host}:{port}  (data: {settings.data_dir})")
    if cert is not None:
        click.echo(f"TLS certificate SHA-256 fingerprint: {cert.fingerprint}")
        if cert.ca is not None:
            click.echo(f"TLS certificate authority (give it to clients that verify): {cert.ca}")
    if settings.api_workers > 1:  # each worker process builds the app itself, from the environment
        os.environ.update(_settings_env(settings, ("tls", "tls_cert", "tls_key")))
        os.environ[MANAGER_PID] = str(os.getpid())
    uvicorn.run(
        create_app(settings) if settings.api_workers == 1 else "app.main:api_process_app",
        factory=settings.api_workers > 1,
        workers=settings.api_workers,
        http=NoDelayH11Protocol,
        host=host,
        port=port,
        log_config=None,
        ssl_certfile=cert.cert if cert else None,
        ssl_keyfile=cert.key if cert else None,
        # agents' long polls do not end on shutdown by themselves: on SIGTERM open requests get a few seconds, then
        # are closed (browsers and agents reconnect), so a stop or restart does not hang
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )


@main.command()
@click.option("--host", default=None, help="Default: FEDLENS_HOST or 127.0.0.1.")
@click.option("--port", default=None, type=int, help="Default: FEDLENS_PORT or 8000.")
@tls_options
def api(host: str | None, port: int | None, tls: bool | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Serve the REST API and the dashboard (no training happens in this process)."""
    settings = with_tls(get_settings(), tls, tls_cert, tls_key)
    serve(settings, host or settings.host, port or settings.port)


@main.command()
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--host", "hosts", multiple=True, required=True, help="DNS name or IP to certify (repeat the option).")
def certs(folder: Path, hosts: tuple[str, ...]) -> None:
    """Keep fedlens' CA and a server certificate for HOSTs in DIR (made on first use, reissued when a host is
    missing): ca.pem, server.pem (chain), server.key. docker-compose.yml uses it for Redis and the API."""
    from app.tls.certs import ensure_server

    cert = ensure_server(folder, list(hosts))
    click.echo(f"TLS certificate SHA-256 fingerprint: {cert.fingerprint}")


def _announce_first_admin(settings: Settings, base_url: str) -> None:
    """On an empty database: create ``admin`` and print its one-time sign-in link, as notebook servers do."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.auth.accounts import bootstrap_admin
    from app.db import session_factory

    try:
        with session_factory(settings)() as session:
            issued = bootstrap_admin(session=session)
    except SQLAlchemyError:  # no tables yet: the API answers with errors until `fedlens db upgrade`
        click.echo("the database has no fedlens tables: run `fedlens db upgrade` (fedlens up does it for you)")
        return
    if issued is not None:
        click.echo(f"first start: sign in as admin (once, within 24 h) at {base_url}/login/link?token={issued.secret}")


@main.group()
def token() -> None:
    """API tokens for scripts."""


@token.command("create")
@click.option("--user", "name", required=True, help="User name; the user is created if missing.")
@click.option("--role", type=click.Choice(["viewer", "researcher", "admin"]), required=True, help="The user's role.")
@click.option("--days", default=None, type=click.IntRange(1, 3650), help="Lifetime; default FEDLENS_TOKEN_DAYS.")
@click.option("--name", "label", default="created with fedlens token create", show_default=True, help="What it is for.")
def token_create(name: str, role: str, days: int | None, label: str) -> None:
    """Print a new API token (and nothing else) for USER, on the configured database."""
    from datetime import timedelta

    from app.auth.accounts import ensure_user, issue_token
    from app.auth.audit import record
    from app.auth.schemas import NAME_PATTERN
    from app.db import session_factory
    from app.migrate import upgrade as migrate
    from app.models import Role

    if re.fullmatch(NAME_PATTERN, name) is None:
        raise UserError(f"--user {name!r}: use letters, digits, '.', '_' and '-' (at most 64)")
    settings = get_settings()
    migrate(settings.database)
    with session_factory(settings)() as session:
        user = ensure_user(session=session, name=name, role=Role(role))
        issued = issue_token(
            session=session, user=user, name=label, lifetime=timedelta(days=days or settings.token_days)
        )
        record(session=session, user=user, action="fedlens token create", outcome="ok", client_ip="command line")
    click.echo(issued.secret)


@main.group()
def site() -> None:
    """A hospital's site agent: it only dials out, and its images never leave the hospital."""
    from app.logs import configure_logging

    configure_logging()


site.add_command(site_commands.enroll)
site.add_command(site_commands.run)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command()
def upgrade() -> None:
    """Apply the Alembic migrations to FEDLENS_DATABASE_URL (default: SQLite in the data directory)."""
    from app.migrate import upgrade as migrate

    settings = get_settings()
    migrate(settings.database)
    click.echo(f"database schema is up to date: {settings.database}")


@main.command()
@click.option("--host", default=None, help="Default: FEDLENS_HOST or 127.0.0.1.")
@click.option("--port", default=None, type=int, help="Default: FEDLENS_PORT or 8000.")
@click.option("--train-workers", default=1, show_default=True, help="Client-training processes to start.")
@tls_options
def up(
    host: str | None,
    port: int | None,
    train_workers: int,
    tls: bool | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """API + dashboard + workers on the embedded default (SQLite, private Redis), or on FEDLENS_* services.

    Every part runs as a child process that is started again, with back-off, whenever it dies.
    """
    from app.logs import configure_logging
    from app.migrate import upgrade as migrate

    configure_logging()
    settings = with_tls(get_settings(), tls, tls_cert, tls_key)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    children = []
    if settings.broker_url is None:
        children.append(Child("redis", _embedded_redis(EmbeddedRedis(settings.redis_socket, settings.data_dir))))
    env = _service_env(settings) | {"FEDLENS_REQUIRED_WORKERS": '["runs", "train", "check"]'}
    for queue, concurrency in (("runs", settings.orchestrators), ("train", train_workers), ("check", 1)):
        children.append(Child(f"{queue} worker", _spawn(worker_command(queue, concurrency, queue), env)))
    address = ["--host", host or settings.host, "--port", str(port or settings.port)]
    served = [*address, *(["--tls"] if tls else []), *_cert_options(tls_cert, tls_key)]
    children.append(Child("api", _spawn([sys.executable, "-m", "worker.cli", "api", *served], env)))
    supervisor = Supervisor(children)
    # SIGTERM exits through SystemExit, so that the children are stopped below instead of being orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        migrate(settings.database)
        supervisor.start()  # the API child prints the address, the certificate and, on a first start, a sign-in link
        click.echo(f"training data is read only under: {', '.join(str(root) for root in settings.roots)}")
        supervisor.watch()
    finally:
        supervisor.stop()


def _cert_options(cert: Path | None, key: Path | None) -> list[str]:
    return [*(["--tls-cert", str(cert)] if cert else []), *(["--tls-key", str(key)] if key else [])]


def _spawn(command: list[str], env: dict[str, str]) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: subprocess.Popen(command, env=env, preexec_fn=die_with_parent)


def _embedded_redis(redis: EmbeddedRedis) -> Callable[[], subprocess.Popen[bytes]]:
    def start() -> subprocess.Popen[bytes]:
        redis.start()
        assert redis.process is not None  # start() raises unless it is up
        return redis.process

    return start


if __name__ == "__main__":
    main()
