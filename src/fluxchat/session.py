"""The link session: handshake and request bookkeeping as a sans-IO state machine.

The adapter feeds received bytes and the current time in, sends what `data_to_send()`
returns and acts on the returned events. Nothing here touches a socket, the clock or
the random source: nonces, `now` and the TLS session's binding come from the caller, proof
of work is solved by the caller off the event loop (`WorkNeeded` → `work_done`). Who proves
what before the link opens is handshake.py's, when a request may go before it opens
early_request.py's, bytes to frames (and the frame budget) session_frames.py's, the timers'
arithmetic session_timers.py's; this module gives each frame its meaning, keeps request IDs
in both directions and routes what arrives.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from . import messages as m
from .early_request import FirstRequest, drop_unread, fits
from .errors import ProtocolError
from .framing import PROTOCOL_VERSION, Frame
from .handshake import AcceptorHandshake, DialerHandshake, LinkContext, PeerCertificate
from .session_config import SessionConfig
from .session_events import (
    Closed,
    Established,
    Event,
    NoticeReceived,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    WorkNeeded,
)
from .session_frames import FramedSession, State
from .session_timers import LinkTimers

E = m.ErrorCode
Handshake = DialerHandshake | AcceptorHandshake


class Session(FramedSession):
    """One peer link. Build with `Session.dialer(...)` or `Session.acceptor(...)`."""

    def __init__(self, config: SessionConfig, dialing: bool, now: float) -> None:
        super().__init__(config, now)
        self.dialing = dialing
        self.handshake: Handshake | None = None
        self.timers = LinkTimers(config.idle_timeout, config.ping_interval,
                                 deadline=now + config.handshake_timeout, last_rx=now,
                                 last_use=now)
        self._next_rid = 1
        self._inbound: set[int] = set()
        self.established: Established | None = None
        self._first: FirstRequest | None = None   # dialer: our early request
        self._early = ""                          # acceptor: "served" or "dropped"

    # ----- construction -------------------------------------------------------------

    @classmethod
    def dialer(cls, config: SessionConfig, certificate: PeerCertificate, context: LinkContext,
               now: float, expected_id: bytes | None = None) -> Session:
        """`certificate` is what the acceptor's TLS certificate showed; the session checks
        it (record, pin) and sends our Hello, or closes at once."""
        session = cls(config, True, now)
        handshake = DialerHandshake(config, session._send, context, certificate,
                                    PROTOCOL_VERSION)
        session.handshake = handshake
        try:
            handshake.start(expected_id)
        except ProtocolError as exc:
            session._fail(exc.code, exc.message)
        return session

    @classmethod
    def acceptor(cls, config: SessionConfig, nonce: bytes, context: LinkContext, now: float,
                 peer_host: str = "") -> Session:
        """`peer_host` is the dialer's address as we see it; we tell the dialer in Welcome."""
        session = cls(config, False, now)
        session.handshake = AcceptorHandshake(config, session._send, context, nonce,
                                              peer_host, PROTOCOL_VERSION)
        return session

    # ----- the adapter's interface ----------------------------------------------------

    @property
    def peer_id(self) -> bytes | None:
        return self.established.peer_id if self.established else None

    @property
    def early(self) -> str:
        """How the early request went ("" if there was none): see FirstRequest.status."""
        return self._first.status if self._first is not None else self._early

    @property
    def claimed_id(self) -> bytes:
        """The peer's ID as claimed so far (verified only once established)."""
        if self.established is not None:
            return self.established.peer_id
        return self.handshake.peer_id if self.handshake is not None else b""

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self.timers.last_rx = now
        opening = self.state is not State.OPEN
        events = self._frames(data, now)
        if opening and not self.dialing and any(isinstance(e, RequestReceived) for e in events):
            self._early = "served"   # it came in the Hello's (or Work's) flight
        return events

    def work_done(self, counter: int) -> list[Event]:
        """The dialer's proof of work is ready: send it."""
        if isinstance(self.handshake, DialerHandshake) and self.state is State.HANDSHAKE:
            self.handshake.work_done(counter)
            self._release_first("with-work")   # read by the acceptor once Work proved us
        return []

    def send_request(self, build: Callable[[int], m.Message], now: float, timeout: float) -> int:
        """Send `build(rid)`; a response or a RequestFailed event follows for that rid."""
        rid = self._track(now, timeout, used=build is not m.Ping)
        self._send(build(rid))
        return rid

    def send_early(self, build: Callable[[int], m.Message], now: float, timeout: float,
                   with_hello: bool = True) -> int | None:
        """Dialer: the first request, sent with the Hello (`with_hello`: we expect no
        Challenge) or else behind Work, or after Welcome if no work was demanded. Its rid,
        or None if it cannot go early (not a fresh dialer, or over `max_early_request`)."""
        if not self.dialing or self.state is not State.AWAIT_PROLOGUE or self._first:
            return None
        message = build(self._next_rid)
        if not fits(message, self.config.max_early_request):
            return None
        self._first = FirstRequest(message, with_hello)
        if with_hello:
            self._send(message)
        return self._track(now, timeout, used=True)

    def respond(self, message: m.Message) -> None:
        """Answer a peer request; responses to unknown rids are dropped."""
        rid = getattr(message, "rid", None)
        if self.state is State.OPEN and rid in self._inbound:
            self._inbound.discard(rid)
            self._send(message)

    def notify(self, message: m.Message) -> None:
        if self.state is State.OPEN:
            self._send(message)

    def has_work(self) -> bool:
        """Requests in flight in either direction (our keepalive ping does not count)."""
        return bool(self.timers.requests() or self._inbound)

    def next_deadline(self) -> float:
        """When `tick` next has work to do; the adapter sleeps until then (inf: never)."""
        if self.state is State.CLOSED:
            return math.inf
        return self.timers.next_deadline(self.state is State.OPEN)

    def tick(self, now: float) -> list[Event]:
        """Timers: handshake deadline, request deadlines, keepalive and idle timeout."""
        if self.state is State.CLOSED:
            return []
        if self.state is not State.OPEN:
            if now >= self.timers.deadline:
                return self._fail(E.TIMEOUT, "handshake took too long")
            return []
        events: list[Event] = []
        for rid in self.timers.expire(now):
            if rid == self.timers.ping_rid:
                return events + self._fail(E.TIMEOUT, "keepalive not answered")
            events.append(RequestFailed(rid, "timeout"))
        if self.timers.idle(now):
            return events + self._fail(E.SHUTDOWN, "link unused, closing")
        if self.timers.ping_due(now):
            self.timers.ping_rid = self.send_request(m.Ping, now, self.config.ping_interval)
        return events

    # ----- internals --------------------------------------------------------------

    def _track(self, now: float, timeout: float, used: bool) -> int:
        rid = self._next_rid
        self._next_rid += 1
        self.timers.pending[rid] = now + timeout
        if used:
            self.timers.last_use = now
        return rid

    def _closed(self, code: int, text: str, by_peer: bool) -> list[Event]:
        failed: list[Event] = [RequestFailed(rid, "closed") for rid in self.timers.requests()]
        self.timers.pending.clear()
        return failed + super()._closed(code, text, by_peer)

    def _on_frame(self, item: Frame) -> list[Event]:
        if (self.state is State.HANDSHAKE and not self.dialing
                and m.MESSAGE_TYPES.get(item.type) in m.REQUEST_TYPES):
            drop_unread(item, bool(self.claimed_id), bool(self._early),
                        self.config.max_early_request)
            self._early = "dropped"
            return []
        message = m.decode_message(item.type, item.payload)
        if isinstance(message, m.Error):
            return self._closed(message.code, message.message, by_peer=True)
        if self.state is State.HANDSHAKE and type(message) in m.HANDSHAKE_TYPES:
            assert self.handshake is not None
            return self._opened(self.handshake.on_message(message))
        handler = _open_handler(message) if self.state is State.OPEN else None
        if handler is None:
            raise ProtocolError(E.UNEXPECTED, f"{type(message).__name__} not expected in "
                                              f"state {self.state.value}")
        if not isinstance(message, (m.Ping, m.Pong)):
            self.timers.last_use = self.timers.last_rx
        return handler(self, message)

    def _opened(self, events: list[Event]) -> list[Event]:
        for event in events:
            if isinstance(event, WorkNeeded) and self._first:
                self._first.challenged()   # the acceptor drops it unread: it goes behind Work
            if isinstance(event, Established):
                self.state = State.OPEN
                self.established = event
                self._release_first("after-welcome")
                # The handshake's state (the peer's Hello or certificate, our nonce, the
                # per-link settings and their callbacks) is of no use on an open link, which
                # lives for minutes: a node holds dozens (bench/README.md, "Links held").
                self.handshake = None
                self.config = self.config.opened()
        return events

    def _release_first(self, status: str) -> None:
        message = self._first.release(status) if self._first else None
        if message is not None:
            self._send(message)

    # open link
    def _on_ping(self, ping: m.Ping) -> list[Event]:
        self._send(m.Pong(ping.rid))
        return []

    def _on_request(self, message: m.Message) -> list[Event]:
        rid = message.rid  # type: ignore[attr-defined]
        if rid in self._inbound:
            raise ProtocolError(E.MALFORMED, "request id reused while in flight")
        if len(self._inbound) >= self.config.max_inflight:
            self._send(m.Fail(rid, int(E.RATE_LIMITED), "too many requests in flight"))
            return []
        self._inbound.add(rid)
        return [RequestReceived(message)]

    def _on_response(self, message: m.Message) -> list[Event]:
        rid = message.rid  # type: ignore[attr-defined]
        if self.timers.pending.pop(rid, None) is None or rid == self.timers.ping_rid:
            return []   # late answer after a timeout, or our keepalive: nothing to report
        return [ResponseReceived(rid, message)]

    def _on_notice(self, message: m.Message) -> list[Event]:
        return [NoticeReceived(message)]


Handler = Callable[[Session, m.Message], list[Event]]


def _open_handler(message: m.Message) -> Handler | None:
    """Routing on an open link follows the message's role, so new types need no entry here."""
    if type(message) is m.Ping:
        return Session._on_ping  # type: ignore[return-value]
    if type(message) in m.REQUEST_TYPES:
        return Session._on_request
    if type(message) in m.RESPONSE_TYPES:
        return Session._on_response
    if type(message) in m.NOTICE_TYPES:
        return Session._on_notice
    return None


__all__ = ["Session", "SessionConfig", "State", "LinkContext", "PeerCertificate", "Closed",
           "Established", "Event", "NoticeReceived", "RequestFailed", "RequestReceived",
           "ResponseReceived", "WorkNeeded"]
