"""A real fedlens deployment in subprocesses: API (uvicorn), an orchestrator worker and a training worker."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.models import FlRound, Run
from worker.cli import worker_command
from worker.lease import started_key

ROOT = Path(__file__).resolve().parents[2]
#: The line a client task logs once it holds its lease and has loaded the global weights (worker/tasks.py).
TASK_START = re.compile(
    r"run (?P<run>[0-9a-f-]+) round (?P<round>\d+) client (?P<client>\S+): (?P<kind>\w+) task (?P<task>[0-9a-f-]+) "
    r"starts from global weights (?P<sha>[0-9a-f]{64})"
)


@dataclass(frozen=True)
class ClientTask:
    """One client task that really ran (it passed the gate and took its lease), as its worker logged it."""

    round: int
    client: str
    kind: str  # "update" (local training) or "stats" (BatchNorm statistics)
    task_id: str
    weights_sha256: str  # of the global weights it started from
    log: str  # name of the worker process that ran it


@dataclass(frozen=True)
class StoredRound:
    checkpoint: str
    weights_sha256: str | None


def create_token(env: dict[str, str], user: str, role: str = "admin") -> str:
    """A bearer token from ``fedlens token create`` on the deployment's database, as an operator's script would."""
    args = [sys.executable, "-m", "worker.cli", "token", "create", "--user", user, "--role", role]
    result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


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

    def __init__(self, url: str, token: str = "") -> None:
        self.url = url
        self.verify: ssl.SSLContext | bool = True  # under TLS: a context that trusts the deployment's own CA
        self.http = httpx.Client(base_url=url, timeout=30)
        if token:
            self.authenticate(token)

    def authenticate(self, token: str) -> None:
        self.http.headers["Authorization"] = f"Bearer {token}"

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
        """The run once it has stored round ``at_least``; fails at once if the run ends before that."""

        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            if run["current_round"] >= at_least:
                return run
            assert run["status"] not in {"succeeded", "failed", "cancelled"}, f"the run ended early: {run}"
            return None

        return dict(wait_for(reached, timeout_s, f"run {run_id} to complete round {at_least}"))

    def events(self, run_id: str, since: int = 0, timeout_s: float = 240) -> Iterator[tuple[str, dict[str, Any]]]:
        """Parse the SSE stream into (event, data) pairs until the server closes it."""
        with httpx.stream(
            "GET",
            f"{self.url}/api/runs/{run_id}/events",
            params={"since": since},
            headers=self.http.headers,
            timeout=timeout_s,
            verify=self.verify,
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

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it until it ends
        process = subprocess.Popen(args, env=self.env | (env or {}), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def start_api(self, *, tls: bool = False) -> None:
        """``tls``: HTTPS with a certificate from fedlens' own CA in the data directory, which this client trusts."""
        self._spawn(
            "api", [sys.executable, "-m", "worker.cli", "api", "--port", str(self.port), *(["--tls"] if tls else [])]
        )
        if tls:
            self.url = self.url.replace("http://", "https://")
            ca = Path(self.env["FEDLENS_DATA_DIR"]) / "tls" / "ca.pem"
            wait_for(ca.exists, 30, "the API's certificate authority")
            self.verify = ssl.create_default_context(cafile=str(ca))
            self.http = httpx.Client(base_url=self.url, timeout=30, verify=self.verify)
        wait_for(self._answers, 30, "the API's /healthz")
        self.authenticate(create_token(self.env, "e2e"))

    def _answers(self) -> bool:
        """The API is up: /healthz answers, 503 included (the workers start after the API here)."""
        try:
            return self.http.get("/healthz").status_code in (200, 503)
        except httpx.TransportError:
            return False

    def start_worker(
        self, queue: str, name: str | None = None, env: dict[str, str] | None = None, concurrency: int = 1
    ) -> None:
        unique = f"{name or queue}-{time.monotonic_ns()}"
        self._spawn(name or queue, worker_command(queue, concurrency, unique), env)

    def start_site(self, name: str, images: Path, config: Path | None = None) -> Path:
        """Create site ``name``, enroll an agent for it in ``folder/name`` pinning the certificate fingerprint the
        invitation gives, and start ``fedlens site run`` serving the image folder ``images`` as dataset ``chest``
        (``config``: a site.yaml, for its split). Returns the agent's folder."""
        invitation = self.http.post("/api/sites", json={"name": name})
        assert invitation.status_code == 201, invitation.text
        folder = self.folder / name
        site = [sys.executable, "-m", "worker.cli", "site"]
        fingerprint = invitation.json()["fingerprint"]
        assert fingerprint, "an API served over HTTPS hands out its certificate's fingerprint"
        enroll = [*site, "enroll", "--server", self.url, "--dir", str(folder), "--fingerprint", fingerprint]
        enrolled = subprocess.run(
            enroll,
            env=self.env | {"FEDLENS_SITE_TOKEN": invitation.json()["enrollment_token"]},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert enrolled.returncode == 0, enrolled.stderr
        run = [*site, "run", "--dir", str(folder), "--dataset", f"chest=image-folder:{images}"]
        self._spawn(name, [*run, *(["--config", str(config)] if config else [])])
        return folder

    def sites_online(self) -> set[str]:
        """The sites whose agents are online and have declared their datasets."""
        return {s["name"] for s in self.http.get("/api/sites").json() if s["online"] and s["datasets"]}

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

    @contextmanager
    def database(self) -> Iterator[Session]:
        """A session on this deployment's database itself, for when no API is running or the API does not tell."""
        engine = create_engine(self.env["FEDLENS_DATABASE_URL"])
        try:
            with Session(engine) as session:
                yield session
        finally:
            engine.dispose()

    def run_in_database(self, run_id: str) -> tuple[str, list[int]]:
        """(status, stored round numbers)."""
        rid = uuid.UUID(run_id)
        with self.database() as session:
            status = session.scalar(select(Run.status).where(Run.id == rid))
            rounds = session.scalars(select(FlRound.number).where(FlRound.run_id == rid).order_by(FlRound.number))
            return str(status), list(rounds)

    def stored_rounds(self, run_id: str) -> dict[int, StoredRound]:
        """The run's rounds as stored: checkpoint path and digest of its global weights, by round number."""
        with self.database() as session:
            query = select(FlRound.number, FlRound.checkpoint, FlRound.weights_sha256)
            rows = session.execute(query.where(FlRound.run_id == uuid.UUID(run_id)))
            return {number: StoredRound(path, sha) for number, path, sha in rows}

    def client_tasks(self, run_id: str, worker: str | None = None) -> list[ClientTask]:
        """Client tasks of this run that started, read from the logs of every worker (or of one)."""
        logs = [self.folder / f"{worker}.log"] if worker else sorted(self.folder.glob("*.log"))
        tasks = []
        for log in logs:
            for line in log.read_text(errors="replace").splitlines():
                m = TASK_START.search(line)
                if m and m["run"] == run_id:
                    tasks.append(ClientTask(int(m["round"]), m["client"], m["kind"], m["task"], m["sha"], log.stem))
        return tasks

    def kill_during_task(
        self, name: str, run_id: str, wanted: Callable[[ClientTask], bool], timeout_s: float = 120
    ) -> ClientTask:
        """SIGKILL worker ``name`` while it runs a client task that ``wanted`` picks, and return that task.

        The worker is frozen (SIGSTOP) while the test looks: a task counts as running only if it holds its
        start mark and has no result yet, and a frozen worker cannot finish it between the look and the kill.
        """
        broker = self.broker()
        process = self.processes[name]

        def running() -> ClientTask | None:
            for task in self.client_tasks(run_id, name):
                started = broker.exists(started_key(task.task_id))
                if wanted(task) and started and not broker.exists(f"celery-task-meta-{task.task_id}"):
                    return task
            return None

        def caught() -> ClientTask | None:
            if running() is None:
                return None
            process.send_signal(signal.SIGSTOP)
            task = running()
            if task is None:
                process.send_signal(signal.SIGCONT)
                return None
            self.kill(name)
            return task

        try:
            return wait_for(caught, timeout_s, f"worker {name} to run a wanted task of run {run_id}", 0.02)
        finally:
            broker.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.folder.glob("*.log"))
