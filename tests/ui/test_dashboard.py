"""The dashboard in a real browser against a running `fedlens up` whose workers really train."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import NARROW, TABLET, Page

pytestmark = pytest.mark.slow

# Markup in a name is text: it must not draw huge legend text or a link in a chart.
NAME = 'browser <b style="font-size:60px">intermittent</b> <a href="https://example.org/">study</a>'
# The form's seed 42 with availability 0.9: client 2 misses round 1 and client 3 misses round 2, its first;
# client 3 joins at round 2 and client 2 leaves at round 5 (drop: it no longer counts).
TIMELINE = {
    "client 1": ["trained"] * 5,
    "client 2": ["did not answer", "trained", "trained", "trained", "left"],
    "client 3": ["not joined yet", "did not answer", "trained", "trained", "trained"],
}
STATES = ["trained", "kept (last weights count)", "failed (training error)", "not joined yet", "left", "did not answer"]
TIMELINE_JS = """() => {
  const el = document.getElementById("chart-timeline"), heat = el.data[0];
  const colour = (z) => heat.colorscale.filter(([at]) => at <= (z - heat.zmin) / (heat.zmax - heat.zmin)).pop()[1];
  const keys = el.data.filter((t) => t.marker && t.marker.symbol === "square").map((t) => [t.name, t.marker.color]);
  const legend = [...el.querySelectorAll(".legendtext")].map((t) => t.textContent);
  return {y: heat.y, colours: heat.z.map((row) => row.map(colour)), text: heat.text, keys, legend};
}"""


def fill_experiment(tab: Page) -> None:
    form = tab.page
    form.fill("#name", NAME)
    form.fill("[name='data.train.samples']", "360")
    form.fill("[name='data.image_size']", "32")
    form.fill("[name='federation.clients']", "3")
    form.fill("[name='federation.rounds']", "5")
    form.fill("[name='model.calibration_samples']", "128")
    form.select_option("[name='federation.intermittent.approach']", "drop")
    form.fill("[name='federation.intermittent.events']", "3 joins 2\n2 leaves 5")
    form.fill("[name='federation.intermittent.availability']", "0.9")
    form.fill("[name='centralized.epochs']", "3")


def keys_of(keys: dict[str, str], colour: str) -> str:
    return next(name for name, key in keys.items() if key == colour)


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
    tab.page.wait_for_function("() => document.activeElement.id === 'form-errors'", timeout=5_000)
    assert "federation.rounds" in tab.page.inner_text("#form-errors")
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

    timeline = tab.page.evaluate(TIMELINE_JS)
    keys = dict(timeline["keys"])
    assert list(keys) == STATES and len(set(keys.values())) == len(STATES), "each state has its own colour"
    assert timeline["legend"][: len(STATES)] == STATES
    assert timeline["y"] == list(TIMELINE)
    drawn = [[keys_of(keys, colour) for colour in row] for row in timeline["colours"]]
    assert drawn == list(TIMELINE.values())
    said = [[text.split(": ")[1].split(" (")[0] for text in row] for row in timeline["text"]]
    assert said == [[s.split(" (")[0] for s in row] for row in TIMELINE.values()]
    assert "approach 1" in tab.page.inner_text("#chart-timeline")
    tab.page.wait_for_function("() => (document.getElementById('chart-roc').data || []).length >= 2")
    assert "AUC" in tab.page.evaluate("() => document.getElementById('chart-roc').data[1].name")
    assert tab.page.locator("#client-table tbody tr").count() == 3
    assert tab.page.locator("#client-table tbody .badge").all_inner_texts() == ["trained", "left", "trained"]
    tab.shot("04-run-finished")

    tab.page.wait_for_function(
        "() => (document.getElementById('chart-loss').data || []).length === 2", timeout=120_000
    )  # the centralized baseline is overlaid once it has epochs
    for chart in ("chart-loss", "chart-accuracy", "chart-auc"):
        assert tab.legend_names(chart) == ["federated", "centralized (per epoch)"], chart
    assert tab.clipped_by_cards() == [], "after the live finish every legend shows in full"
    for size in (NARROW, {"width": 1366, "height": 2600}, {"width": 1366, "height": 900}):  # as screenshots resize
        tab.page.set_viewport_size(size)
        tab.page.wait_for_timeout(500)  # Plotly redraws on resize after a short debounce
        assert tab.clipped_by_cards() == [], size
    assert tab.page.evaluate("() => window.stillThisDocument === true")
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
    shown = 'browser <b style="font-size:60px">inter…'  # 40 characters: a legend entry does not wrap
    assert tab.legend_names("cmp-loss") == [f"{shown} · federated", f"{shown} · centralized"], "shown as written"
    assert tab.clipped_by_cards() == []
    assert tab.page.locator("#compare-charts .legend a").count() == 0, "markup in a name draws no link"
    sizes = tab.page.evaluate(
        "() => [...document.querySelectorAll('.legendtext')].map((t) => getComputedStyle(t).fontSize)"
    )
    assert set(sizes) == {"12px"}
    tab.shot("05-compare")
    central_id = rows.nth(1).get_attribute("data-run-id")

    tab.goto(f"/runs/{central_id}")
    tab.page.wait_for_function("() => (document.getElementById('chart-roc').data || []).length >= 2")
    assert "client" not in tab.page.inner_text("main").lower(), "a centralized run has no clients"
    assert tab.page.inner_text("#run-summary").startswith("Baseline: the same model trained on all the training data")
    assert (
        tab.trace_names("chart-fit-loss")
        == tab.trace_names("chart-fit-accuracy")
        == [
            "training data",
            "common test set",
        ]
    )
    assert tab.trace_names("chart-timing") == ["training", "evaluation", "wall"]
    assert tab.page.inner_text("#client-table tbody th") == "all training data"
    tab.shot("05b-centralized-run")

    tab.goto("/")
    assert NAME in tab.page.inner_text("main")
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


def test_the_launch_button_is_a_few_key_presses_from_the_top(server: str, browser: Any) -> None:
    tab = Page(browser, server)
    tab.goto("/experiments/new")
    on_launch = (
        "() => document.activeElement.type === 'submit' && document.activeElement.textContent === 'Create and launch'"
    )
    presses = 0
    while presses < 12 and not tab.page.evaluate(on_launch):
        tab.page.keyboard.press("Tab")
        presses += 1
    assert presses <= 10, "past the skip link, the brand, the menu and Sign out, launch comes first"

    tab.goto("/experiments/new")
    for key in ("Tab", "Enter", "Tab"):  # Skip to content, then the first control of the page
        tab.page.keyboard.press(key)
    assert tab.page.evaluate(on_launch)
    assert tab.problems == []
