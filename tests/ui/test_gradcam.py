"""The Grad-CAM galleries in a real browser: they appear when a run succeeds, on request, and side by side."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.stack import ServiceApi, wait_for
from tests.ui.test_dashboard import Page

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "browser-gradcam",
    "seed": 3,
    "data": {"train": {"format": "synthetic", "samples": 360}, "image_size": 32},
    "model": {"calibration_samples": 128},
    "federation": {"clients": 2, "rounds": 3},
    "centralized": {"enabled": True, "epochs": 2},
}


def wait_for_images(tab: Page, container: str, at_least: int, timeout_ms: int = 30_000) -> None:
    """Until ``at_least`` heat maps in ``container`` are shown; they load lazily, so the gallery is scrolled to."""
    items = f"{container} .gradcam-item img"
    tab.page.wait_for_function(f"() => document.querySelectorAll('{items}').length >= {at_least}", timeout=timeout_ms)
    tab.page.locator(items).first.scroll_into_view_if_needed()
    loaded = f"[...document.querySelectorAll('{items}')].filter((i) => i.naturalWidth > 0).length >= {at_least}"
    tab.page.wait_for_function(f"() => {loaded}")


def test_gallery_follows_the_run_is_computed_on_request_and_compares_side_by_side(
    server: str, browser: Any, api: ServiceApi
) -> None:
    http = api.http
    experiment = http.post("/api/experiments", json={"config": CONFIG}).json()
    launched = http.post(f"/api/experiments/{experiment['id']}/runs").json()
    federated, central = launched["federated"]["id"], launched["centralized"]["id"]
    tab = Page(browser, server)

    tab.goto(f"/runs/{federated}")  # opened while the run trains: the gallery must arrive without a reload
    tab.page.wait_for_function(
        "() => document.getElementById('gradcam-note').textContent.includes('when the run succeeds')"
    )
    wait_for_images(tab, "#gradcam-gallery", 2, timeout_ms=240_000)
    assert tab.page.inner_text("#gradcam-note").startswith("Round 3:")
    first = tab.page.locator("#gradcam-gallery .gradcam-item").first
    assert first.get_attribute("data-category") == "TP"
    assert "PNEUMONIA → PNEUMONIA" in first.inner_text() and "p(PNEUMONIA)" in first.inner_text()
    assert "Grad-CAM heat map of test image" in (first.locator("img").get_attribute("alt") or "")
    tab.shot("gradcam-01-run")
    unlabeled = tab.page.evaluate(
        "() => [...document.querySelectorAll('#gradcam input, #gradcam select')].filter((el) =>"
        " !document.querySelector(`label[for='${el.id}']`)).length"
    )
    assert unlabeled == 0

    tab.page.fill("#gradcam-request-round", "1")
    tab.page.click("#gradcam-request button")
    tab.page.wait_for_function(
        "() => document.getElementById('gradcam-note').textContent.startsWith('Round 1:')", timeout=120_000
    )
    assert tab.page.eval_on_selector_all("#gradcam-round option", "(os) => os.map((o) => o.value)") == ["1", "3"]
    assert (
        tab.page.locator("#gradcam-gallery .gradcam-item img")
        .first.get_attribute("src", timeout=5_000)
        .startswith(f"/api/runs/{federated}/gradcam/r0001-")
    )

    wait_for(
        lambda: http.get(f"/api/runs/{central}/gradcam").json()["status"] == "ready", 180, "the baseline's gallery"
    )
    tab.goto(f"/compare?runs={federated},{central}")
    wait_for_images(tab, "#gradcam-table", 4)
    headers = tab.page.eval_on_selector_all("#gradcam-table thead th", "(ths) => ths.map((th) => th.innerText)")
    assert len(headers) == 3 and "federated" in headers[1] and "centralized" in headers[2]
    tp_row = tab.page.locator("#gradcam-table tbody tr").first
    assert (
        tp_row.locator("td").nth(0).locator("img").count() >= 1
        and tp_row.locator("td").nth(1).locator("img").count() >= 1
    )
    tab.shot("gradcam-02-compare")
    assert tab.problems == []
