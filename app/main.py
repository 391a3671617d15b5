"""The FastAPI application: REST API, dashboard pages, health check and the stale-run watchdog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from app.broker import client_for
from app.db import SettingsDep, session_factory
from app.errors import install_handlers
from app.limits.body import BodyLimit
from app.logs import configure_logging
from app.routes import api_experiments, api_gradcam, api_runs, pages
from app.runs import start_watchdog
from app.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop_watchdog = start_watchdog(settings)  # requeues runs whose worker died
        yield
        stop_watchdog.set()

    configure_logging()
    app = FastAPI(title="fedlens", description="Federated learning on medical images", lifespan=lifespan)
    app.dependency_overrides[get_settings] = lambda: settings
    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.get("/healthz", tags=["operations"], responses={503: {"description": "a dependency is down; each part says"}})
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
            with client_for(current.broker).connection_for_write() as conn:
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
