"""The link session: handshake and request bookkeeping as a sans-IO state machine.

The adapter feeds received bytes and the current time in, sends what `data_to_send()`
returns and acts on the returned events. Nothing here touches a socket, the clock or
the random source: nonces and `now` come from the caller, proof of work is solved by the
caller off the event loop (`WorkNeeded` → `work_done`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from . import messages as m
from . import pow as work
from .errors import IdentityError, ProtocolError
from .framing import (
    DEFAULT_MAX_PAYLOAD,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Frame,
    FrameDecoder,
    Prologue,
    encode_frame,
    encode_prologue,
)
from .identity import Identity, load_public_key, verify_signature
from .ids import id_from_spki
from .ratelimit import TokenBucket
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

AUTH_DOMAIN = b"fluxchat-auth-v1\x00"
FRAME_BYTES_PER_TOKEN = 65536
E = m.ErrorCode


def auth_payload(nonce: bytes, dialer_id: bytes, acceptor_id: bytes) -> bytes:
    """What the dialer signs: bound to this acceptor's nonce and to both identities."""
    return AUTH_DOMAIN + nonce + dialer_id + acceptor_id


class State(enum.Enum):
    AWAIT_PROLOGUE = "await-prologue"
    AWAIT_HELLO = "await-hello"          # acceptor
    AWAIT_CHALLENGE = "await-challenge"  # dialer
    SOLVING = "solving"                  # dialer, work runs outside
    AWAIT_AUTH = "await-auth"            # acceptor
    AWAIT_WELCOME = "await-welcome"      # dialer
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class SessionConfig:
    identity: Identity
    contact: str
    difficulty: int            # bits we demand of dialers
    max_difficulty: int        # bits we are willing to solve
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    ping_interval: float = 60.0
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_inflight: int = 64     # peer requests we have not answered yet
    # Every frame the peer sends, notices and pings included, spends from this budget
    # (one token, plus one per FRAME_BYTES_PER_TOKEN of payload). A peer in debt is not
    # read from until the budget has refilled: flooding only slows the flooder's own link.
    frame_rate: float = 250.0
    frame_burst: float = 1000.0
    # Acceptor: asked once the dialer has proved its ID, before Welcome; a refusal reason
    # closes the handshake with BUSY, so a dialer never gets a link we would close at once.
    admit: Callable[[bytes], str | None] | None = None


@dataclass
class _Handshake:
    peer_id: bytes = b""
    peer_key: bytes = b""
    contact: str = ""
    nonce: bytes = b""
    observed: str = ""
    version: int = PROTOCOL_VERSION


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
        self.hs = _Handshake()
        self.timers = _Timers(deadline=now + config.handshake_timeout, last_rx=now, last_use=now)
        self._decoder = FrameDecoder(config.max_payload)
        self._out = bytearray(encode_prologue())
        self._next_rid = 1
        self._inbound: set[int] = set()
        self._budget = TokenBucket(config.frame_rate, config.frame_burst, now)
        self.frames_received = 0
        self.closed_reason = ""
        self.established: Established | None = None

    # ----- construction -------------------------------------------------------------

    @classmethod
    def dialer(cls, config: SessionConfig, acceptor_key: bytes, now: float,
               expected_id: bytes | None = None) -> Session:
        """`acceptor_key` is the SPKI DER from the TLS certificate the acceptor proved."""
        session = cls(config, True, now)
        session.hs.peer_key = acceptor_key
        session.hs.peer_id = id_from_spki(acceptor_key)
        if expected_id is not None and expected_id != session.hs.peer_id:
            session._fail(E.WRONG_ID, "the certificate does not belong to the expected node")
            return session
        session._send(m.Hello(config.identity.node_id, session.hs.peer_id, config.contact))
        return session

    @classmethod
    def acceptor(cls, config: SessionConfig, nonce: bytes, now: float,
                 peer_host: str = "") -> Session:
        """`peer_host` is the dialer's address as we see it; we tell the dialer in Welcome."""
        session = cls(config, False, now)
        session.hs.nonce = nonce
        session.hs.observed = peer_host
        return session

    # ----- the adapter's interface ----------------------------------------------------

    @property
    def peer_id(self) -> bytes | None:
        return self.established.peer_id if self.established else None

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self.timers.last_rx = now
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
        return events

    def work_done(self, counter: int, signature: bytes | None = None) -> list[Event]:
        """The dialer's proof of work is ready: prove our identity. The adapter may pass
        the signature over `auth_payload(...)`, made off its event loop with the work."""
        if self.state is not State.SOLVING:
            return []
        me = self.config.identity
        if signature is None:
            signature = me.sign(auth_payload(self.hs.nonce, me.node_id, self.hs.peer_id))
        self._send(m.Auth(me.public_der, counter, signature))
        self.state = State.AWAIT_WELCOME
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
        message = m.decode_message(item.type, item.payload)
        if isinstance(message, m.Error):
            return self._closed(message.code, message.message, by_peer=True)
        handler = TRANSITIONS.get((self.state, type(message)))
        if handler is None and self.state is State.OPEN:
            handler = _open_handler(message)
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
        self.hs.version = prologue.version
        self.state = State.AWAIT_CHALLENGE if self.dialing else State.AWAIT_HELLO
        return []

    # acceptor side
    def _on_hello(self, hello: m.Hello) -> list[Event]:
        me = self.config.identity
        if hello.acceptor_id != me.node_id:
            raise ProtocolError(E.WRONG_ID, "this node is not the one you asked for")
        if hello.dialer_id == me.node_id:
            raise ProtocolError(E.AUTH_FAILED, "a node cannot link to itself")
        self.hs.peer_id, self.hs.contact = hello.dialer_id, hello.contact
        self._send(m.Challenge(me.node_id, self.hs.nonce, self.config.difficulty,
                               self.config.contact))
        self.state = State.AWAIT_AUTH
        return []

    def _on_auth(self, auth: m.Auth) -> list[Event]:
        me = self.config.identity
        # Cheapest check first: the proof of work costs us one hash.
        if not work.verify(self.hs.nonce, self.hs.peer_id, me.node_id, auth.work,
                           self.config.difficulty):
            raise ProtocolError(E.WORK_INSUFFICIENT, "proof of work does not meet the difficulty")
        if id_from_spki(auth.public_key) != self.hs.peer_id:
            raise ProtocolError(E.AUTH_FAILED, "public key does not hash to the claimed ID")
        try:
            key = load_public_key(auth.public_key)
        except IdentityError as exc:
            raise ProtocolError(E.AUTH_FAILED, str(exc)) from None
        if not verify_signature(key, auth.signature,
                                auth_payload(self.hs.nonce, self.hs.peer_id, me.node_id)):
            raise ProtocolError(E.AUTH_FAILED, "bad signature")
        refusal = self.config.admit(self.hs.peer_id) if self.config.admit else None
        if refusal is not None:
            raise ProtocolError(E.BUSY, refusal)
        self.hs.peer_key = auth.public_key
        self._send(m.Welcome(self.hs.observed[:255]))
        return self._open(observed_host="")

    # dialer side
    def _on_challenge(self, challenge: m.Challenge) -> list[Event]:
        if challenge.acceptor_id != self.hs.peer_id:
            raise ProtocolError(E.WRONG_ID, "challenge names another node than the certificate")
        if challenge.difficulty > self.config.max_difficulty:
            raise ProtocolError(E.WORK_TOO_HARD, f"difficulty {challenge.difficulty} is above "
                                                 f"our limit {self.config.max_difficulty}")
        self.hs.nonce, self.hs.contact = challenge.nonce, challenge.contact
        self.state = State.SOLVING
        me = self.config.identity
        return [WorkNeeded(challenge.nonce, challenge.difficulty, me.node_id, self.hs.peer_id)]

    def _on_welcome(self, welcome: m.Welcome) -> list[Event]:
        return self._open(observed_host=welcome.observed_host)

    def _open(self, observed_host: str) -> list[Event]:
        self.state = State.OPEN
        self.established = Established(self.hs.peer_id, self.hs.peer_key, self.hs.contact,
                                       observed_host, self.hs.version)
        return [self.established]

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

TRANSITIONS: dict[tuple[State, type], Handler] = {
    (State.AWAIT_HELLO, m.Hello): Session._on_hello,            # type: ignore[dict-item]
    (State.AWAIT_AUTH, m.Auth): Session._on_auth,               # type: ignore[dict-item]
    (State.AWAIT_CHALLENGE, m.Challenge): Session._on_challenge,  # type: ignore[dict-item]
    (State.AWAIT_WELCOME, m.Welcome): Session._on_welcome,      # type: ignore[dict-item]
    (State.OPEN, m.Ping): Session._on_ping,                     # type: ignore[dict-item]
}


def _open_handler(message: m.Message) -> Handler | None:
    """Routing on an open link follows the message's role, so new types need no entry here."""
    if type(message) in m.REQUEST_TYPES:
        return Session._on_request
    if type(message) in m.RESPONSE_TYPES:
        return Session._on_response
    if type(message) in m.NOTICE_TYPES:
        return Session._on_notice
    return None
