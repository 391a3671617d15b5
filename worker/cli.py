"""The ``fedlens`` command line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from app.run_config import RunConfig, describe_errors
from app.settings import Settings, get_settings

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
    """Run the federated experiment in CONFIG and its centralized baseline in this process."""
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
def validate(config: Path, skip_data: bool) -> None:
    """Check CONFIG, print it with every default filled in (JSON, stdout), then check its data (stderr).

    The data check loads and splits the data as a run would and reports the images per split, class and client,
    the sizes and bit depths seen and the files skipped; a data problem exits with code 2.
    """
    cfg = load_config(config)
    click.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))
    if skip_data:
        return
    from worker.datacheck import check_data, describe

    check = check_data(cfg)
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
@click.option("-c", "--concurrency", default=1, show_default=True, help="Processes (each holds one model).")
def worker(queues: str, concurrency: int) -> None:
    """Run a Celery worker; a GPU host joins with ``fedlens worker -Q train``.

    One queue per worker: an orchestrator waiting on its clients must never hold the process they need.
    """
    os.execvpe(sys.executable, worker_command(queues, concurrency, queues), _service_env(get_settings()))


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


def serve(settings: Settings, host: str, port: int) -> None:
    """Run uvicorn on the app, over HTTPS when the settings ask for it, and say where (and which certificate)."""
    import uvicorn

    from app.main import create_app
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
    click.echo(f"fedlens on {scheme}://{host}:{port}  (data: {settings.data_dir})")
    if cert is not None:
        click.echo(f"TLS certificate SHA-256 fingerprint: {cert.fingerprint}")
        if cert.ca is not None:
            click.echo(f"TLS certificate authority (give it to clients that verify): {cert.ca}")
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_config=None,
        ssl_certfile=cert.cert if cert else None,
        ssl_keyfile=cert.key if cert else None,
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
    """API + dashboard + workers on the embedded default (SQLite, private Redis), or on FEDLENS_* services."""
    from app.embedded import EmbeddedRedis, die_with_parent
    from app.logs import configure_logging
    from app.migrate import upgrade as migrate

    configure_logging()
    settings = with_tls(get_settings(), tls, tls_cert, tls_key)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # uvicorn re-raises SIGTERM after its graceful shutdown; exiting through SystemExit lets the workers and
    # the embedded Redis be stopped below instead of being orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.ExitStack() as stack:
        if settings.broker_url is None:
            stack.enter_context(EmbeddedRedis(settings.redis_socket, settings.data_dir))
        migrate(settings.database)
        env = _service_env(settings)
        for queue, concurrency in (("runs", 1), ("train", train_workers), ("check", 1)):
            process = subprocess.Popen(worker_command(queue, concurrency, queue), env=env, preexec_fn=die_with_parent)
            stack.callback(_stop, process)
        serve(settings, host or settings.host, port or settings.port)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


if __name__ == "__main__":
    main()
