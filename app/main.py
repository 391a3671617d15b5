"""The FastAPI application: REST API, dashboard pages, health check and the stale-run watchdog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy import text

from app.broker import client_for
from app.db import SettingsDep, session_factory
from app.errors import install_handlers
from app.logs import configure_logging
from app.routes import api_experiments, api_gradcam, api_runs, pages
from app.run_config import allowed_fields
from app.runs import start_watchdog
from app.settings import Settings, get_settings
from app.streams.limits import StreamSlots


def _field_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    """FastAPI's error list plus a dotted ``field`` path that forms can show next to the input."""
    details = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"] if p != "body"]
        message = item["msg"]
        if item["type"] == "extra_forbidden" and loc[:1] == ["config"]:
            message += f"; allowed fields: {', '.join(allowed_fields(tuple(item['loc'][2:])))}"
        details.append({"field": ".".join(loc), "message": message, **jsonable_encoder(item)})
    return details


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop_watchdog = start_watchdog(settings)  # requeues runs whose worker died
        yield
        stop_watchdog.set()

    configure_logging()
    app = FastAPIOffline(  # /docs and /redoc with their assets from the package, never from a CDN
        title="fedlens",
        description="Federated learning on medical images",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )
    app.dependency_overrides[get_settings] = lambda: settings
    app.state.stream_slots = StreamSlots(settings.streams_per_caller)
    install_handlers(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _field_errors(error)}, status_code=422)

    @app.get("/healthz", tags=["operations"])
    def healthz(current: SettingsDep) -> JSONResponse:
        """200 when the database and the broker answer, else 503 with what failed."""
        checks: dict[str, str] = {}
        try:
            with session_factory(current)() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"error: {error}"
        try:
            with client_for(current.broker, current.redis_ca_file).connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = "ok"
        except Exception as error:
            checks["broker"] = f"error: {error}"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(checks, status_code=200 if healthy else 503)

    app.include_router(api_experiments.router)
    app.include_router(api_runs.router)
    app.include_router(api_gradcam.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.ROOT / "static"), name="static")
    return app
