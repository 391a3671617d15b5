"""A TCP relay on loopback that cuts a connection after a given number of bytes: a network breaking mid-transfer.

It relays TLS untouched (the agent still pins the server's certificate through it) and counts the bytes it relays
each way, so that a test can tell a resumed transfer from one that started again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Literal

Direction = Literal["up", "down"]  # up: agent to server


class CuttingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.relayed: dict[Direction, int] = {"up": 0, "down": 0}
        self.cuts = 0
        self._cut: tuple[Direction, int] | None = None
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, name="proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def cut_after(self, direction: Direction, count: int) -> None:
        """Close the connection that carries the ``count``-th byte from now in ``direction`` (once), right after
        relaying that byte."""
        with self._lock:
            self._cut = (direction, self.relayed[direction] + count)

    def close(self) -> None:
        self.listener.close()
        for end in self._open:
            _hang_up(end)

    def _accept(self) -> None:
        while True:
            try:
                agent, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._open += [agent, server]
            for source, target, direction in ((agent, server, "up"), (server, agent, "down")):
                pump = threading.Thread(target=self._pump, args=(source, target, direction), daemon=True)
                pump.start()

    def _pump(self, source: socket.socket, target: socket.socket, direction: Direction) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    cut, done = self._cut, self.relayed[direction]
                    cutting = cut is not None and cut[0] == direction and done + len(data) >= cut[1]
                    if cut is not None and cutting:
                        data = data[: cut[1] - done]
                        self._cut, self.cuts = None, self.cuts + 1
                    self.relayed[direction] += len(data)
                target.sendall(data)
                if cutting:
                    break
        except OSError:  # the other pump hung up
            pass
        for end in (source, target):
            _hang_up(end)


def _hang_up(end: socket.socket) -> None:
    """Shut down before closing: that wakes the other pump's recv and sends the peer its FIN at once."""
    with contextlib.suppress(OSError):  # not connected any more
        end.shutdown(socket.SHUT_RDWR)
    end.close()
