"""Asyncio adapter for peer links: listen, dial, run sessions, match requests to answers.

Each link is one task that reads bytes, feeds the sans-IO Session and writes what it
returns. A misbehaving peer ends its own link with an error code and nothing else.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import messages as m
from . import pow as work
from .errors import FluxError, IdentityError
from .ids import short_id
from .link import Link, LinkClosed
from .ratelimit import RateLimiter
from .session import (
    Closed,
    Established,
    Event,
    NoticeReceived,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    Session,
    SessionConfig,
    State,
    WorkNeeded,
    auth_payload,
)
from .tasks import Background
from .tls import client_context, peer_certificate_key

log = logging.getLogger("fluxchat.peer")
READ_CHUNK = 65536
E = m.ErrorCode

RequestHandler = Callable[[Link, m.Message], Awaitable[m.Message | None]]
LinkCallback = Callable[[Link], None]


@dataclass(frozen=True)
class NetLimits:
    auth_timeout: float
    request_timeout: float
    max_links: int
    max_handshakes: int
    connections_per_second: float


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
        self._handshakes = 0
        self._rate = RateLimiter(limits.connections_per_second,
                                 max(1.0, 4 * limits.connections_per_second))
        self._tasks = Background()
        self._dials: dict[tuple[str, int, bytes | None], asyncio.Future[Link]] = {}
        self._server: asyncio.Server | None = None

    # ----- public interface ---------------------------------------------------------

    async def listen(self, host: str, port: int) -> int:
        try:
            self._server = await asyncio.start_server(self._accept, host, port)
        except OSError as exc:
            raise FluxError(f"cannot listen for peers on {host}:{port}: "
                            f"{exc.strerror or exc}") from None
        port_bound: int = self._server.sockets[0].getsockname()[1]
        return port_bound

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

    def _forget_dial(self, key: tuple[str, int, bytes | None],
                     done: asyncio.Future[Link]) -> None:
        # Once settled, a dial is not shared any more: later callers go through the
        # pinned link registry (or dial afresh), never through an old address match.
        if self._dials.get(key) is done:
            del self._dials[key]

    async def request(self, host: str, port: int, node_id: bytes,
                      build: Callable[[int], m.Message]) -> m.Message:
        """Dial (or reuse) the link to node_id and send one request.

        A link can close under a request when a simultaneous dial from the peer wins the
        duplicate check; the request is then sent once more over the surviving link.
        """
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

    # ----- accepting and dialing ----------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.adopt(task)
        try:
            await self._accept_link(reader, writer)
        except asyncio.CancelledError:
            # asyncio reports a cancelled connection task as an error; we cancel on close.
            writer.close()

    async def _accept_link(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        host = str(peer[0])
        if len(self.links) + self._handshakes >= self.limits.max_links:
            self._evict_idle_link()
        busy = (len(self.links) + self._handshakes >= self.limits.max_links
                or self._handshakes >= self.limits.max_handshakes)
        if busy or not self._rate.allow(host, time.monotonic()):
            log.info("refusing a connection from %s: %s", host, "busy" if busy else "rate limit")
            writer.close()
            return
        # Counted from the first byte until the link is open (see _handle), TLS and proof
        # of work included: that is the span a flood of half-open connections occupies.
        self._handshakes += 1
        session: Session | None = None
        try:
            await writer.start_tls(self._server_ssl, ssl_handshake_timeout=self.limits.auth_timeout)
            session = Session.acceptor(self.config, os.urandom(32), time.monotonic(), host)
            await self._run(session, reader, writer, "in", (host, int(peer[1])), None)
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
            log.info("connection from %s ended before a link: %s", host, type(exc).__name__)
        finally:
            if session is None or session.established is None:
                self._handshakes -= 1
            writer.close()

    async def _dial(self, host: str, port: int, expected_id: bytes | None,
                    future: asyncio.Future[Link]) -> None:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=self._client_ssl, server_hostname=None
                                        if _is_ip(host) else host,
                                        ssl_handshake_timeout=self.limits.auth_timeout),
                self.limits.auth_timeout)
            key = peer_certificate_key(writer.get_extra_info("ssl_object"))
            session = Session.dialer(self.config, key, time.monotonic(), expected_id)
            await self._run(session, reader, writer, "out", (host, port), future)
        except (TimeoutError, OSError, ssl.SSLError, IdentityError) as exc:
            if not future.done():
                future.set_exception(DialError(f"{host}:{port}: {_describe(exc)}"))
        finally:
            if not future.done():
                future.set_exception(DialError(f"{host}:{port}: link closed during handshake"))
            if writer is not None:
                writer.close()

    # ----- the link loop --------------------------------------------------------------

    async def _run(self, session: Session, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter, direction: str, address: tuple[str, int],
                   future: asyncio.Future[Link] | None) -> None:
        link: Link | None = None
        events: list[Event] = []
        try:
            while True:
                writer.write(session.data_to_send())
                for event in events:
                    link = await self._handle(event, session, writer, direction, address,
                                              link, future)
                if session.state is State.CLOSED:
                    writer.write(session.data_to_send())
                    await writer.drain()
                    return
                await writer.drain()
                try:
                    # Sleep until data or the session's next timer (the loop clock is
                    # time.monotonic); an idle link costs no wake-ups in between.
                    # asyncio.timeout_at, not wait_for: on 3.11 wait_for can lose a cancel.
                    async with asyncio.timeout_at(_finite(session.next_deadline())):
                        data = await reader.read(READ_CHUNK)
                except TimeoutError:
                    events = session.tick(time.monotonic())
                    continue
                if not data:
                    events = session.close(E.SHUTDOWN, "peer closed the connection")
                    continue
                events = session.receive_data(data, time.monotonic())
        except (OSError, ssl.SSLError) as exc:
            session.close(E.SHUTDOWN, _describe(exc))
        finally:
            if link is not None:
                link.mark_closed()
                self._forget(link)

    async def _handle(self, event: object, session: Session, writer: asyncio.StreamWriter,
                      direction: str, address: tuple[str, int], link: Link | None,
                      future: asyncio.Future[Link] | None) -> Link | None:
        if isinstance(event, WorkNeeded):
            # Hashing and an RSA signature: both in a worker thread, off the event loop.
            counter, signature = await asyncio.get_running_loop().run_in_executor(
                None, self._prove, event)
            session.work_done(counter, signature)
            writer.write(session.data_to_send())
        elif isinstance(event, Established):
            if direction == "in":
                self._handshakes -= 1
            link = Link(session, writer, direction, address, event, time.monotonic(),
                        self.limits.request_timeout)
            survivor = self._register(link)
            if future is not None and not future.done():
                future.set_result(survivor)
        elif isinstance(event, RequestReceived) and link is not None:
            self._tasks.spawn(self._serve(link, event.message))
        elif isinstance(event, NoticeReceived) and link is not None:
            self._tasks.spawn(self._serve(link, event.message))
        elif isinstance(event, (ResponseReceived, RequestFailed)) and link is not None:
            link.resolve(event)
        elif isinstance(event, Closed):
            level = logging.INFO if event.by_peer or event.code == E.SHUTDOWN else logging.WARNING
            who = short_id(link.peer_id) if link else f"{address[0]}:{address[1]}"
            log.log(level, "link %s closed (%s, code %d): %s", who,
                    "by peer" if event.by_peer else "by us", event.code, event.message)
        return link

    def _register(self, link: Link) -> Link:
        """Make `link` the link to its peer, or close it as a duplicate; returns the survivor."""
        existing = self.links.get(link.peer_id)
        if existing is not None and not existing.closed:
            # Both ends keep the link dialed by the smaller ID, so a simultaneous dial
            # in both directions ends with the same single link on both sides.
            if self._dialer_of(existing) <= self._dialer_of(link):
                link.close(E.DUPLICATE, "a link between us already exists")
                return existing
            existing.close(E.DUPLICATE, "replaced by a newer link")
        self.links[link.peer_id] = link
        log.info("link %s up (%s, %s:%d)", short_id(link.peer_id), link.direction, *link.address)
        self._on_link(link)
        return link

    def _evict_idle_link(self) -> None:
        """At the link cap, close the link unused the longest (none with requests in flight),
        so a node in a large network keeps answering newcomers instead of refusing them."""
        idle = [link for link in self.links.values() if link.idle_since() is not None]
        if idle:
            oldest = min(idle, key=lambda link: link.idle_since() or 0.0)
            log.info("link cap reached: closing the idle link to %s", short_id(oldest.peer_id))
            oldest.close(E.SHUTDOWN, "making room for another link")
            self._forget(oldest)

    def _prove(self, need: WorkNeeded) -> tuple[int, bytes]:
        counter = work.solve(need.nonce, need.dialer_id, need.acceptor_id, need.difficulty)
        payload = auth_payload(need.nonce, need.dialer_id, need.acceptor_id)
        return counter, self.config.identity.sign(payload)

    def _forget(self, link: Link) -> None:
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            self._on_unlink(link)

    def _dialer_of(self, link: Link) -> bytes:
        return self.own_id if link.direction == "out" else link.peer_id

    async def _serve(self, link: Link, message: m.Message) -> None:
        try:
            answer = await self._on_request(link, message)
        except Exception:  # a bug in one handler must not take the link down with it
            log.exception("handler for %s failed", type(message).__name__)
            rid = getattr(message, "rid", None)
            answer = None if rid is None else m.Fail(rid, int(E.INTERNAL), "internal error")
        if answer is not None:
            link.respond(answer)


def _finite(deadline: float) -> float | None:
    return None if deadline == float("inf") else deadline


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


__all__ = ["PeerNet", "NetLimits", "DialError", "Link", "LinkClosed"]
