"""Asyncio adapter for peer links: listen, dial, run sessions, match requests to answers.

Each link is one task that reads bytes, feeds the sans-IO Session and writes what it
returns. A misbehaving peer ends its own link with an error code and nothing else.

What a connection may cost us before it is a link: it needs a handshake slot (capped in
total, per source prefix, with room kept for addresses we know, see admission.py) and its
prefix must be within the connection rate. From accept to established runs one deadline
(the session's), and TLS must be done well before it. Only an established newcomer may
push out an idle link at the link cap; a bare connection never can. Proof of work is
demanded of dialers we do not know, that misbehaved, or while we are busy (workpolicy.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from . import messages as m
from . import tls_stream
from .admission import Admission
from .errors import FluxError
from .fairshare import FairShare
from .ids import short_id
from .lag_deadline import tls_deadline
from .link import EarlyRequest, Link, LinkClosed, RequestTimeout
from .link_loop import LinkLoop
from .link_registry import DialsInFlight, LinkCallback, LinkRegistry
from .link_serve import LinkServer, RequestHandler
from .link_setup import (
    FAULTS,
    DialError,
    NetLimits,
    accept_tls,
    acceptor_session,
    dial_tls,
    dialer_session,
    measure_hash_rate,
    run_handshake,
)
from .linkkeys import RecordCheck
from .logsetup import about_peer
from .ratelimit import RateLimiter
from .session import SessionConfig
from .session_events import Event
from .tasks import Background
from .tls import LinkTls, client_context
from .tls_stream import TlsStream
from .wire_fields import ErrorCode
from .workpolicy import WorkLimits, WorkPolicy

log = logging.getLogger("fluxchat.peer")
E = ErrorCode


class PeerNet:
    """Owns every peer link of a node; one link per peer ID."""

    def __init__(self, session_config: SessionConfig, limits: NetLimits,
                 on_request: RequestHandler, on_link: LinkCallback,
                 on_unlink: LinkCallback) -> None:
        self.config, self.limits = session_config, limits
        self.own_id = session_config.identity.node_id
        self.tls, self._client_ssl = LinkTls(session_config.identity), client_context()
        self.records = RecordCheck()
        self.registry = LinkRegistry(self.own_id, limits.max_links, limits.prefix_links(),
                                     on_link, on_unlink)
        self.links = self.registry.links
        self.admission = Admission(limits.admission())
        self.work = WorkPolicy(WorkLimits(session_config.difficulty, limits.busy(),
                                          limits.blame_seconds))
        # Mail requests from all links together, shared fairly (link_loop.py): many links
        # cannot multiply what one link may send.
        self.mail_budget = FairShare(*limits.mail_requests, time.monotonic())
        self._rate = RateLimiter(limits.connections_per_second,
                                 max(1.0, 4 * limits.connections_per_second))
        self._tasks = Background()
        self._serving = LinkServer(on_request, self._tasks)
        self._dials = DialsInFlight(self._tasks.spawn)
        self._server: asyncio.Server | None = None
        self.hash_rate = measure_hash_rate()
        self.refused = 0   # connections turned away before TLS (rate, slots)

    # ----- public interface ---------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        try:
            self._server = await tls_stream.listen(self._accept, host, port)
        except OSError as exc:
            raise FluxError(f"cannot listen for peers on {host}:{port}: "
                            f"{exc.strerror or exc}") from None
        return int(self._server.sockets[0].getsockname()[1])

    async def dial(self, host: str, port: int, expected_id: bytes | None = None,
                   early: EarlyRequest | None = None) -> Link:
        """A link to the node at host:port, authenticated as expected_id when given.

        Dials in flight are shared only by callers expecting the same ID at the same
        address, and every result is checked again: a link is never handed to a caller
        who expects another node, whatever shares its address. A new dial sends `early`
        behind its Hello if it can (early.answer is then set)."""
        if expected_id == self.own_id:
            raise DialError("refusing to dial ourselves")
        if expected_id is not None:
            existing = self.links.get(expected_id)
            if existing is not None and not existing.closed:
                return existing
        future = self._dials.join((host, port, expected_id), lambda future: self._dial(
            host, port, expected_id, future, early=early))
        link = await asyncio.shield(future)
        if expected_id is not None and link.peer_id != expected_id:
            raise DialError(f"{host}:{port} is node {short_id(link.peer_id)}, "
                            f"not {short_id(expected_id)}")
        return link

    async def request(self, host: str, port: int, node_id: bytes,
                      build: Callable[[int], m.Message]) -> m.Message:
        """Dial (or reuse) the link to node_id and send one request.

        A link can close under a request when a simultaneous dial from the peer wins the
        duplicate check; the request is then sent once more over the surviving link. A
        timeout is final: the peer had its chance, and the request may have been served.
        A new link carries the request with its Hello if we linked with the peer before (it
        has most likely kept us as known and asks no work), else with our Work."""
        for attempt in (1, 2):
            early = EarlyRequest(build, self.work.knows(node_id)) if attempt == 1 else None
            link = await self.dial(host, port, node_id, early=early)
            try:
                if early is not None and early.answer is not None:
                    return await early.answer
                return await link.request(build)
            except LinkClosed:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self.links.values()):
            link.close(E.SHUTDOWN, "node stopping")
        await self._tasks.close()
        if self._server is not None:
            await self._server.wait_closed()

    # ----- accepting ------------------------------------------------------------------

    async def _accept(self, stream: TlsStream) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.adopt(task)
        try:
            await self._accept_link(stream)
        except asyncio.CancelledError:
            stream.abort()   # the node is stopping

    async def _accept_link(self, stream: TlsStream) -> None:
        accepted = time.monotonic()
        peer = stream.get_extra_info("peername") or ("?", 0)
        host = str(peer[0])
        allowed = self._rate.allow(self.admission.key_of(host), accepted)
        slot = self.admission.admit(host) if allowed else "connection rate"
        if isinstance(slot, str):
            self.refused += 1
            log.info("refusing a connection from %s: %s", host, slot, extra=about_peer(host))
            stream.abort()
            return
        loop: LinkLoop | None = None
        try:
            loop = await self._inbound_handshake(stream, host, accepted)
        finally:
            # The one place a handshake slot is given back, however the handshake ended.
            self.admission.release(slot, established=loop is not None)
        if loop is not None:
            await self._serve_link(loop, (host, int(peer[1])), "in", None)

    async def _inbound_handshake(self, stream: TlsStream, host: str,
                                 accepted: float) -> LinkLoop | None:
        """TLS then the link handshake, all within one deadline counted from accept."""
        deadline = tls_deadline(accepted, self.limits.tls_timeout, self.config.handshake_timeout)
        credentials, server_ssl = self.tls.current()
        binding = await accept_tls(stream, server_ssl, deadline, host)
        if binding is None:
            return None
        source = self.admission.key_of(host)

        def work_for(peer_id: bytes, record: bytes) -> int:
            return self.work.difficulty(peer_id, record, source, self.admission.in_flight,
                                        time.monotonic())

        def room_for(peer_id: bytes) -> str | None:
            return self.registry.room_for(peer_id, host)

        session = acceptor_session(self.config, credentials, self.records, binding, accepted,
                                   host, work_for, room_for)
        loop = await run_handshake(LinkLoop(session, stream, self.limits.output), host)
        if loop is None and session.closed_code in FAULTS:
            self.work.blame(source, time.monotonic())
        return loop

    # ----- dialing ----------------------------------------------------------------------

    async def adopt(self, sock: socket.socket, expected_id: bytes, tls_server: bool) -> Link:
        """A link over a TCP connection made some other way (punch.py: a simultaneous open,
        where neither end accepted): one end takes the acceptor's part, the other dials."""
        if tls_server:
            # As if our listener had accepted it.
            await asyncio.get_running_loop().connect_accepted_socket(
                tls_stream.accepting(self._accept), sock)
            async with asyncio.timeout(self.config.handshake_timeout):
                while expected_id not in self.links:
                    await asyncio.sleep(0.01)
            return self.links[expected_id]
        host, port = sock.getpeername()[:2]
        future: asyncio.Future[Link] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._tasks.spawn(self._dial(host, port, expected_id, future, sock))
        return await asyncio.shield(future)

    async def _dial(self, host: str, port: int, expected_id: bytes | None,
                    future: asyncio.Future[Link], sock: socket.socket | None = None,
                    early: EarlyRequest | None = None) -> None:
        try:
            await self._dial_link(host, port, expected_id, future, sock, early)
        finally:
            if not future.done():
                future.set_exception(DialError(f"{host}:{port}: dial abandoned"))

    async def _dial_link(self, host: str, port: int, expected_id: bytes | None,
                         future: asyncio.Future[Link], sock: socket.socket | None = None,
                         early: EarlyRequest | None = None) -> None:
        started = time.monotonic()
        deadline = started + self.config.handshake_timeout
        try:
            stream, certificate, binding = await dial_tls(
                host, port, sock, self._client_ssl, deadline)
        except DialError as exc:
            future.set_exception(exc)
            return
        budget = int(self.hash_rate * max(0.0, deadline - time.monotonic()))   # hashes
        session = dialer_session(self.config, self.tls.current()[0], self.records, certificate,
                                 binding, started, budget, expected_id)
        if early is not None:
            early.rid = session.send_early(early.build, time.monotonic(),
                                           self.limits.request_timeout, early.with_hello)
        linked = self.links.get(session.claimed_id)
        if session.closed_code is None and linked is not None and not linked.closed:
            # An address we did not know belongs to a node we are linked to: use that link
            # (its peer proved the same key) rather than make a second one.
            stream.abort()
            future.set_result(linked)
            return
        loop = await run_handshake(LinkLoop(session, stream, self.limits.output),
                                   f"{host}:{port}", budget)
        if loop is None:
            reason = session.closed_reason or "link closed during handshake"
            future.set_exception(DialError(f"{host}:{port}: {reason}"))
            return
        await self._serve_link(loop, (host, port), "out", future, early)

    # ----- the link loop ------------------------------------------------------------------

    async def _serve_link(self, loop: LinkLoop, address: tuple[str, int], direction: str,
                          future: asyncio.Future[Link] | None,
                          early: EarlyRequest | None = None) -> None:
        established = loop.session.established
        assert established is not None
        link = Link(loop.session, loop.stream, direction, address, established,
                    time.monotonic(), self.limits.request_timeout, self.limits.output,
                    loop.rearm)
        self.work.learn(established.peer_id, established.link_record)
        loop.mail_budget = (self.mail_budget, established.peer_id.hex())
        survivor = self.registry.register(link)
        if early is not None and early.rid is not None and survivor is link:
            early.answer = link.expect(early.rid)
        if direction == "out" and not survivor.closed:
            self.admission.remember(address[0])   # a host we reached is a known peer too
        if future is not None and not future.done():
            if survivor.closed:
                future.set_exception(DialError(f"{address[0]}:{address[1]}: link cap reached"))
            else:
                future.set_result(survivor)

        async def on_event(event: Event) -> None:
            self._serving.on_event(link, event)

        try:
            await loop.run(on_event, until_open=False)
        finally:
            link.mark_closed()
            self.registry.forget(link)
            if loop.session.closed_code in FAULTS:
                now = time.monotonic()
                self.work.blame(link.peer_id, now)
                self.work.blame(self.admission.key_of(address[0]), now)


__all__ = ["PeerNet", "NetLimits", "DialError", "Link", "LinkClosed", "RequestTimeout"]
