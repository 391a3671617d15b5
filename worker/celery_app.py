"""The Celery app of the workers: ``celery -A worker.celery_app worker -Q train`` joins a GPU host."""

from __future__ import annotations

from typing import Any

from celery import Celery

from app.broker import configure
from app.logs import configure_logging
from app.settings import get_settings

celery_app = Celery("fedlens", include=["worker.tasks"])


@celery_app.on_configure.connect
def _configure(sender: Celery, **_: Any) -> None:
    """Settings are read when the app is first used, not at import."""
    configure(sender, get_settings())


@celery_app.on_after_finalize.connect
def _logging(sender: Celery, **_: Any) -> None:
    configure_logging()
