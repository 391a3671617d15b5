"""The FastAPI application: REST API, dashboard pages, health check and the stale-run watchdog."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import fastapi_offline
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from app.auth import api as auth_api
from app.auth import pages as auth_pages
from app.auth.deps import Viewer, as_viewer
from app.auth.headers import SecurityHeaders, allowing_inline_scripts
from app.db import SettingsDep
from app.errors import Unauthenticated, install_handlers
from app.health.checks import report as health_report
from app.health.supervisor import exit_with_parent
from app.limits.body import BodyLimit
from app.logs import configure_logging
from app.routes import api_experiments, api_gradcam, api_runs, pages
from app.runs import start_watchdog
from app.settings import Settings, get_settings
from app.sites import pages as site_pages
from app.sites import routes as site_routes
from app.streams.limits import StreamSlots
from app.templating import ROOT

#: Swagger UI and ReDoc as the fastapi-offline package ships them (static assets: served without signing in)
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/static-offline-docs"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop_watchdog = start_watchdog(settings)  # requeues runs whose worker died
        yield
        stop_watchdog.set()

    configure_logging()
    app = FastAPI(
        title="fedlens",
        description="Federated learning on medical images. Authenticate with `Authorization: Bearer <token>` "
        "(Settings → API tokens, or `fedlens token create`).",
        lifespan=lifespan,
        docs_url=None,  # served below, behind sign-in like every other page
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings  # app.db.app_settings: what every route reads
    app.add_middleware(SecurityHeaders)
    uploads = {"/api/site/blobs/": settings.max_chunk_bytes}  # weights files stream to disk in chunks of this size
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, streamed=uploads)
    app.state.stream_slots = StreamSlots(settings.streams_per_caller, settings)
    install_handlers(app)

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, error: Unauthenticated) -> Response:
        """Pages send the browser to the login page; the API answers 401 with a Bearer challenge."""
        if request.method == "GET" and not request.url.path.startswith("/api/"):
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return JSONResponse({"detail": error.detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})

    @app.get("/healthz", tags=["operations"], responses={503: {"description": "a dependency is down; each part says"}})
    def healthz(current: SettingsDep) -> JSONResponse:
        """200 when the database, the broker and a worker of each required queue answer; else 503 naming what
        is missing. Each worker part carries its last heartbeat."""
        healthy, body = health_report(current)
        return JSONResponse(body, status_code=200 if healthy else 503)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(as_viewer)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(_user: Viewer) -> HTMLResponse:
        """Swagger UI from the assets the fastapi-offline package ships: no CDN, works without internet."""
        page = get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="fedlens API",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )
        return allowing_inline_scripts(page)

    @app.get("/redoc", include_in_schema=False)
    def redoc(_user: Viewer) -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="fedlens API",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    app.include_router(auth_pages.router)
    app.include_router(auth_api.router)
    app.include_router(site_pages.router)
    app.include_router(site_routes.admin)
    app.include_router(site_routes.protocol)
    app.include_router(api_experiments.router)
    app.include_router(api_runs.router)
    app.include_router(api_gradcam.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    return app


MANAGER_PID = "FEDLENS_API_MANAGER_PID"  # set by worker.cli.serve for the API processes it has uvicorn start


def api_process_app() -> FastAPI:
    """The app of one of several API processes under uvicorn's manager (``FEDLENS_API_WORKERS`` > 1), from the
    environment; the process ends with its manager, so a killed manager leaves no process holding the port."""
    exit_with_parent(int(os.environ[MANAGER_PID]))
    return create_app()
