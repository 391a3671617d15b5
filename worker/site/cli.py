"""``fedlens site enroll`` and ``fedlens site run``: the two commands a hospital runs."""

from __future__ import annotations

import logging
from pathlib import Path

import click

logger = logging.getLogger(__name__)

_DIR = click.option(
    "--dir",
    "folder",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The site's folder: its private key, the pinned server certificate, site.json, splits.json, privacy.json, "
    "a cache.",
)
_INSECURE = click.option(
    "--insecure-http",
    is_flag=True,
    help="Allow an http:// server. For tests only: no TLS, no certificate pinning; never for a real site.",
)


class SiteSetupError(click.ClickException):
    """Something the hospital's operator must fix: one message, no traceback, exit code 2."""

    exit_code = 2


@click.command()
@click.option("--server", required=True, help="The server's origin, https://host:port.")
@click.option(
    "--token",
    required=True,
    envvar="FEDLENS_SITE_TOKEN",
    help="The one-time enrollment token (FEDLENS_SITE_TOKEN keeps it out of the process list).",
)
@click.option("--fingerprint", help="SHA-256 of the server's TLS certificate, shown with the token; colons optional.")
@_DIR
@_INSECURE
def enroll(server: str, token: str, fingerprint: str | None, folder: Path, insecure_http: bool) -> None:
    """Enroll this site once: pin the server's certificate, create the site's key (it never leaves FOLDER) and
    register its public half with the one-time token."""
    from worker.site.enrollment import enroll as enroll_site
    from worker.site.identity import SiteError

    try:
        identity = enroll_site(
            server=server, token=token, fingerprint=fingerprint, folder=folder, insecure_http=insecure_http
        )
    except SiteError as error:
        raise SiteSetupError(str(error)) from error
    click.echo(f"enrolled as site {identity.name} ({identity.site_id}); now run: fedlens site run --dir {folder}")


@click.command()
@_DIR
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    metavar="NAME=FORMAT:PATH",
    help="A local dataset, repeatable: image-folder (a folder holding NORMAL/ and PNEUMONIA/), csv or npz.",
)
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="site.yaml: datasets [{name, source, max_epsilon, delta}], data_roots, split {validation, test, seed}.",
)
@click.option(
    "--heartbeat-s",
    type=click.FloatRange(min=0.1, max=3600),
    default=10.0,
    show_default=True,
    envvar="FEDLENS_SITE_HEARTBEAT_S",
    help="Seconds between heartbeats; the server counts the site offline after FEDLENS_SITE_OFFLINE_AFTER_S "
    "(45 s by default) without one.",
)
@_INSECURE
def run(folder: Path, datasets: tuple[str, ...], config: Path | None, heartbeat_s: float, insecure_http: bool) -> None:
    """Serve the server: heartbeats, tasks, results; SIGTERM stops it after the current task.

    Only weights files, metrics and counts leave the site: never an image, a file name or a prediction.
    """
    from worker.engine.data import DataError
    from worker.site.agent import Agent
    from worker.site.datasets import SiteData, site_config
    from worker.site.identity import SiteError, load_identity
    from worker.site.runner import TaskRunner

    try:
        identity = load_identity(folder, insecure_http=insecure_http)
        data = SiteData(site_config(config, datasets), folder)
        summaries = data.prepare()
        agent = Agent(identity, data, TaskRunner(data), heartbeat_s=heartbeat_s)
    except (SiteError, DataError) as error:
        raise SiteSetupError(str(error)) from error
    for summary in summaries:
        logger.info("dataset %s: %s (split seed %d)", summary.name, summary.counts, summary.split_seed)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request, heartbeats included
    agent.handle_signals()
    agent.run()
