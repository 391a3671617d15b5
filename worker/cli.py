"""The ``fedlens`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from app.run_config import RunConfig, describe_errors

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the progress bar


def load_config(path: Path) -> RunConfig:
    """Read a YAML or JSON config; exit with one line per wrong field instead of a traceback."""
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise click.ClickException(f"cannot read config {path}: {error}") from error
    try:
        return RunConfig.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        lines = "\n".join(f"  {line}" for line in describe_errors(error))
        raise click.ClickException(f"invalid config {path}:\n{lines}") from error


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
        bars[phase].set_postfix(loss=f"{m.loss:.3f}", acc=f"{m.accuracy:.3f}", auc=f"{m.auc:.3f}")
        bars[phase].update(1)

    try:
        results = run_local(cfg, output, progress=progress, fresh=fresh)
    except (DataError, RunFolderError) as error:
        raise click.ClickException(str(error)) from error
    finally:
        for bar in bars.values():
            bar.close()
    click.echo(table3(results))
    click.echo(f"results: {output / 'results.json'}  model: {output / 'federated.keras'}")


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(config: Path) -> None:
    """Check CONFIG and print it with every default filled in, as JSON."""
    click.echo(json.dumps(load_config(config).model_dump(mode="json"), indent=2))
