"""The dashboard in a real browser against a running `fedlens up` whose workers really train."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import TABLET, Page

pytestmark = pytest.mark.slow


def fill_experiment(tab: Page) -> None:
    form = tab.page
    form.fill("#name", "browser-intermittent")
    form.fill("[name='data.train.samples']", "360")
    form.fill("[name='data.image_size']", "32")
    form.fill("[name='federation.clients']", "3")
    form.fill("[name='federation.rounds']", "5")
    form.fill("[name='model.calibration_samples']", "128")
    form.select_option("[name='federation.intermittent.approach']", "drop")
    form.fill("[name='federation.intermittent.events']", "3 joins 2\n2 leaves 5")
    form.fill("[name='centralized.epochs']", "3")


def test_launch_watch_live_and_compare(server: str, browser: Any) -> None:
    tab = Page(browser, server)
    tab.goto("/")
    assert "No experiments yet" in tab.page.inner_text("main")
    tab.shot("01-experiments-empty")

    tab.page.click("text=New experiment >> nth=0")
    assert tab.page.input_value("#name") == "quickstart-synthetic"
    fill_experiment(tab)
    tab.page.fill("[name='federation.rounds']", "0")
    tab.page.wait_for_selector("[data-live-error='federation.rounds']")  # the live preview flags it before submit
    tab.page.click("text=Create and launch")
    error = tab.page.locator("[data-error-for='federation.rounds']")
    assert "greater than or equal to 1" in error.inner_text()
    assert tab.page.get_attribute("[name='federation.rounds']", "aria-invalid") == "true"
    tab.shot("02-new-experiment-error")
    tab.page.fill("[name='federation.rounds']", "5")
    tab.page.wait_for_function("() => document.getElementById('preview-yaml').textContent.includes('rounds: 5')")
    assert "approach: drop" in tab.page.inner_text("#preview-yaml")
    tab.shot("03-new-experiment")
    tab.page.click("text=Create and launch")

    tab.page.wait_for_url("**/runs/*")
    run_url = tab.page.url
    tab.page.evaluate("() => { window.stillThisDocument = true; }")  # a reload or a navigation drops it
    tab.page.wait_for_function(
        "() => (document.getElementById('chart-auc').data || [{x: []}])[0].x.length >= 1", timeout=180_000
    )
    seen_live = tab.chart_points("chart-auc")
    assert seen_live < 5, "the first round should appear while the run is still training"
    tab.page.wait_for_function(
        "() => (document.getElementById('chart-auc').data || [{x: []}])[0].x.length === 5", timeout=240_000
    )
    assert tab.page.url == run_url
    assert tab.page.evaluate("() => window.stillThisDocument === true"), "the rounds should arrive without a reload"
    tab.page.wait_for_selector("#status .status-succeeded", timeout=30_000)
    assert tab.chart_points("chart-loss") == 5 and tab.chart_points("chart-accuracy") == 5
    client_traces = tab.page.evaluate("() => document.getElementById('chart-client-loss').data.length")
    assert client_traces == 6  # 3 clients x (train, own test)

    timeline = tab.page.evaluate(
        "() => { const t = document.getElementById('chart-timeline').data[0]; return {y: t.y, z: t.z, text: t.text}; }"
    )
    assert timeline["y"] == ["client 1", "client 2", "client 3"]
    statuses = [[text.split(": ")[1].split(" ")[0] for text in row] for row in timeline["text"]]
    assert statuses[2][0] == "absent" and statuses[2][1] == "trained"  # client 3 joins at round 2
    assert statuses[1][4] == "absent"  # client 2 left at round 5 and the drop approach ignores it
    assert "approach 1" in tab.page.inner_text("#chart-timeline")
    tab.page.wait_for_function("() => (document.getElementById('chart-roc').data || []).length >= 2")
    assert "AUC" in tab.page.evaluate("() => document.getElementById('chart-roc').data[1].name")
    assert tab.page.locator("#client-table tbody tr").count() == 3
    tab.shot("04-run-finished")

    tab.page.wait_for_function(
        "() => (document.getElementById('chart-loss').data || []).length === 2", timeout=120_000
    )  # the centralized baseline is overlaid once it has epochs
    tab.page.click("text=Compare with…")
    tab.page.wait_for_url("**/compare?runs=*")
    rows = tab.page.locator("#compare-table tbody tr")
    assert rows.count() == 2
    assert "federated" in rows.nth(0).inner_text() and "centralized" in rows.nth(1).inner_text()
    header = tab.page.locator("#compare-table thead").inner_text()
    for column in ("Test loss", "Accuracy", "AUC", "Rounds", "Execution time", "Time reduction"):
        assert column in header
    assert tab.page.locator("#compare-table td.best").count() >= 3
    tab.page.wait_for_function("() => (document.getElementById('cmp-roc').data || []).length === 3")
    tab.shot("05-compare")

    tab.goto("/")
    assert "browser-intermittent" in tab.page.inner_text("main")
    tab.shot("06-experiments")
    assert tab.problems == []


def test_pages_fit_a_tablet_and_every_input_has_a_label(server: str, browser: Any) -> None:
    tab = Page(browser, server, TABLET)
    for path, name in (
        ("/", "tablet-experiments"),
        ("/experiments/new?preset=paper-keep", "tablet-new"),
        ("/compare", "tablet-compare"),
    ):
        tab.goto(path)
        tab.page.wait_for_load_state("networkidle")
        assert tab.fits_width(), f"{path} scrolls sideways at 820 px"
        tab.shot(name)
    unlabeled = tab.page.evaluate(
        "() => [...document.querySelectorAll('input, select, textarea')].filter((el) => el.type !== 'hidden' &&"
        " !(el.id && document.querySelector(`label[for='${el.id}']`)) && !el.getAttribute('aria-label')).length"
    )
    assert unlabeled == 0
    tab.goto("/experiments/new")
    tab.page.keyboard.press("Tab")
    assert tab.page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    assert tab.problems == []
