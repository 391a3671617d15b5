"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends

from app.broker import client_for
from app.db import SettingsDep


async def get_celery(settings: SettingsDep) -> Celery:
    """Async: the client is cached (no I/O), so no trip through the thread pool."""
    return client_for(settings.broker, settings.redis_ca_file)


CeleryDep = Annotated[Celery, Depends(get_celery)]
