"""GET /api/runs/{id}/rounds over HTTP: ETag and 304, increments with ``since``, gzip."""

from __future__ import annotations

import gzip
import json

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.models import Run
from tests.api.factories import add_experiment, add_run, round_result, trained
from worker.store import save_round


def stored_rounds(session: Session, count: int) -> Run:
    run = add_run(session, add_experiment(session, rounds=5), total_rounds=5)
    for number in range(1, count + 1):
        save_round(session, run.id, round_result(number, clients=[trained("1"), trained("2")]), f"ckpt/{number}")
    return run


def test_an_unchanged_run_answers_304_to_its_etag_and_a_new_round_changes_it(
    client: TestClient, session: Session
) -> None:
    run = stored_rounds(session, 2)
    path = f"/api/runs/{run.id}/rounds"
    first = client.get(path)
    etag = first.headers["etag"]

    unchanged = client.get(path, headers={"If-None-Match": etag})
    assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", etag)
    assert client.get(path, headers={"If-None-Match": f'W/{etag}, "other"'}).status_code == 304

    save_round(session, run.id, round_result(3, clients=[trained("1")]), "ckpt/3")
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert [r["number"] for r in changed.json()["rounds"]] == [1, 2, 3]


def test_since_returns_only_the_later_rounds_under_their_own_etag(client: TestClient, session: Session) -> None:
    path = f"/api/runs/{stored_rounds(session, 3).id}/rounds"
    full, increment = client.get(path), client.get(path, params={"since": 2})

    assert [r["number"] for r in increment.json()["rounds"]] == [3]
    assert increment.json()["rounds"][0] == full.json()["rounds"][2]
    assert increment.headers["etag"] != full.headers["etag"]
    assert client.get(path, params={"since": 3}).json()["rounds"] == []


def test_rounds_are_gzipped_for_clients_that_accept_it(client: TestClient, session: Session) -> None:
    path = f"/api/runs/{stored_rounds(session, 3).id}/rounds"
    plain = client.get(path, headers={"Accept-Encoding": "identity"})
    with client.stream("GET", path, headers={"Accept-Encoding": "gzip, deflate"}) as packed:
        body = b"".join(packed.iter_raw())  # as sent, before httpx decodes it

    assert "content-encoding" not in plain.headers
    assert (packed.headers["content-encoding"], packed.headers["vary"]) == ("gzip", "Accept-Encoding")
    assert len(body) < len(plain.content) / 3
    assert json.loads(gzip.decompress(body)) == plain.json()
