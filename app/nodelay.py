"""uvicorn's HTTP protocol with Nagle's algorithm off on every connection.

With ``--workers N`` uvicorn binds the listening socket itself with ``proto`` 0, so asyncio does not set
TCP_NODELAY on accepted connections (uvicorn issue #3149); a response's body then waits for the client's delayed
ACK of its headers, 40 ms per keep-alive request on Linux. Setting it here serves one worker and N alike.
"""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)  # type: ignore[arg-type]
