"""Asyncio adapter for peer links: listen, dial, run sessions, match requests to answers.

Each link is one task that reads bytes, feeds the sans-IO Session and writes what it
returns. A misbehaving peer ends its own link with an error code and nothing else.

What a connection may cost us before it is a link: it needs a handshake slot (capped in
total, per source prefix, with room kept for addresses we know, see admission.py) and its
prefix must be within the connection rate. From accept to established runs one deadline
(the session's), and TLS must be done well before it. Only an established newcomer may
push out an idle link at the link cap; a bare connection never can.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import messages as m
from . import pow as work
from . import tls_stream
from .admission import Admission, AdmissionLimits, prefix_of
from .errors import FluxError, IdentityError
from .ids import id_from_spki, short_id
from .link import Link, LinkClosed, OutputLimits, RequestTimeout, shut
from .link_loop import LinkLoop
from .logsetup import about_peer
from .ratelimit import RateLimiter
from .session import Session, SessionConfig, auth_payload
from .session_events import Closed, Event, NoticeReceived, RequestFailed, RequestReceived, ResponseReceived, WorkNeeded
from .tasks import Background
from .tls import client_context, peer_certificate_key
from .wire_fields import ErrorCode

log = logging.getLogger("fluxchat.peer")
E = ErrorCode

RequestHandler = Callable[[Link, m.Message], Awaitable[m.Message | None]]
LinkCallback = Callable[[Link], None]


@dataclass(frozen=True)
class NetLimits:
    auth_timeout: float
    request_timeout: float
    max_links: int
    max_handshakes: int
    connections_per_second: float       # new connections per source prefix
    tls_timeout: float = 3.0            # accept to TLS done (a silent socket's lifetime)
    handshakes_per_prefix: int | None = None   # default: max_handshakes // 8, at least 1
    reserved_handshakes: int | None = None     # default: max_handshakes // 4
    output: OutputLimits = OutputLimits()

    def admission(self) -> AdmissionLimits:
        per_prefix = self.handshakes_per_prefix or max(1, self.max_handshakes // 8)
        reserved = (self.max_handshakes // 4 if self.reserved_handshakes is None
                    else self.reserved_handshakes)
        return AdmissionLimits(self.max_handshakes, per_prefix, reserved)


class DialError(FluxError):
    """A dial failed before a link was established."""


class PeerNet:
    """Owns every peer link of a node; one link per peer ID."""

    def __init__(self, session_config: SessionConfig, limits: NetLimits,
                 server_ssl: ssl.SSLContext, on_request: RequestHandler,
                 on_link: LinkCallback, on_unlink: LinkCallback) -> None:
        self.config, self.limits = session_config, limits
        self.own_id = session_config.identity.node_id
        self._server_ssl, self._client_ssl = server_ssl, client_context()
        self._on_request, self._on_link, self._on_unlink = on_request, on_link, on_unlink
        self.links: dict[bytes, Link] = {}
        self.admission = Admission(limits.admission())
        self._rate = RateLimiter(limits.connections_per_second,
                                 max(1.0, 4 * limits.connections_per_second))
        self._tasks = Background()
        self._dials: dict[tuple[str, int, bytes | None], asyncio.Future[Link]] = {}
        self._server: asyncio.Server | None = None
        self.hash_rate = _measure_hash_rate()
        self.refused = 0   # connections turned away before TLS (rate, slots)

    # ----- public interface ---------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        try:
            self._server = await tls_stream.listen(self._accept, host, port)
        except OSError as exc:
            raise FluxError(f"cannot listen for peers on {host}:{port}: "
                            f"{exc.strerror or exc}") from None
        return int(self._server.sockets[0].getsockname()[1])

    async def dial(self, host: str, port: int, expected_id: bytes | None = None) -> Link:
        """A link to the node at host:port, authenticated as expected_id when given.

        Dials in flight are shared only by callers expecting the same ID at the same
        address, and every result is checked again: a link is never handed to a caller
        who expects another node, whatever shares its address."""
        if expected_id == self.own_id:
            raise DialError("refusing to dial ourselves")
        if expected_id is not None:
            existing = self.links.get(expected_id)
            if existing is not None and not existing.closed:
                return existing
        key = (host, port, expected_id)
        future = self._dials.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            # Every waiter may be gone (cancelled lookups); the outcome is still consumed.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            future.add_done_callback(lambda done: self._forget_dial(key, done))
            self._dials[key] = future
            self._tasks.spawn(self._dial(host, port, expected_id, future))
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
        timeout is final: the peer had its chance, and the request may have been served."""
        for attempt in (1, 2):
            link = await self.dial(host, port, node_id)
            try:
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

    def _forget_dial(self, key: tuple[str, int, bytes | None],
                     done: asyncio.Future[Link]) -> None:
        # Once settled, a dial is not shared any more: later callers go through the
        # pinned link registry (or dial afresh), never through an old address match.
        if self._dials.get(key) is done:
            del self._dials[key]

    # ----- accepting ------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.adopt(task)
        try:
            await self._accept_link(reader, writer)
        except asyncio.CancelledError:
            # asyncio reports a cancelled connection task as an error; we cancel on close.
            writer.transport.abort()

    async def _accept_link(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        accepted = time.monotonic()
        peer = writer.get_extra_info("peername") or ("?", 0)
        host = str(peer[0])
        allowed = self._rate.allow(self.admission.key_of(host), accepted)
        slot = self.admission.admit(host) if allowed else "connection rate"
        if isinstance(slot, str):
            self.refused += 1
            log.info("refusing a connection from %s: %s", host, slot, extra=about_peer(host))
            writer.transport.abort()
            return
        loop: LinkLoop | None = None
        try:
            loop = await self._inbound_handshake(reader, writer, host, accepted)
        finally:
            # The one place a handshake slot is given back, however the handshake ended.
            self.admission.release(slot, established=loop is not None)
        if loop is not None:
            await self._serve_link(loop, (host, int(peer[1])), "in", None)

    async def _inbound_handshake(self, reader: asyncio.StreamReader,
                                 writer: asyncio.StreamWriter, host: str,
                                 accepted: float) -> LinkLoop | None:
        """TLS then the link handshake, all within one deadline counted from accept."""
        tls_deadline = accepted + min(self.limits.tls_timeout, self.config.handshake_timeout)
        try:
            async with asyncio.timeout_at(tls_deadline):
                await writer.start_tls(self._server_ssl)
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            log.info("connection from %s ended before a link: %s", host, _describe(exc),
                     extra=about_peer(host))
            shut(writer, 0)
            return None
        config = dataclasses.replace(self.config, admit=self._room_for)
        session = Session.acceptor(config, os.urandom(32), accepted, host)
        return await self._handshake(LinkLoop(session, reader, writer, self.limits.output),
                                     f"{host}")

    # ----- dialing ----------------------------------------------------------------------

    async def adopt(self, sock: socket.socket, expected_id: bytes, tls_server: bool) -> Link:
        """A link over a TCP connection made some other way (punch.py: a simultaneous open,
        where neither end accepted): one end takes the acceptor's part, the other dials."""
        if tls_server:
            # As if our listener had accepted it (a server-side stream for start_tls).
            await asyncio.get_running_loop().connect_accepted_socket(tls_stream.stream_protocol(self._accept), sock)
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
                    future: asyncio.Future[Link], sock: socket.socket | None = None) -> None:
        try:
            await self._dial_link(host, port, expected_id, future, sock)
        finally:
            if not future.done():
                future.set_exception(DialError(f"{host}:{port}: dial abandoned"))

    async def _dial_link(self, host: str, port: int, expected_id: bytes | None,
                         future: asyncio.Future[Link], sock: socket.socket | None = None
                         ) -> None:
        started = time.monotonic()
        deadline = started + self.config.handshake_timeout
        writer = None
        try:
            async with asyncio.timeout_at(deadline):
                if sock is not None:   # already connected (see adopt)
                    reader, writer = await asyncio.open_connection(
                        sock=sock, ssl=self._client_ssl, server_hostname="")
                else:
                    reader, writer = await asyncio.open_connection(
                        host, port, ssl=self._client_ssl,
                        server_hostname=None if _is_ip(host) else host)
            key = peer_certificate_key(writer.get_extra_info("ssl_object"))
        except (OSError, ssl.SSLError, TimeoutError, IdentityError) as exc:
            if writer is not None:
                writer.transport.abort()
            future.set_exception(DialError(f"{host}:{port}: {_describe(exc)}"))
            return
        linked = self.links.get(id_from_spki(key))
        if linked is not None and not linked.closed:
            # An address we did not know belongs to a node we are linked to: use that link
            # (its peer proved the same key) rather than make a second one.
            writer.transport.abort()
            future.set_result(linked)
            return
        # Refuse at once a challenge we could not solve before the deadline, and never
        # hash beyond that budget.
        budget = int(self.hash_rate * max(0.0, deadline - time.monotonic()))
        config = dataclasses.replace(self.config, max_difficulty=min(
            self.config.max_difficulty, work.affordable_difficulty(budget)))
        session = Session.dialer(config, key, started, expected_id)
        loop = await self._handshake(LinkLoop(session, reader, writer, self.limits.output),
                                     f"{host}:{port}", budget)
        if loop is None:
            reason = session.closed_reason or "link closed during handshake"
            future.set_exception(DialError(f"{host}:{port}: {reason}"))
            return
        await self._serve_link(loop, (host, port), "out", future)

    # ----- the link loop ------------------------------------------------------------------

    async def _handshake(self, loop: LinkLoop, who: str,
                         work_limit: int = 0) -> LinkLoop | None:
        """Run the session until it is open (the loop, ready to serve) or closed (None)."""
        async def on_event(event: Event) -> None:
            if isinstance(event, WorkNeeded):
                # Hashing and an RSA signature: both in a worker thread, off the event loop.
                try:
                    counter, signature = await asyncio.get_running_loop().run_in_executor(
                        None, self._prove, event, work_limit)
                except ValueError:
                    loop.session.close(E.TIMEOUT, "proof of work not found within our budget")
                    return
                loop.session.work_done(counter, signature)
            elif isinstance(event, Closed):
                self._log_closed(event, who)

        await loop.run(on_event, until_open=True)
        return loop if loop.session.established is not None else None

    async def _serve_link(self, loop: LinkLoop, address: tuple[str, int], direction: str,
                          future: asyncio.Future[Link] | None) -> None:
        established = loop.session.established
        assert established is not None
        link = Link(loop.session, loop.writer, direction, address, established,
                    time.monotonic(), self.limits.request_timeout, self.limits.output,
                    loop.rearm)
        survivor = self._register(link)
        if direction == "out" and not survivor.closed:
            self.admission.remember(address[0])   # a host we reached is a known peer too
        if future is not None and not future.done():
            if survivor.closed:
                future.set_exception(DialError(f"{address[0]}:{address[1]}: link cap reached"))
            else:
                future.set_result(survivor)

        async def on_event(event: Event) -> None:
            self._link_event(link, event)

        try:
            await loop.run(on_event, until_open=False)
        finally:
            link.mark_closed()
            self._forget(link)

    def _link_event(self, link: Link, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self._tasks.spawn(self._serve(link, event.message))
        elif isinstance(event, NoticeReceived):
            # A notice equal to one still waiting to be served adds nothing: a flood of
            # them read at once costs one handler run, not one task each.
            if event.message not in link.queued_notices:
                link.queued_notices.add(event.message)
                self._tasks.spawn(self._serve_notice(link, event.message))
        elif isinstance(event, (ResponseReceived, RequestFailed)):
            link.resolve(event)
        elif isinstance(event, Closed):
            self._log_closed(event, short_id(link.peer_id))

    def _log_closed(self, event: Closed, who: str) -> None:
        level = logging.INFO if event.by_peer or event.code in (
            E.SHUTDOWN, E.DUPLICATE) else logging.WARNING
        log.log(level, "link %s closed (%s, code %d): %s", who,
                "by peer" if event.by_peer else "by us", event.code, event.message,
                extra=about_peer(who.rpartition(":")[0] if ":" in who else who))

    def _register(self, link: Link) -> Link:
        """Make `link` the link to its peer, or close it; returns the link to use."""
        existing = self.links.get(link.peer_id)
        if existing is not None and not existing.closed:
            # Both ends keep the link dialed by the smaller ID, so a simultaneous dial
            # in both directions ends with the same single link on both sides. A second
            # link from the same dialer replaces the first: a dialer does not dial a peer it
            # has a link to (see _dial_link), so the old connection must have died on its
            # side, perhaps without our knowing.
            if self._dialer_of(existing) < self._dialer_of(link):
                link.close(E.DUPLICATE, "a link between us already exists")
                return existing
            existing.close(E.DUPLICATE, "replaced by a newer link")
        elif len(self.links) >= self.limits.max_links and not self._evict_idle_link():
            link.close(E.BUSY, "link cap reached")
            return link
        self.links[link.peer_id] = link
        log.info("link %s up (%s, %s:%d)", short_id(link.peer_id), link.direction, *link.address)
        # Outside the link loop: a failing callback is our bug, not the peer's, and must
        # not leave a registered link whose loop has died.
        asyncio.get_running_loop().call_soon(self._announce, link)
        return link

    def _room_for(self, peer_id: bytes) -> str | None:
        """Whether a dialer that proved `peer_id` can have a link (see _register)."""
        if peer_id in self.links or len(self.links) < self.limits.max_links:
            return None
        if any(link.idle_since() is not None for link in self.links.values()):
            return None
        return "link cap reached and every link is busy"

    def _announce(self, link: Link) -> None:
        if link.closed or self.links.get(link.peer_id) is not link:
            return
        try:
            self._on_link(link)
        except Exception:
            log.exception("setting up the link to %s failed", short_id(link.peer_id))

    def _evict_idle_link(self) -> bool:
        """At the link cap, make room for an authenticated newcomer: close the idle link
        (no request in flight) unused the longest, from the source prefix that holds the
        most links. So a crowd of identities from one place displaces its own links first,
        not those of everybody else. False if every link is busy."""
        per_prefix = collections.Counter(prefix_of(link.address[0])
                                         for link in self.links.values())
        idle = [link for link in self.links.values() if link.idle_since() is not None]
        if not idle:
            return False
        victim = min(idle, key=lambda link: (-per_prefix[prefix_of(link.address[0])],
                                             link.idle_since() or 0.0))
        log.info("link cap reached: closing the idle link to %s", short_id(victim.peer_id))
        victim.close(E.SHUTDOWN, "making room for another link")
        self._forget(victim)
        return True

    def _prove(self, need: WorkNeeded, limit: int) -> tuple[int, bytes]:
        counter = work.solve(need.nonce, need.dialer_id, need.acceptor_id, need.difficulty,
                             limit=max(1, limit))
        payload = auth_payload(need.nonce, need.dialer_id, need.acceptor_id)
        return counter, self.config.identity.sign(payload)

    def _forget(self, link: Link) -> None:
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            self._on_unlink(link)

    def _dialer_of(self, link: Link) -> bytes:
        return self.own_id if link.direction == "out" else link.peer_id

    async def _serve_notice(self, link: Link, message: m.Message) -> None:
        link.queued_notices.discard(message)   # from now on, an equal notice is news again
        await self._serve(link, message)

    async def _serve(self, link: Link, message: m.Message) -> None:
        try:
            answer = await self._on_request(link, message)
        except Exception:  # a bug in one handler must not take the link down with it
            log.exception("handler for %s failed", type(message).__name__,
                          extra=about_peer(link.peer_id))
            rid = getattr(message, "rid", None)
            answer = None if rid is None else m.Fail(rid, int(E.INTERNAL), "internal error")
        if answer is not None and not link.closed:
            await link.respond(answer)


def _measure_hash_rate(samples: int = 5, count: int = 2048) -> float:
    """Proof-of-work hashes per second on this machine: the best of a few short runs (a
    few milliseconds in all), so a run that lost the CPU to other work does not count."""
    best = 0.0
    for _ in range(samples):
        start = time.perf_counter()
        try:
            work.solve(bytes(32), bytes(32), bytes(32), work.MAX_DIFFICULTY, limit=count)
        except ValueError:
            pass
        best = max(best, count / max(time.perf_counter() - start, 1e-6))
    return best


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


__all__ = ["PeerNet", "NetLimits", "DialError", "Link", "LinkClosed", "RequestTimeout"]
