"""The agent loop: heartbeats, long polls for work, runs each task and delivers its result, until told to stop."""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from app.sites.protocol import Hardware, Heartbeat, SiteTask, TaskResult
from worker.site.budget import SiteBudget
from worker.site.connection import SiteClient, is_transient
from worker.site.datasets import SiteData, TaskRefused
from worker.site.identity import PinMismatch, SiteIdentity, agent_version
from worker.site.runner import TaskRunner, WeightsCache

HEARTBEAT_S = 10.0
WAIT_S = 25  # the long poll: the server answers as soon as there is work, else after this many seconds
MAX_BACKOFF_S = 60.0
RESULT_GRACE_S = 600.0  # a result is still sent this long after the task's deadline: the server records it late
#: paths and file names, kept out of what a failure reports to the server and to the logs
_PATHS = re.compile(r"(?:[A-Za-z]:)?[\\/][^\s'\",;]*|[^\s'\",;/\\]+\.(?:png|jpe?g|dcm|dicom|csv|npz|npy)\b", re.I)

logger = logging.getLogger(__name__)
T = TypeVar("T")


class _Interrupted(BaseException):
    """Raised by the signal handler into an idle long poll, so stopping does not wait for the poll to end."""


def redact(text: str) -> str:
    """A failure's text without paths or file names, short enough for a result message and a log line."""
    return _PATHS.sub("<path>", text)[:300]


def failure_text(error: BaseException) -> str:
    return redact(str(error)) if isinstance(error, TaskRefused) else f"{type(error).__name__}: {redact(str(error))}"


def visible_gpus() -> list[str]:
    """The names of the NVIDIA GPUs nvidia-smi lists; none where the tool is absent or fails."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return []
    try:
        listed = subprocess.run(
            [tool, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()][:64]


def hardware() -> Hardware:
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Hardware(cpus=os.cpu_count() or 0, memory_gb=round(memory / 2**30, 1), gpus=visible_gpus())


class Backoff:
    """Doubling pauses with jitter, so sites that lost the server together do not all return at once."""

    def __init__(self, first_s: float = 1.0) -> None:
        self.first_s = first_s
        self.next_s = first_s

    def pause(self) -> float:
        delay = self.next_s * random.uniform(0.8, 1.2)
        self.next_s = min(MAX_BACKOFF_S, self.next_s * 2)
        return delay

    def reset(self) -> None:
        self.next_s = self.first_s


class Agent:
    """One site serving its server: never crashes on network errors; a local failure is reported as the result."""

    def __init__(
        self,
        identity: SiteIdentity,
        data: SiteData,
        runner: TaskRunner,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        wait_s: int = WAIT_S,
    ) -> None:
        self.identity = identity
        self.data = data
        self.runner = runner
        self.cache = WeightsCache(identity.folder)
        self.budget = SiteBudget.of(data, identity.folder)
        self.heartbeat_s = heartbeat_s
        self.wait_s = wait_s
        self.stop = threading.Event()
        self.busy_with: uuid.UUID | None = None
        self._polling = False
        self._hardware = hardware()

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT stop the agent: at once when idle, after delivering the current task's result else."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("%s: stopping once the current task, if any, is delivered", signal.Signals(signum).name)
        self.stop.set()
        if self._polling:
            raise _Interrupted

    def run(self) -> None:
        beats = threading.Thread(target=self._heartbeats, name="heartbeat", daemon=True)
        beats.start()
        client = SiteClient(self.identity)
        logger.info(
            "site %s (%s) serving %s for %s",
            self.identity.name,
            self.identity.site_id,
            ", ".join(self.data.prepared),
            self.identity.server.url,
            extra={"site_id": self.identity.site_id, "agent_version": agent_version()},
        )
        try:
            self._serve(client)
        except _Interrupted:
            pass
        finally:
            self.stop.set()
            client.close()
            beats.join(timeout=30)
            logger.info("site agent stopped")

    def _serve(self, client: SiteClient) -> None:
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                self._polling = True
                task = client.next_task(self.wait_s)
            except Exception as error:  # whatever goes wrong, the agent keeps asking
                self._pause(backoff, "polling for work", error)
                continue
            finally:
                self._polling = False
            backoff.reset()
            if task is not None:
                self._handle(client, task)

    def _pause(self, backoff: Backoff, what: str, error: Exception) -> None:
        delay = backoff.pause()
        level = logging.WARNING if is_transient(error) and not isinstance(error, PinMismatch) else logging.ERROR
        logger.log(level, "%s failed: %s; trying again in %.0f s", what, failure_text(error), delay)
        self.stop.wait(delay)

    def _retry(self, what: str, call: Callable[[], T], give_up_at: float) -> T:
        backoff = Backoff()
        while True:
            try:
                return call()
            except Exception as error:
                if not is_transient(error) or self.stop.is_set() or time.time() > give_up_at:
                    raise
                self._pause(backoff, what, error)

    def _handle(self, client: SiteClient, task: SiteTask) -> None:
        self.busy_with = task.id
        where = {"task": str(task.id), "run_id": str(task.run_id), "round": task.round, "kind": task.kind}
        logger.info("task %s: %s, round %d, dataset %s", task.id, task.kind, task.round, task.dataset, extra=where)
        give_up_at = task.deadline.timestamp() + RESULT_GRACE_S
        started = time.perf_counter()
        try:
            result = self._execute(client, task, give_up_at)
        except Exception as error:  # a local failure becomes the task's answer
            result = TaskResult(num_examples=0, error=failure_text(error))
            logger.error("task %s failed: %s", task.id, result.error, extra=where)
        try:
            answer = self._retry("sending the result", lambda: client.result(str(task.id), result), give_up_at)
        except Exception as error:
            logger.error("task %s: result not delivered: %s", task.id, failure_text(error), extra=where)
        else:
            seconds = time.perf_counter() - started
            late = " (late)" if answer.get("late") else ""
            logger.info("task %s: result delivered after %.1f s%s", task.id, seconds, late, extra=where)
        finally:
            self.busy_with = None

    def _execute(self, client: SiteClient, task: SiteTask, give_up_at: float) -> TaskResult:
        """The site's privacy budget is checked before anything is downloaded, and the round recorded before the
        update is uploaded."""
        self.budget.check(task)
        weights = self._retry(
            "downloading global weights", lambda: self.cache.get(task.weights_sha256, client.weights), give_up_at
        )
        new_weights, result = self.runner.run(task, weights)
        self.budget.record(task)
        if new_weights is None:
            return result
        sha256, path = self.cache.store(task.round, new_weights)
        self._retry("uploading weights", lambda: client.upload(path), give_up_at)
        return result.model_copy(update={"weights_sha256": sha256})

    def _heartbeats(self) -> None:
        """Every ``heartbeat_s``: version, hardware, dataset summaries and the current task; failures are logged
        when they start and when they end, not every time."""
        client = SiteClient(self.identity)
        failing = False
        try:
            while True:
                beat = Heartbeat(
                    agent_version=agent_version(),
                    hardware=self._hardware,
                    datasets=self.data.summaries(),
                    busy_with=self.busy_with,
                )
                try:
                    client.heartbeat(beat)
                except Exception as error:
                    if not failing:
                        logger.warning("heartbeat failed: %s", failure_text(error))
                    failing = True
                else:
                    if failing:
                        logger.info("heartbeats reach the server again")
                    failing = False
                if self.stop.wait(self.heartbeat_s):
                    return
        finally:
            client.close()
