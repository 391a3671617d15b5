"""The Grad-CAM sections of the run and compare pages: what the server renders for gradcam.js to fill."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import RunKind
from tests.api.factories import add_experiment, add_run, round_result
from tests.api.pagetree import page
from worker.store import save_round


def test_run_page_has_a_gallery_section_and_a_form_to_explain_the_last_round(
    client: TestClient, session: Session
) -> None:
    run = add_run(session, add_experiment(session))
    for number in (1, 2):
        save_round(session, run.id, round_result(number), f"ckpt/{number}")

    root = page(client.get(f"/runs/{run.id}"))

    section = root.by_id("gradcam")
    assert (section.attrs["data-run-id"], section.attrs["data-status"]) == (str(run.id), "succeeded")
    assert section.find("h2").text == "What the model looks at"
    assert root.by_id("gradcam-request-round").attrs["value"] == "2"
    assert root.find("label", for_="gradcam-request-round").text == "Explain round"
    assert root.find_all("script", src="/static/js/gradcam.js") and root.find_all(
        "link", href="/static/css/gradcam.css"
    )


def test_compare_page_has_one_gallery_column_per_run_for_gradcam_js(client: TestClient, session: Session) -> None:
    experiment = add_experiment(session)
    federated, central = add_run(session, experiment), add_run(session, experiment, kind=RunKind.CENTRALIZED)
    for run in (federated, central):
        save_round(session, run.id, round_result(1), "ckpt/1")

    root = page(client.get("/compare", params={"runs": f"{federated.id},{central.id}"}))

    assert root.by_id("gradcam-compare").attrs["data-runs"] == f"{federated.id},{central.id}"
    assert [th.text for th in root.by_id("gradcam-table").find_all("th")] == ["Category"]
    assert client.get("/static/js/gradcam.js").status_code == 200
    assert client.get("/static/css/gradcam.css").status_code == 200


def test_compare_page_without_picked_runs_has_no_gallery(client: TestClient) -> None:
    assert not page(client.get("/compare")).has_id("gradcam-compare")
