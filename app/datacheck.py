"""The API side of the data check: ask a worker, wait a few seconds, map what can go wrong to a clear error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from celery import Celery
from kombu.exceptions import OperationalError

from app import broker
from app.data_roots import require_within
from app.errors import Unavailable
from app.run_config import RunConfig
from app.schemas import DataCheck


def check(*, celery: Celery, config: RunConfig, roots: Sequence[Path]) -> DataCheck:
    """Raises FieldErrors for data outside ``roots`` (no worker is asked), Unavailable when the broker is down or
    no worker serves the check queue."""
    require_within(config, roots)
    try:
        report = broker.check_data(celery, config.model_dump(mode="json"))
    except broker.CheckUnanswered as error:
        raise Unavailable(f"{error}; start one with `fedlens worker -Q check` (fedlens up starts one)") from error
    except OperationalError as error:
        raise Unavailable("the broker is unreachable; the data check needs a worker behind it") from error
    return DataCheck.model_validate(report)
