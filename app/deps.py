"""FastAPI dependencies shared by the routes."""

from __future__ import annotations

from typing import Annotated

from celery import Celery
from fastapi import Depends

from app.broker import client_for
from app.settings import Settings, get_settings


def get_celery(settings: Annotated[Settings, Depends(get_settings)]) -> Celery:
    return client_for(settings.broker, settings.redis_ca_file)


CeleryDep = Annotated[Celery, Depends(get_celery)]
