"""The run page's controls in a real browser: cancel, resume, downloads, the ROC round picker, time and traffic."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import tiny_config
from tests.e2e.stack import ServiceApi
from tests.ui.conftest import FINISHED, NARROW, Page

pytestmark = pytest.mark.slow


def open_run(browser: Any, server: str, run_id: str) -> Page:
    """The run page once its charts are drawn."""
    tab = Page(browser, server)
    tab.goto(f"/runs/{run_id}")
    tab.page.wait_for_function("() => (document.getElementById('chart-roc').data || []).length >= 2")
    return tab


def test_cancel_stops_a_running_run_and_resume_finishes_it(server: str, browser: Any, api: ServiceApi) -> None:
    """Cancelled after its first round (12 rounds leave time to click), resumed, it ends with each round once."""
    run_id = api.launch(tiny_config(rounds=12, clients=2))["federated"]["id"]
    tab = Page(browser, server)
    tab.goto(f"/runs/{run_id}")
    tab.page.wait_for_function(
        "() => (document.getElementById('chart-auc').data || [{x: []}])[0].x.length >= 1", timeout=120_000
    )
    assert tab.page.inner_text("#status") == "running"

    tab.page.click("#cancel")

    tab.page.wait_for_selector("#status .status-cancelled", timeout=120_000)
    cancelled = api.run(run_id)
    assert (cancelled["status"], cancelled["cancel_requested"]) == ("cancelled", True)
    done = cancelled["current_round"]
    assert 1 <= done < 12, "the run should stop before its last round"
    assert tab.page.is_hidden("#cancel") and tab.page.is_visible("#resume")
    assert tab.page.inner_text("#progress-text") == f"{done} of 12 rounds"
    assert tab.chart_points("chart-auc") == done
    tab.shot("run-cancelled")

    tab.page.click("#resume")

    tab.page.wait_for_selector("#status .status-succeeded", timeout=240_000)
    assert tab.page.is_hidden("#cancel") and tab.page.is_hidden("#resume")
    assert tab.page.inner_text("#progress-text") == "12 of 12 rounds"
    rounds = api.http.get(f"/api/runs/{run_id}/rounds").json()["rounds"]
    assert [r["number"] for r in rounds] == list(range(1, 13))  # resumed after the last stored round, none twice
    tab.page.wait_for_function("() => document.getElementById('chart-auc').data[0].x.length >= 12")
    plotted = tab.page.evaluate("() => document.getElementById('chart-auc').data[0].x")
    assert plotted == list(range(1, 13)), "the page keeps the rounds from before the cancel and adds each new one once"
    tab.shot("run-resumed")
    assert tab.problems == []


def test_metrics_csv_download_has_a_row_per_round_client_and_metric(
    server: str, browser: Any, finished: dict[str, Any]
) -> None:
    run_id = finished["run"]["id"]
    tab = open_run(browser, server, run_id)

    with tab.page.expect_download() as caught:
        tab.page.click("text=Metrics CSV")

    download = caught.value
    assert download.suggested_filename == f"run-{run_id}-metrics.csv"
    header, *rows = csv.reader(Path(download.path()).read_text().splitlines())
    assert header == ["round", "client", "status", "metric", "value"]
    got = {(int(r[0]), r[1], r[3]): (r[2], None if r[4] == "" else float(r[4])) for r in rows}
    assert len(got) == len(rows), "each (round, client, metric) once"
    assert {(number, client) for number, client, _ in got} == {(n, c) for n in (1, 2, 3) for c in ("", "1", "2")}
    global_keys = {metric for number, client, metric in got if (number, client) == (3, "")}
    assert {"test.loss", "test.accuracy", "test.auc"} <= global_keys
    expected: dict[tuple[int, str, str], tuple[str, float | None]] = {}
    for r in finished["rounds"]:
        expected |= {(r["number"], "", key): ("", value) for key, value in r["metrics"].items()}
        for c in r["clients"]:
            expected[r["number"], c["id"], "samples"] = (c["status"], float(c["samples"]))
            expected |= {(r["number"], c["id"], key): (c["status"], value) for key, value in c["metrics"].items()}
    assert got == expected
    tab.shot("run-csv-downloaded")
    assert tab.problems == []


def test_model_download_is_the_final_keras_model_for_32_px_grayscale(
    server: str, browser: Any, api: ServiceApi, finished: dict[str, Any]
) -> None:
    run_id = finished["run"]["id"]
    tab = open_run(browser, server, run_id)
    assert tab.page.is_visible("#model-link")

    with tab.page.expect_download() as caught:
        tab.page.click("#model-link")

    download = caught.value
    assert download.suggested_filename == f"fedlens-federated-{run_id}.keras"
    path = Path(download.path())
    assert path.stat().st_size == len(api.http.get(f"/api/runs/{run_id}/model").content) > 100_000
    assert zipfile.is_zipfile(path), "a .keras file is a zip archive"
    with zipfile.ZipFile(path) as archive:
        assert {"config.json", "metadata.json", "model.weights.h5"} <= set(archive.namelist())
        config = json.loads(archive.read("config.json"))
    assert config["config"]["layers"][0]["config"]["batch_shape"] == [None, 32, 32, 1]
    assert tab.problems == []


def roc_traces(tab: Page) -> list[dict[str, Any]]:
    traces = tab.page.evaluate(
        "() => document.getElementById('chart-roc').data.map((t) => ({name: t.name, x: t.x, y: t.y}))"
    )
    return list(traces)


def test_roc_round_picker_draws_the_chosen_rounds_curve(
    server: str, browser: Any, api: ServiceApi, finished: dict[str, Any]
) -> None:
    run_id = finished["run"]["id"]
    roc = {k: api.http.get(f"/api/runs/{run_id}/roc", params={"round": k}).json() for k in (1, 2, 3)}
    assert (roc[1]["fpr"], roc[1]["tpr"]) != (roc[3]["fpr"], roc[3]["tpr"]), "rounds 1 and 3 must differ to tell"
    tab = open_run(browser, server, run_id)
    picker = tab.page.locator("#roc-round option")
    assert picker.all_inner_texts() == ["1", "2", "3 (latest)"]
    assert tab.clipped_by_cards() == [], "the picker and every legend lie inside their card"
    assert tab.page.input_value("#roc-round") == "3"
    assert [t["name"] for t in roc_traces(tab)] == ["chance", f"final model, round 3 (AUC {roc[3]['auc']:.3f})"]

    for chosen in (1, 2):
        tab.page.select_option("#roc-round", str(chosen))
        tab.page.wait_for_function(
            f"() => (document.getElementById('chart-roc').data[2] || {{}}).name?.startsWith('round {chosen} ')"
        )

        _chance, final, picked = roc_traces(tab)
        assert (final["x"], final["y"]) == (roc[3]["fpr"], roc[3]["tpr"])
        assert (picked["x"], picked["y"]) == (roc[chosen]["fpr"], roc[chosen]["tpr"])
        assert picked["name"] == f"round {chosen} (AUC {roc[chosen]['auc']:.3f})"
    tab.shot("run-roc-round-2")
    for size in (NARROW, {"width": 1366, "height": 2400}):  # the window resized, as a full-page screenshot does
        tab.page.set_viewport_size(size)
        tab.page.wait_for_timeout(500)  # Plotly redraws on resize after a short debounce
        assert tab.clipped_by_cards() == [], size
    assert tab.problems == []


def test_a_run_cancelled_before_its_first_round_says_so_and_shows_no_empty_roc_box(
    server: str, browser: Any, api: ServiceApi
) -> None:
    """The orchestrator takes one run at a time, so the second run waits in the queue until it is cancelled."""
    busy = api.launch(tiny_config(rounds=12, clients=2))["federated"]["id"]
    api.wait_status(busy, {"running"})
    run_id = api.launch(tiny_config(rounds=3, clients=2))["federated"]["id"]
    tab = Page(browser, server)
    tab.goto(f"/runs/{run_id}")
    tab.page.wait_for_function("() => document.getElementById('progress-text').textContent === '0 of 3 rounds'")
    assert "waits for a worker" in tab.page.inner_text("#empty")
    assert tab.page.is_hidden("#roc-round"), "no round picker without a round"

    tab.page.click("#cancel")

    tab.page.wait_for_selector("#status .status-cancelled")
    assert api.run(run_id)["current_round"] == 0
    shown = tab.page.inner_text("#empty")
    assert "cancelled before its first round finished; Resume starts it from round 1" in shown
    assert "waits for a worker" not in shown
    assert tab.page.is_visible("#resume") and tab.page.is_hidden("#roc-round")
    assert tab.page.locator(".chart:visible").count() == 0, "no empty chart card"
    tab.shot("run-cancelled-before-round-1")
    api.http.post(f"/api/runs/{busy}/cancel")
    api.wait_status(busy, FINISHED)
    assert tab.problems == []


def test_time_and_traffic_charts_plot_each_rounds_values(server: str, browser: Any, finished: dict[str, Any]) -> None:
    rounds = finished["rounds"]
    tab = open_run(browser, server, finished["run"]["id"])
    tab.page.wait_for_function("() => (document.getElementById('chart-bytes').data || []).length === 2")

    timing, traffic = (
        tab.page.evaluate(
            f"() => document.getElementById('{chart}').data.map((t) => ({{name: t.name, x: t.x, y: t.y}}))"
        )
        for chart in ("chart-timing", "chart-bytes")
    )

    assert [t["name"] for t in timing] == [
        "start-up (a worker's first task)",
        "slowest client",
        "BatchNorm pass",
        "aggregation",
        "evaluation",
        "wall (clients one after another here)",
    ]
    assert all(t["x"] == [1, 2, 3] for t in timing + traffic)
    parts = ("startup_s", "train_s", "calibration_s", "aggregation_s", "evaluation_s", "wall_s")
    for trace, key in zip(timing, parts, strict=True):
        assert trace["y"] == [r[key] for r in rounds], key
    assert rounds[0]["startup_s"] > 0, "round 1 carries the training workers' start-up for this run"
    assert [t["name"] for t in traffic] == ["server → clients", "clients → server"]
    assert traffic[0]["y"] == [r["bytes_sent"] / 1e6 for r in rounds]
    assert traffic[1]["y"] == [r["bytes_received"] / 1e6 for r in rounds]
    assert all(r["bytes_sent"] > 0 and r["bytes_received"] > 0 for r in rounds)
    tab.page.locator("#chart-timing").scroll_into_view_if_needed()
    tab.shot("run-time-and-traffic")
    assert tab.problems == []


def test_the_clinical_table_shows_each_rounds_metrics_at_its_threshold_and_the_confusion_matrix(
    server: str, browser: Any, finished: dict[str, Any]
) -> None:
    rounds = finished["rounds"]
    tab = open_run(browser, server, finished["run"]["id"])
    tab.page.wait_for_selector("#confusion tbody tr")

    rows = [row.split("\t") for row in tab.page.locator("#metrics-table tbody tr").all_inner_texts()]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    for row, r in zip(rows, rounds, strict=True):
        m = r["metrics"]
        assert row[1:3] == [f"{m['test.threshold']:.3f}", f"{m['test.accuracy']:.3f}"]
        assert row[-4:] == [str(int(m[f"test.{k}"])) for k in ("tn", "fp", "fn", "tp")]
    last = rounds[-1]["metrics"]
    matrix = tab.page.locator("#confusion tbody tr").all_inner_texts()
    assert [line.split("\t") for line in matrix] == [
        ["NORMAL", str(int(last["test.tn"])), str(int(last["test.fp"]))],
        ["PNEUMONIA", str(int(last["test.fn"])), str(int(last["test.tp"]))],
    ]
    assert int(last["test.tn"] + last["test.fp"]) == int(last["test.n_negative"])
    clients = [row.split("\t") for row in tab.page.locator("#client-table tbody tr").all_inner_texts()]
    for row, c in zip(clients, rounds[-1]["clients"], strict=True):  # both clients trained in the last round
        m = c["metrics"]
        assert row[8:] == [
            f"{int(m['global.n_negative'])} / {int(m['global.n_positive'])}",
            f"{m['global.sensitivity']:.3f} / {m['global.specificity']:.3f}",
            f"{m['global.auc']:.3f}",
        ]
    own = tab.page.evaluate("() => document.getElementById('chart-client-roc').data.map((t) => [t.name, t.x])")
    roc = tab.page.evaluate(f"() => fetch('/api/runs/{finished['run']['id']}/roc').then((r) => r.json())")
    assert [name for name, _ in own] == ["chance"] + [f"client {c['id']} (AUC {c['auc']:.3f})" for c in roc["clients"]]
    assert [x for _, x in own[1:]] == [c["fpr"] for c in roc["clients"]] and len(roc["clients"]) == 2
    tab.page.locator("#clinical").scroll_into_view_if_needed()
    tab.shot("run-clinical")
    assert tab.problems == []


def test_a_dp_run_draws_its_epsilon_per_round_against_the_target(server: str, browser: Any, api: ServiceApi) -> None:
    """Sample-level DP: one epsilon trace for the run, one per site, and the target as a line (named, not drawn,
    when it lies far above what was spent)."""
    config = tiny_config(rounds=2) | {
        "privacy": {"dp": {"level": "sample", "noise_multiplier": 1.1, "target_epsilon": 500}}
    }
    run_id = api.launch(config)["federated"]["id"]
    tab = Page(browser, server)
    tab.goto(f"/runs/{run_id}")

    tab.page.wait_for_selector("#status .status-succeeded", timeout=240_000)
    tab.page.wait_for_function("() => (document.getElementById('chart-epsilon').data || [{x: []}])[0].x.length >= 2")

    assert tab.trace_names("chart-epsilon") == [
        "run (largest of the sites)",
        "client 1",
        "client 2",
        "client 3",
        "target 500 (above the axis)",
    ]
    assert tab.chart_points("chart-epsilon") == 2
    top = tab.page.evaluate("() => document.getElementById('chart-epsilon').layout.yaxis.range[1]")
    assert top < 500, "a far target does not flatten the spend to the floor"
    assert "sample level" in tab.page.inner_text("#privacy-dp")
    tab.shot("run-epsilon")
