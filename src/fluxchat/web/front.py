"""The web app's listening socket, bound at start; aiohttp is imported on the first connection.

Why: aiohttp and its parsers cost a node about 12 MiB of memory. Most of the time nobody has
the app open, so the node only holds the socket; the first browser to connect waits a few
hundred milliseconds while app.py loads, and the app then stays loaded.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import IpcError
from .auth import WebAuth

if TYPE_CHECKING:
    from .app import Api, WebApp

log = logging.getLogger("fluxchat.web")


class WebFront:
    def __init__(self, api: Api, auth: WebAuth, address: str, port: int, clock: Callable[[], float]) -> None:
        self.api, self.auth, self.address, self.clock = api, auth, address, clock
        self._requested_port = port
        self.port = 0
        self.app: WebApp | None = None
        self._sock: socket.socket | None = None
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        try:
            sock = socket.create_server((self.address, self._requested_port), family=family, backlog=128)
        except OSError as exc:
            raise IpcError("unavailable", f"cannot listen on {self.address}:{self._requested_port} "
                                          f"for the web app: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self._sock, self.port = sock, int(sock.getsockname()[1])
        asyncio.get_running_loop().add_reader(sock.fileno(), self._first_connection)

    @property
    def url(self) -> str:
        host = "[::1]" if self.address == "::1" else self.address
        return f"http://{host}:{self.port}"

    def _first_connection(self) -> None:
        assert self._sock is not None
        asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._loading = asyncio.ensure_future(self._load(self._sock))

    async def _load(self, sock: socket.socket) -> None:
        """aiohttp takes over the socket; the waiting connection is its first."""
        from .app import WebApp

        app = WebApp(self.api, self.auth, self.address, self.port, self.clock)
        try:
            await app.serve(sock)
        except Exception:   # keep the node up; the log says why the app is missing
            log.exception("the web app failed to start")
            return
        self.app = app

    async def close(self) -> None:
        if self._loading is not None:
            await asyncio.gather(self._loading, return_exceptions=True)
        if self.app is not None:
            await self.app.close()
        elif self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        if self._sock is not None:
            self._sock.close()
