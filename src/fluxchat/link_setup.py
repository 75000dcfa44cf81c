"""From a TCP connection to an open link session: the limits that bound it, TLS at either
end, and the handshake run (proof of work off the event loop). PeerNet (peer_net.py) decides
who may connect and what becomes of the link; this module does the steps in between.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable

from . import pow as work
from . import tls_stream
from .admission import AdmissionLimits
from .config import Config
from .errors import FluxError, IdentityError
from .handshake import LinkContext, PeerCertificate
from .identity import Identity
from .lag_deadline import NOISE, LagDeadline
from .link import OutputLimits, shut
from .link_loop import LinkLoop
from .linkkeys import LinkCredentials, RecordCheck
from .logsetup import about_peer
from .records import record
from .session import Session
from .session_config import SessionConfig
from .session_events import Closed, Event, WorkNeeded
from .tls import channel_binding, peer_certificate
from .tls_stream import TlsStream
from .wire_fields import ErrorCode

log = logging.getLogger("fluxchat.peer")
E = ErrorCode
# Closing a link with one of these says the peer broke the rules: it pays work for a while.
FAULTS = frozenset({E.MALFORMED, E.TOO_LARGE, E.UNKNOWN_TYPE, E.UNEXPECTED, E.AUTH_FAILED,
                    E.WORK_INSUFFICIENT, E.TIMEOUT})


@record
class NetLimits:
    auth_timeout: float
    request_timeout: float
    max_links: int
    max_handshakes: int
    connections_per_second: float       # new connections per source prefix
    tls_timeout: float = 3.0            # accept to TLS done (a silent socket's lifetime)
    handshakes_per_prefix: int | None = None   # default: max_handshakes // 8, at least 1
    reserved_handshakes: int | None = None     # default: max_handshakes // 4
    links_per_prefix: int | None = None        # inbound; default: max_links // 8, at least 4
    busy_handshakes: int | None = None         # all pay work from here; max_handshakes // 2
    blame_seconds: float = 600.0               # misbehaviour costs work this long
    mail_requests: tuple[float, float] = (500.0, 2000.0)   # all links together: rate, burst
    output: OutputLimits = OutputLimits()

    def prefix_links(self) -> int:
        return self.links_per_prefix or max(4, self.max_links // 8)

    def busy(self) -> int:
        return self.busy_handshakes or max(1, self.max_handshakes // 2)

    def admission(self) -> AdmissionLimits:
        per_prefix = self.handshakes_per_prefix or max(1, self.max_handshakes // 8)
        reserved = (self.max_handshakes // 4 if self.reserved_handshakes is None
                    else self.reserved_handshakes)
        return AdmissionLimits(self.max_handshakes, per_prefix, reserved)


def link_settings(config: Config, identity: Identity) -> tuple[SessionConfig, NetLimits]:
    """The session settings and limits of a node's links, from its configuration."""
    client, links = config.client, config.links
    session = SessionConfig(
        identity=identity, contact="private", difficulty=config.challenge.min,
        max_difficulty=config.challenge.max, handshake_timeout=client.auth_timeout,
        idle_timeout=client.idle_timeout, ping_interval=client.ping_interval,
        max_inflight=links.requests_in_flight, frame_rate=links.frames_per_second,
        frame_burst=links.frame_burst)
    limits = NetLimits(
        client.auth_timeout, client.request_timeout, client.max_links, client.max_handshakes,
        client.connections_per_second, tls_timeout=links.tls_timeout,
        handshakes_per_prefix=links.handshakes_per_prefix,
        reserved_handshakes=links.reserved_handshakes, links_per_prefix=links.per_prefix,
        busy_handshakes=links.busy_handshakes, blame_seconds=links.blame_time,
        mail_requests=(links.mail_requests_per_second, links.mail_request_burst),
        output=OutputLimits(max_queued=links.max_queued_bytes,
                            write_timeout=links.write_timeout))
    return session, limits


class DialError(FluxError):
    """A dial failed before a link was established."""


async def accept_tls(stream: TlsStream, server_ssl: ssl.SSLContext,
                     deadline: LagDeadline, host: str) -> bytes | None:
    """TLS as the acceptor, done by `deadline` (loop time; moved later by our own stalls,
    lag_deadline.py); the channel binding, or None (logged, shut)."""
    loop = asyncio.get_running_loop()
    look: asyncio.TimerHandle | None = None
    try:
        # The timeout fires NOISE after the deadline's last look, so that look comes first.
        async with asyncio.timeout_at(deadline.due() + NOISE) as timeout:
            def follow() -> None:
                # A plain callback, not a task: after a stall it runs before the overdue
                # timeout (it was due earlier) and can still move it.
                nonlocal look
                now, before = loop.time(), deadline.due()
                deadline.woke(now)
                if deadline.due() != before:
                    timeout.reschedule(deadline.due() + NOISE)
                if not deadline.expired(now):
                    look = loop.call_later(deadline.wait(now), follow)

            look = loop.call_later(deadline.wait(loop.time()), follow)
            await stream.start_tls(server_ssl)
        return channel_binding(stream.ssl_object)
    except (OSError, ssl.SSLError, TimeoutError, EOFError, IdentityError) as exc:
        log.info("connection from %s ended before a link: %s", host, describe(exc),
                 extra=about_peer(host))
        shut(stream, 0)
        return None
    finally:
        if look is not None:
            look.cancel()


async def dial_tls(host: str, port: int, sock: socket.socket | None,
                   client_ssl: ssl.SSLContext, deadline: float
                   ) -> tuple[TlsStream, PeerCertificate, bytes]:
    """TCP (unless `sock` is already connected) and TLS as the dialer, done by `deadline`:
    the stream, what the acceptor's certificate shows and the channel binding."""
    stream = None
    try:
        async with asyncio.timeout_at(deadline):
            stream = await tls_stream.connect(host, port, sock)
            await stream.start_tls(client_ssl, server_side=False, server_hostname=None
                                   if sock is not None or is_ip(host) else host)
        return stream, peer_certificate(stream.ssl_object), channel_binding(stream.ssl_object)
    except (OSError, ssl.SSLError, TimeoutError, IdentityError) as exc:
        if stream is not None:
            stream.abort()
        raise DialError(f"{host}:{port}: {describe(exc)}") from None


def dialer_session(config: SessionConfig, link: LinkCredentials, records: RecordCheck,
                   certificate: PeerCertificate, binding: bytes, started: float, budget: int,
                   expected_id: bytes | None) -> Session:
    """Our session as the dialer (it sends our Hello at once). A challenge we could not
    solve within `budget` hashes, before the deadline, is refused at once."""
    config = dataclasses.replace(
        config, link=link, records=records,
        max_difficulty=min(config.max_difficulty, work.affordable_difficulty(budget)))
    return Session.dialer(config, certificate, LinkContext(binding, int(time.time())),
                          started, expected_id)


def acceptor_session(config: SessionConfig, link: LinkCredentials, records: RecordCheck,
                     binding: bytes, accepted: float, host: str,
                     work_for: Callable[[bytes, bytes], int],
                     admit: Callable[[bytes], str | None]) -> Session:
    """Our session as the acceptor of a dialer at `host` (a fresh nonce for its work)."""
    config = dataclasses.replace(config, admit=admit, link=link, records=records,
                                 work_for=work_for)
    return Session.acceptor(config, os.urandom(32), LinkContext(binding, int(time.time())),
                            accepted, host)


async def run_handshake(loop: LinkLoop, who: str, work_limit: int = 0) -> LinkLoop | None:
    """Run the session until it is open (the loop, ready to serve) or closed (None)."""
    async def on_event(event: Event) -> None:
        if isinstance(event, WorkNeeded):
            # Hashing runs in a worker thread, off the event loop.
            try:
                counter = await asyncio.get_running_loop().run_in_executor(
                    None, _prove, event, work_limit)
            except ValueError:
                loop.session.close(E.TIMEOUT, "proof of work not found within our budget")
                return
            loop.session.work_done(counter)
        elif isinstance(event, Closed):
            log_closed(event, who)

    await loop.run(on_event, until_open=True)
    return loop if loop.session.established is not None else None


def log_closed(event: Closed, who: str) -> None:
    level = logging.INFO if event.by_peer or event.code in (
        E.SHUTDOWN, E.DUPLICATE) else logging.WARNING
    log.log(level, "link %s closed (%s, code %d): %s", who,
            "by peer" if event.by_peer else "by us", event.code, event.message,
            extra=about_peer(who.rpartition(":")[0] if ":" in who else who))


def _prove(need: WorkNeeded, limit: int) -> int:
    return work.solve(need.nonce, need.dialer_id, need.acceptor_id, need.difficulty,
                      limit=max(1, limit))


def measure_hash_rate(samples: int = 5, count: int = 2048) -> float:
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


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
