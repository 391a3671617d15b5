"""A real fedlens deployment in subprocesses: API (uvicorn), an orchestrator worker and a training worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.models import FlRound, Run
from worker.cli import worker_command

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"gave up after {timeout_s:.0f} s waiting for {what}")


class ServiceApi:
    """The REST API of a running deployment, with the waits that tests need."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)

    def launch(self, config: dict[str, Any]) -> dict[str, Any]:
        created = self.http.post("/api/experiments", json={"config": config})
        assert created.status_code == 201, created.text
        launched = self.http.post(f"/api/experiments/{created.json()['id']}/runs")
        assert launched.status_code == 201, launched.text
        return dict(launched.json())

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/api/runs/{run_id}").json())

    def wait_status(self, run_id: str, statuses: set[str], timeout_s: float = 240) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (r := self.run(run_id))["status"] in statuses and r,
                timeout_s,
                f"run {run_id} to reach {statuses}",
            )
        )

    def wait_round(self, run_id: str, at_least: int, timeout_s: float = 240) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (r := self.run(run_id))["current_round"] >= at_least and r,
                timeout_s,
                f"run {run_id} to complete round {at_least}",
            )
        )

    def events(self, run_id: str, since: int = 0, timeout_s: float = 240) -> Iterator[tuple[str, dict[str, Any]]]:
        """Parse the SSE stream into (event, data) pairs until the server closes it."""
        with httpx.stream(
            "GET", f"{self.url}/api/runs/{run_id}/events", params={"since": since}, timeout=timeout_s
        ) as response:
            assert response.status_code == 200
            kind = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind:
                    yield kind, json.loads(line[6:])


class Stack(ServiceApi):
    """Processes of one deployment; logs go to files in ``folder`` so a failing test can show them."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = os.environ | env | {"TMPDIR": str(folder), "FEDLENS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        self.port = free_port()
        super().__init__(f"http://127.0.0.1:{self.port}")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until it ends
        process = subprocess.Popen(args, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_api(self) -> None:
        self._spawn("api", [sys.executable, "-m", "worker.cli", "api", "--port", str(self.port)])
        wait_for(self._healthy, 30, "the API's /healthz")

    def _healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def start_worker(self, queue: str, name: str | None = None) -> None:
        unique = f"{name or queue}-{time.monotonic_ns()}"
        self._spawn(name or queue, worker_command(queue, 1, unique))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes.pop(name)
        process.send_signal(sig)
        process.wait(30)

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        self.http.close()

    def broker(self) -> redis.Redis:
        """A client of this deployment's Redis, to watch what its workers hold."""
        url = self.env["FEDLENS_BROKER_URL"].replace("redis+socket://", "unix://")
        return redis.Redis.from_url(url)

    def run_in_database(self, run_id: str) -> tuple[str, list[int]]:
        """(status, stored round numbers) read from the database itself, for when no API is running."""
        engine = create_engine(self.env["FEDLENS_DATABASE_URL"])
        rid = uuid.UUID(run_id)
        try:
            with Session(engine) as session:
                status = session.scalar(select(Run.status).where(Run.id == rid))
                rounds = session.scalars(select(FlRound.number).where(FlRound.run_id == rid).order_by(FlRound.number))
                return str(status), list(rounds)
        finally:
            engine.dispose()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.folder.glob("*.log"))
