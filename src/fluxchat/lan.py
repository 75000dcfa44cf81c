"""UDP adapter for LAN discovery: announce ourselves, suggest announced peers to the node."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from .discovery import decode_announcement, encode_announcement
from .ratelimit import RateLimiter

log = logging.getLogger("fluxchat.lan")
PER_SOURCE_RATE = 1.0       # announcements per second we act on from one address
TOTAL_RATE = 20.0           # … and from everyone together


class LanDiscovery(asyncio.DatagramProtocol):
    """Calls `on_peer(host, port, node_id)` for announcements worth a (pinned) dial."""

    def __init__(self, own_id: bytes, peer_port: int, target: str, port: int,
                 on_peer: Callable[[str, int, bytes], None]) -> None:
        self.own_id, self.peer_port, self.target, self.port = own_id, peer_port, target, port
        self.on_peer = on_peer
        self._per_source = RateLimiter(PER_SOURCE_RATE, 3.0)
        self._total = RateLimiter(TOTAL_RATE, TOTAL_RATE)
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Several nodes on one machine share the discovery port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("", self.port))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=sock)

    def announce(self) -> None:
        if self.transport is not None:
            self.transport.sendto(encode_announcement(self.own_id, self.peer_port),
                                  (self.target, self.port))

    async def run(self, interval: float) -> None:
        while True:
            self.announce()
            await asyncio.sleep(interval)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        announcement = decode_announcement(data)
        if announcement is None or announcement.node_id == self.own_id:
            return
        now = time.monotonic()
        if not (self._per_source.allow(addr[0], now) and self._total.allow("*", now)):
            return
        self.on_peer(addr[0], announcement.port, announcement.node_id)

    def error_received(self, exc: Exception) -> None:
        log.info("discovery socket: %s", exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
