"""``fedlens up`` heals itself: each child SIGKILLed mid-run is started again, /healthz answers 503 naming it
meanwhile, and the run finishes with every round stored once, with no human action."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.models import ClientRound, FlRound
from tests.e2e.conftest import tiny_config
from tests.e2e.stack import ROOT, ServiceApi, create_token, free_port, wait_for

pytestmark = pytest.mark.slow

#: How each child shows in its command line, and the part /healthz names while it is down (None: the API itself).
CHILDREN = {
    "train": ("-Q train", "training_workers"),
    "runs": ("-Q runs", "orchestrators"),
    "check": ("-Q check", "check_workers"),
    "api": ("worker.cli api", None),
    "redis": ("redis-server", "broker"),
}


class Up(ServiceApi):
    """A ``fedlens up`` on the embedded default (SQLite, private Redis) in a temporary folder."""

    def __init__(self, folder: Path) -> None:
        port = free_port()
        super().__init__(f"http://127.0.0.1:{port}")
        self.data = folder / "data"
        env = os.environ | {
            "FEDLENS_DATA_DIR": str(self.data),
            "FEDLENS_HEARTBEAT_S": "0.5",
            "FEDLENS_STALE_AFTER_S": "4",
            "TMPDIR": str(folder),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("FEDLENS_DATABASE_URL", None)
        env.pop("FEDLENS_BROKER_URL", None)
        self.env = env
        self.log = folder / "up.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "worker.cli", "up", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def health(self) -> tuple[int, dict[str, Any]]:
        try:
            response = self.http.get("/healthz", timeout=5)
        except httpx.TransportError:
            return 0, {}
        return response.status_code, response.json()

    def child(self, name: str) -> psutil.Process:
        marker = CHILDREN[name][0]
        found = [p for p in psutil.Process(self.process.pid).children() if marker in " ".join(p.cmdline())]
        assert len(found) == 1, f"one {name} child expected, found {found}"
        return found[0]

    def rounds(self, run_id: str) -> tuple[list[int], set[str]]:
        """Stored round numbers, and the statuses its clients had, read from the SQLite file itself."""
        engine = create_engine(f"sqlite:///{self.data / 'fedlens.db'}")
        try:
            with Session(engine) as session:
                rid = uuid.UUID(run_id)
                numbers = session.scalars(select(FlRound.number).where(FlRound.run_id == rid).order_by(FlRound.number))
                statuses = session.scalars(select(ClientRound.status).where(ClientRound.run_id == rid).distinct())
                return list(numbers), set(statuses)
        finally:
            engine.dispose()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.http.close()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    service = Up(tmp_path)
    try:
        wait_for(lambda: service.health()[0] == 200, 180, "fedlens up to answer /healthz with 200")
        service.authenticate(create_token(service.env, "self-healing"))
        yield service
    finally:
        service.stop()
        print(service.log.read_text(errors="replace")[-6000:])


def test_each_child_of_fedlens_up_killed_mid_run_is_restarted_and_the_run_finishes(up: Up) -> None:
    run_id = up.launch(tiny_config(rounds=40))["federated"]["id"]
    reached = up.wait_round(run_id, 1)["current_round"]

    for name, (_, part) in CHILDREN.items():
        victim = up.child(name)
        victim.kill()
        if part is not None:
            wait_for(
                lambda part=part: (h := up.health())[0] == 503 and any(m.startswith(part) for m in h[1]["missing"]),
                30,
                f"/healthz to name {part} missing",
                interval_s=0.05,
            )
        wait_for(lambda: up.health()[0] == 200, 120, f"{name} to be restarted and /healthz to answer 200")
        assert up.child(name).pid != victim.pid
        reached = up.wait_round(run_id, reached + 1)["current_round"]

    done = up.wait_status(run_id, {"succeeded", "failed"}, timeout_s=300)

    assert done["status"] == "succeeded", done["error"]
    numbers, statuses = up.rounds(run_id)
    assert numbers == list(range(1, 41)), "every round stored exactly once"
    assert statuses == {"trained"}, "each client's task was sent again after its worker died"
    log = up.log.read_text()
    for child in ("train worker", "runs worker", "check worker", "api", "redis"):
        assert f"{child} exited (code -9); restart 1 in 1.00 s" in log
