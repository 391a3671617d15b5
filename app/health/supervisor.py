"""``fedlens up``'s children (embedded Redis, workers, the API) restarted when they die, with exponential back-off."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass
class Child:
    """``start`` launches the process and returns once it is usable (the embedded Redis waits for its socket)."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    quick_deaths: int = 0  # deaths in a row, each before the child had been up ``stable_after_s``
    restart_at: float | None = None  # when a dead child is due to start again
    history: list[float] = field(default_factory=list)  # back-off delays, in order, for the log and the tests


class Supervisor:
    """Start children in order; a child that exits is started again after ``first_backoff_s``, doubling for each
    quick death in a row up to ``max_backoff_s``, back to the first delay once a child has stayed up
    ``stable_after_s``. A crash loop thus costs little, and a one-off death is repaired within about a second."""

    def __init__(
        self,
        children: Sequence[Child],
        *,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        stable_after_s: float = 60.0,
    ) -> None:
        self.children = list(children)
        self.first_backoff_s, self.max_backoff_s, self.stable_after_s = first_backoff_s, max_backoff_s, stable_after_s
        self._stopping = threading.Event()

    def _launch(self, child: Child) -> None:
        child.restart_at = None
        try:
            child.process = child.start()
        except Exception:  # it failed to come up: count it as a death, so it is tried again later
            logger.exception("could not start %s", child.name)
            child.process = None
            self._schedule(child, time.monotonic())
            return
        child.started_at = time.monotonic()
        logger.info("%s is running as pid %d", child.name, child.process.pid)

    def _schedule(self, child: Child, now: float) -> None:
        stable = child.process is not None and now - child.started_at >= self.stable_after_s
        child.quick_deaths = 0 if stable else child.quick_deaths + 1
        delay = min(self.max_backoff_s, self.first_backoff_s * 2 ** max(0, child.quick_deaths - 1))
        child.restart_at, child.restarts = now + delay, child.restarts + 1
        child.history.append(delay)
        code = child.process.returncode if child.process else None
        logger.warning(
            "%s exited (code %s); restart %d in %.2f s",
            child.name,
            code,
            child.restarts,
            delay,
            extra={"child": child.name, "exit_code": code, "restart": child.restarts, "backoff_s": delay},
        )

    def start(self) -> None:
        for child in self.children:
            self._launch(child)

    def check(self) -> None:
        """One pass: note the children that died, start those whose back-off is over."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is None and (child.process is None or child.process.poll() is not None):
                self._schedule(child, now)
            if child.restart_at is not None and now >= child.restart_at and not self._stopping.is_set():
                self._launch(child)

    def watch(self) -> None:
        """Check every ``POLL_S`` until ``stop``."""
        while not self._stopping.wait(POLL_S):
            self.check()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every child, the last started first (the API before the workers, the workers before Redis)."""
        self._stopping.set()
        for child in reversed(self.children):
            process = child.process
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def exit_with_parent(parent: int, signal_number: int = signal.SIGTERM) -> None:
    """Ask Linux to send this process ``signal_number`` when its parent, process ``parent``, dies (prctl
    PR_SET_PDEATHSIG); at once if it has died already.

    uvicorn's worker processes (``FEDLENS_API_WORKERS`` > 1) outlive a manager killed with SIGKILL and keep the port,
    so the API that ``fedlens up`` restarts could not bind it. Elsewhere than Linux this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0) != 0:
        logger.warning("could not tie this process to its parent: errno %d", ctypes.get_errno())
    elif os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal_number)
