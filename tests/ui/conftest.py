"""One `fedlens up` (embedded SQLite, private Redis, workers) for the whole folder, a headless chromium, and a tiny
run trained to the end that several modules look at."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import chromium as launch_chromium
from tests.e2e.conftest import tiny_config
from tests.e2e.stack import ROOT, ServiceApi, create_token, free_port, wait_for

SCREENSHOTS = Path(os.environ.get("FEDLENS_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "screenshots"
LAPTOP = {"width": 1366, "height": 900}
TABLET = {"width": 820, "height": 1180}
NARROW = {"width": 768, "height": 1024}
FINISHED = {"succeeded", "failed", "cancelled"}
# Each part of a chart card (its legend, the ROC round picker) that lies outside the card, which clips it.
OUTSIDE_CARDS_JS = """() => {
  const inside = (a, b) =>
    a.top >= b.top - 1 && a.bottom <= b.bottom + 1 && a.left >= b.left - 1 && a.right <= b.right + 1;
  const out = [];
  for (const card of document.querySelectorAll(".chart")) {
    if (!card.offsetParent) continue;
    const box = card.getBoundingClientRect();
    for (const part of card.querySelectorAll(".legend, select")) {
      const at = part.getBoundingClientRect();
      const edges = (r) => [r.top, r.bottom, r.left, r.right].map(Math.round).join(" ");
      const name = card.getAttribute("aria-label");
      if (!inside(at, box)) out.push(`${name}: ${part.tagName} ${edges(at)} in ${edges(box)}`);
    }
  }
  return out;
}"""


class Page:
    """A browser tab that records console errors and failed requests."""

    def __init__(self, browser: Any, base: str, viewport: dict[str, int] = LAPTOP) -> None:
        self.page = browser.new_page()  # a tab of the signed-in browser context
        self.page.set_viewport_size(viewport)
        self.base = base
        self.problems: list[str] = []
        self.page.on(
            "console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    def goto(self, path: str) -> None:
        self.page.goto(self.base + path)

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def chart_points(self, chart: str, trace: int = 0) -> int:
        return int(
            self.page.evaluate(
                f"() => {{ const el = document.getElementById('{chart}'); return el && el.data && el.data[{trace}] "
                f"? el.data[{trace}].x.filter((v) => v !== null).length : 0; }}"
            )
        )

    def fits_width(self) -> bool:
        return bool(self.page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth + 1"))

    def clipped_by_cards(self) -> list[str]:
        """Legends and pickers that their chart card cuts off (empty when everything shows)."""
        return list(self.page.evaluate(OUTSIDE_CARDS_JS))

    def legend_names(self, chart: str) -> list[str]:
        """The entries of a chart's legend as drawn (an empty list when it draws none)."""
        return list(self.page.locator(f"#{chart} .legendtext").all_text_contents())

    def trace_names(self, chart: str) -> list[str]:
        return list(self.page.evaluate(f"() => document.getElementById('{chart}').data.map((t) => t.name)"))


@dataclass(frozen=True)
class Deployment:
    url: str
    env: dict[str, str]
    signin_link: str  # the one-time admin link `fedlens up` printed on its first start


@pytest.fixture(scope="package")
def server(deployment: Deployment) -> str:
    return deployment.url


@pytest.fixture(scope="package")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Shared by every module here (starting one and warming its workers costs seconds); each test makes its own
    experiments, and test_dashboard.py, collected first, finds the server empty."""
    folder = tmp_path_factory.mktemp("fedlens-up")
    port = free_port()
    env = os.environ | {
        "FEDLENS_DATA_DIR": str(folder / "data"),
        "FEDLENS_HEARTBEAT_S": "0.5",
        "FEDLENS_STALE_AFTER_S": "20",
        # one federated run at a time, so a second run stays queued behind a busy one (test_run_page.py shows a
        # queued run) and two cores are not shared by four orchestrators
        "FEDLENS_ORCHESTRATORS": "1",
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
        wait_for(healthy, 180, "fedlens up to answer /healthz")
        printed = (folder / "up.log").read_text()
        link = re.search(r"first start: sign in as admin .* at (\S+)", printed)
        assert link, printed
        yield Deployment(url=url, env=env, signin_link=link.group(1))
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="package")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with launch_chromium(tmp_path_factory.mktemp("chromium-home")) as browser:
        yield browser


@pytest.fixture(scope="package")
def browser(chromium: Any, deployment: Deployment) -> Iterator[Any]:
    """A browser context signed in as the first admin through the link `fedlens up` printed, as a new user would."""
    context = chromium.new_context()
    tab = context.new_page()
    tab.goto(deployment.signin_link)
    assert tab.url.endswith("/settings"), tab.url  # no password yet: the link leads to Settings
    tab.close()
    yield context
    context.close()


@pytest.fixture(scope="package")
def api(deployment: Deployment) -> Iterator[ServiceApi]:
    service = ServiceApi(deployment.url, create_token(deployment.env, "ui-script"))
    yield service
    service.http.close()


@pytest.fixture(scope="package")
def finished(api: ServiceApi) -> dict[str, Any]:
    """A tiny federated run (2 clients, 3 rounds, no baseline) trained to the end: ``{"run": …, "rounds": […]}``.
    Its name is long and has no space, as study names often are, so that tables must wrap it."""
    config = tiny_config(rounds=3, clients=2) | {"name": "paper-intermittent-keep-last-e2e-tiny"}
    run_id = api.launch(config)["federated"]["id"]
    done = api.wait_status(run_id, FINISHED)
    assert done["status"] == "succeeded", done["error"]
    return dict(api.http.get(f"/api/runs/{run_id}/rounds").json())
