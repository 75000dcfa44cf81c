"""Coordinated simultaneous open, the adapter: after mail went through a relay, try for a
direct link; the relay passes each side's port to the other and both connect at once.

Initiator A → relay R: `Punch(B, portA)`; R → B over its open link: `PunchOffer(A, hostA,
portA)`; B answers `PunchReady(portB)` and starts connecting; R answers A with
`PunchReady(hostB, portB)` and A connects too. A connection that forms becomes a normal,
fully authenticated link (peer_net.adopt): the smaller ID plays the TLS server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time

from . import messages as m
from .errors import FluxError
from .ids import short_id
from .link import Link
from .logsetup import about_peer
from .peer_net import PeerNet
from .punching import PUNCH_TIMEOUT, RELAY_PUNCHES_PER_SECOND, PunchBook, accept_offer, tls_server
from .ratelimit import RateLimiter
from .relay import Relays
from .tasks import Background
from .wire_fields import ErrorCode as E

log = logging.getLogger("fluxchat.punch")


class Puncher:
    def __init__(self, net: PeerNet, relays: Relays) -> None:
        self.net, self.relays = net, relays
        self.me = net.own_id
        self.book = PunchBook()
        self.tasks = Background()
        self._rate = RateLimiter(RELAY_PUNCHES_PER_SECOND, 3)

    def describe(self) -> dict[str, int]:
        return {"attempts": self.book.attempts, "direct": self.book.succeeded}

    # ----- as the relay --------------------------------------------------------------

    async def on_punch(self, link: Link, request: m.Punch) -> m.Message:
        target = self.net.links.get(request.node_id)
        if target is None or request.node_id not in self.relays.reservations:
            return m.Fail(request.rid, int(E.NOT_FOUND), "not relaying for that node")
        if not self._rate.allow(link.peer_id.hex(), time.monotonic()):
            return m.Fail(request.rid, int(E.RATE_LIMITED), "punch rate limited")
        try:
            answer = await target.request(lambda rid: m.PunchOffer(
                rid, link.peer_id, link.address[0], request.port), PUNCH_TIMEOUT)
        except FluxError as exc:
            return m.Fail(request.rid, int(E.REFUSED), f"target did not answer: {exc}")
        if not isinstance(answer, m.PunchReady):
            return m.Fail(request.rid, int(E.REFUSED), "target declined")
        return m.PunchReady(request.rid, target.address[0], answer.port)

    # ----- as the target ---------------------------------------------------------------

    def on_punch_offer(self, link: Link, request: m.PunchOffer) -> m.Message:
        peer = request.node_id
        if link.peer_id not in self.relays.relays:
            return m.Fail(request.rid, int(E.FORBIDDEN), "not one of our relays")
        if peer in self.net.links or peer == self.me or \
                not accept_offer(self.me, peer, peer in self.book.busy):
            return m.Fail(request.rid, int(E.REFUSED), "not now")
        try:
            sock = _bound_socket(request.host, 0)
        except (OSError, ValueError) as exc:
            return m.Fail(request.rid, int(E.INTERNAL), f"no socket: {exc}")
        port = sock.getsockname()[1]
        self.tasks.spawn(self._connect(sock, request.host, request.port, peer, False))
        return m.PunchReady(request.rid, "", port)

    # ----- as the initiator --------------------------------------------------------------

    def after_relayed(self, recipient: bytes, relay_id: bytes) -> None:
        """Mail just went through a relay: try for a direct link in the background."""
        if recipient not in self.net.links and self.book.due(recipient, time.monotonic()):
            self.tasks.spawn(self.attempt(recipient, relay_id))

    async def attempt(self, peer: bytes, relay_id: bytes) -> bool:
        relay = self.net.links.get(relay_id)
        if relay is None:
            return False
        try:
            sock = _bound_socket(relay.address[0], 0)
        except (OSError, ValueError):
            return False
        port = sock.getsockname()[1]
        try:
            reply = await relay.request(lambda rid: m.Punch(rid, peer, port), 2 * PUNCH_TIMEOUT)
        except FluxError as exc:
            sock.close()
            log.info("punch to %s via %s: %s", short_id(peer), short_id(relay_id), exc, extra=about_peer(peer))
            return False
        if not isinstance(reply, m.PunchReady) or not reply.host:
            sock.close()
            return False
        return await self._connect(sock, reply.host, reply.port, peer, True)

    # ----- both ends -----------------------------------------------------------------

    async def _connect(self, sock: socket.socket, host: str, port: int, peer: bytes,
                       counted: bool) -> bool:
        if counted:
            self.book.begin(peer)
        ok = False
        try:
            sock = await _simultaneous_connect(sock, host, port)
            link = await self.net.adopt(sock, peer, tls_server(self.me, peer))
            ok = link.peer_id == peer
            log.info("direct link to %s through the NATs: %s:%d", short_id(peer), host, port)
        except (OSError, TimeoutError, FluxError) as exc:
            sock.close()   # (closing twice is harmless)
            log.info("simultaneous open with %s (%s:%d) failed: %s", short_id(peer), host, port,
                     str(exc) or type(exc).__name__, extra=about_peer(peer))
        finally:
            if counted:
                self.book.end(peer, ok, time.monotonic())
        return ok


def _bound_socket(peer_host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(peer_host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setblocking(False)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    return sock


async def _simultaneous_connect(sock: socket.socket, host: str, port: int) -> socket.socket:
    """Connect until PUNCH_TIMEOUT; a refusal (the other end had not sent yet and has no NAT
    to drop our SYN) is retried from the same port."""
    loop = asyncio.get_running_loop()
    local_port = sock.getsockname()[1]
    deadline = time.monotonic() + PUNCH_TIMEOUT
    try:
        async with asyncio.timeout_at(loop.time() + PUNCH_TIMEOUT):
            while True:
                try:
                    await loop.sock_connect(sock, (host, port))
                    return sock
                except ConnectionRefusedError:
                    sock.close()
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
                    sock = _bound_socket(host, local_port)
    except BaseException:
        sock.close()
        raise
