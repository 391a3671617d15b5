"""A real `fedlens up` (embedded SQLite + private Redis + workers) and a headless Debian chromium to drive it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import ROOT, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(os.environ.get("FEDLENS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "screenshots"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("fedlens-up")
    port = free_port()
    env = os.environ | {
        "FEDLENS_DATA_DIR": str(folder / "data"),
        "FEDLENS_HEARTBEAT_S": "0.5",
        "FEDLENS_STALE_AFTER_S": "20",
        "TMPDIR": str(folder),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("FEDLENS_DATABASE_URL", None)
    env.pop("FEDLENS_BROKER_URL", None)
    log = open(folder / "up.log", "wb")  # noqa: SIM115 - kept open for the server's lifetime
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "up", "--port", str(port), "--train-workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, 60, "fedlens up to answer /healthz")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    os.environ["HOME"] = str(home)  # chromium writes ~/.config/chromium
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
