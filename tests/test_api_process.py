"""The API as its own process: blocking work (the database, the broker) stays off the event loop."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.api.pages import quickstart_form
from tests.e2e.stack import create_token, wait_for
from tests.services import redis_url
from tests.test_tls import _answers, fedlens_api


def test_a_data_check_waiting_for_a_worker_does_not_hold_up_other_requests(tmp_path: Path) -> None:
    """No check worker runs: the form's "Check data" waits up to a minute for one. Meanwhile the API, whose one
    event loop serves every page and event stream, still answers at once."""
    env = os.environ | {
        "FEDLENS_DATA_DIR": str(tmp_path / "data"),
        "FEDLENS_DATABASE_URL": f"sqlite:///{tmp_path / 'fedlens.db'}",
        "FEDLENS_BROKER_URL": redis_url("api"),
    }
    with ThreadPoolExecutor(1) as pool, fedlens_api(tmp_path) as (port, _log, _process):  # the API stops first
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90)
        wait_for(lambda: _answers(http), 60, "the API")
        http.headers["Authorization"] = f"Bearer {create_token(env, 'checker', 'researcher')}"
        checking = pool.submit(http.post, "/experiments/check", data=quickstart_form())
        time.sleep(1)  # the check now waits for a worker
        began = time.perf_counter()
        answered = http.get("/healthz")
        answered_s = time.perf_counter() - began
        assert not checking.done(), "the check should still be waiting for a worker"

    assert answered.status_code == 200 and answered_s < 5, answered_s
