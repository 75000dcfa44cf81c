"""The link session: handshake and request bookkeeping as a sans-IO state machine.

The adapter feeds received bytes and the current time in, sends what `data_to_send()`
returns and acts on the returned events. Nothing here touches a socket, the clock or
the random source: nonces, `now` and the TLS session's binding come from the caller, proof
of work is solved by the caller off the event loop (`WorkNeeded` → `work_done`). Who proves
what before the link opens is handshake.py's; this module frames, times and routes.

Early request (PROTOCOL.md §5.3): a dialer may send one small request right behind its
Hello, or behind its Work. The acceptor reads frames in order, so such a request is read
only once the message before it has been dealt with: after a Welcome it is an ordinary
request of an authenticated peer; after a Challenge it is dropped unread (the dialer sends
it again behind its Work).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from . import messages as m
from .errors import ProtocolError
from .framing import (
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Frame,
    FrameDecoder,
    Prologue,
    encode_frame,
    encode_prologue,
)
from .handshake import AcceptorHandshake, DialerHandshake, LinkContext, PeerCertificate
from .ratelimit import TokenBucket
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

FRAME_BYTES_PER_TOKEN = 65536
E = m.ErrorCode
Handshake = DialerHandshake | AcceptorHandshake


class State(enum.Enum):
    AWAIT_PROLOGUE = "await-prologue"
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class _Timers:
    deadline: float                  # handshake deadline, then unused
    last_rx: float                   # any bytes: the peer is alive
    last_use: float                  # a request or notice either way: the link is useful
    ping_rid: int | None = None
    pending: dict[int, float] = field(default_factory=dict)   # rid -> deadline


class Session:
    """One peer link. Build with `Session.dialer(...)` or `Session.acceptor(...)`."""

    def __init__(self, config: SessionConfig, dialing: bool, now: float) -> None:
        self.config = config
        self.dialing = dialing
        self.state = State.AWAIT_PROLOGUE
        self.handshake: Handshake | None = None
        self.timers = _Timers(deadline=now + config.handshake_timeout, last_rx=now, last_use=now)
        self._decoder = FrameDecoder(config.max_payload)
        self._out = bytearray(encode_prologue())
        self._next_rid = 1
        self._inbound: set[int] = set()
        self._budget = TokenBucket(config.frame_rate, config.frame_burst, now)
        self.frames_received = 0
        self.closed_reason = ""
        self.closed_code: int | None = None   # set when we (not the peer) closed the link
        self.established: Established | None = None
        # Early request (send_early): the dialer's is "held", "sent" (with Hello), "resend"
        # (challenged), "with-work" or "after-welcome"; the acceptor's "served" or "dropped".
        self.early = ""
        self._early: m.Message | None = None

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
    def claimed_id(self) -> bytes:
        """The peer's ID as claimed so far (verified only once established)."""
        return self.handshake.peer_id if self.handshake is not None else b""

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self.timers.last_rx = now
        opening = self.state is not State.OPEN
        events: list[Event] = []
        try:
            for item in self._decoder.feed(data):
                if isinstance(item, Frame):
                    self._spend(item, now)
                events.extend(self._dispatch(item))
                if self.state is State.CLOSED:  # type: ignore[comparison-overlap]  # _dispatch may close
                    break
        except ProtocolError as exc:
            events.extend(self._fail(exc.code, exc.message))
        if opening and not self.dialing and any(isinstance(e, RequestReceived) for e in events):
            self.early = "served"   # it came in the Hello's flight
        return events

    def work_done(self, counter: int) -> list[Event]:
        """The dialer's proof of work is ready: send it."""
        if isinstance(self.handshake, DialerHandshake) and self.state is State.HANDSHAKE:
            self.handshake.work_done(counter)
            self._release_early("with-work")   # read by the acceptor once Work proved us
        return []

    def send_request(self, build: Callable[[int], m.Message], now: float, timeout: float) -> int:
        """Send `build(rid)`; a response or a RequestFailed event follows for that rid."""
        rid = self._next_rid
        self._next_rid += 1
        self.timers.pending[rid] = now + timeout
        if build is not m.Ping:
            self.timers.last_use = now
        self._send(build(rid))
        return rid

    def send_early(self, build: Callable[[int], m.Message], now: float, timeout: float,
                   with_hello: bool = True) -> int | None:
        """Dialer: the first request, sent with the Hello (`with_hello`: we expect no
        Challenge) or else behind Work, or after Welcome if no work was demanded. Its rid,
        or None if it cannot go early (not a fresh dialer, or over `max_early_request`)."""
        if not self.dialing or self.state is not State.AWAIT_PROLOGUE or self._early is not None:
            return None
        rid = self._next_rid
        message = build(rid)
        if len(m.encode_message(message)[1]) > self.config.max_early_request:
            return None
        self._next_rid += 1
        self.timers.pending[rid] = now + timeout
        self.timers.last_use = now
        self._early, self.early = message, "held"
        if with_hello:
            self._release_early("sent")
        return rid

    def respond(self, message: m.Message) -> None:
        """Answer a peer request; responses to unknown rids are dropped."""
        rid = getattr(message, "rid", None)
        if self.state is State.OPEN and rid in self._inbound:
            self._inbound.discard(rid)
            self._send(message)

    def notify(self, message: m.Message) -> None:
        if self.state is State.OPEN:
            self._send(message)

    def close(self, code: int = E.SHUTDOWN, message: str = "closing") -> list[Event]:
        if self.state is State.CLOSED:
            return []
        return self._fail(code, message)

    def read_delay(self, now: float) -> float:
        """Seconds the adapter should wait before reading more: the peer's frame budget
        is in debt until then."""
        return self._budget.wait_time(now)

    def has_work(self) -> bool:
        """Requests in flight in either direction (our keepalive ping does not count)."""
        ours = [rid for rid in self.timers.pending if rid != self.timers.ping_rid]
        return bool(ours or self._inbound)

    def next_deadline(self) -> float:
        """When `tick` next has work to do; the adapter sleeps until then (inf: never)."""
        if self.state is State.CLOSED:
            return math.inf
        if self.state is not State.OPEN:
            return self.timers.deadline
        timers = self.timers
        deadlines = list(timers.pending.values())
        if not timers.pending:
            deadlines.append(timers.last_use + self.config.idle_timeout)
        if timers.ping_rid not in timers.pending:
            deadlines.append(timers.last_rx + self.config.ping_interval)
        return min(deadlines)

    def tick(self, now: float) -> list[Event]:
        """Timers: handshake deadline, request deadlines, keepalive and idle timeout."""
        if self.state is State.CLOSED:
            return []
        if self.state is not State.OPEN:
            if now >= self.timers.deadline:
                return self._fail(E.TIMEOUT, "handshake took too long")
            return []
        events: list[Event] = []
        for rid, deadline in list(self.timers.pending.items()):
            if deadline <= now:
                del self.timers.pending[rid]
                if rid == self.timers.ping_rid:
                    return events + self._fail(E.TIMEOUT, "keepalive not answered")
                events.append(RequestFailed(rid, "timeout"))
        # Keepalive pings prove the peer alive but do not make an unused link worth keeping.
        if now - self.timers.last_use >= self.config.idle_timeout and not self.timers.pending:
            return events + self._fail(E.SHUTDOWN, "link unused, closing")
        quiet = now - self.timers.last_rx
        if quiet >= self.config.ping_interval and self.timers.ping_rid not in self.timers.pending:
            self.timers.ping_rid = self.send_request(m.Ping, now, self.config.ping_interval)
        return events

    # ----- internals --------------------------------------------------------------

    def _send(self, message: m.Message) -> None:
        ftype, payload = m.encode_message(message)
        self._out += encode_frame(ftype, payload, self.config.max_payload)

    def _spend(self, frame: Frame, now: float) -> None:
        self.frames_received += 1
        self._budget.charge(now, 1 + len(frame.payload) // FRAME_BYTES_PER_TOKEN)

    def _fail(self, code: int, text: str) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._send(m.Error(int(code), text[:255]))
        return self._closed(int(code), text, by_peer=False)

    def _closed(self, code: int, text: str, by_peer: bool) -> list[Event]:
        self.state = State.CLOSED
        self.closed_code = None if by_peer else code
        self.closed_reason = f"{'peer' if by_peer else 'we'} closed the link ({code}): {text}"
        failed: list[Event] = [RequestFailed(rid, "closed") for rid in self.timers.pending
                               if rid != self.timers.ping_rid]
        self.timers.pending.clear()
        return failed + [Closed(code, text, by_peer)]

    def _dispatch(self, item: Prologue | Frame) -> list[Event]:
        if isinstance(item, Prologue):
            if self.state is not State.AWAIT_PROLOGUE:
                raise ProtocolError(E.UNEXPECTED, "second prologue")
            return self._on_prologue(item)
        if (self.state is State.HANDSHAKE and not self.dialing
                and m.MESSAGE_TYPES.get(item.type) in m.REQUEST_TYPES):
            return self._drop_early(item)
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

    def _on_prologue(self, prologue: Prologue) -> list[Event]:
        if prologue.version not in SUPPORTED_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            raise ProtocolError(E.UNSUPPORTED_VERSION,
                                f"protocol version {prologue.version} not supported; "
                                f"supported versions: {supported}")
        self.state = State.HANDSHAKE
        return []

    def _opened(self, events: list[Event]) -> list[Event]:
        for event in events:
            if isinstance(event, WorkNeeded) and self.early == "sent":
                self.early = "resend"   # the acceptor drops it unread: it goes behind Work
            if isinstance(event, Established):
                self.state = State.OPEN
                self.established = event
                self._release_early("after-welcome")
        return events

    def _release_early(self, status: str) -> None:
        if self._early is not None and self.early in ("held", "resend"):
            self._send(self._early)
            self.early = status

    def _drop_early(self, frame: Frame) -> list[Event]:
        """A request behind a Hello that was answered with a Challenge: the dialer is not
        authenticated, so the request is dropped unread; it still spent the frame budget."""
        if not self.claimed_id or self.early:
            raise ProtocolError(E.UNEXPECTED, "request before the link is open")
        if len(frame.payload) > self.config.max_early_request:
            raise ProtocolError(E.TOO_LARGE, "early request over "
                                             f"{self.config.max_early_request} bytes")
        self.early = "dropped"
        return []

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
