"""Bytes to frames and back for one link session: the prologue and its version check, the
frame decoder, the peer's frame budget, and closing with an Error frame. What a frame means
is the Session's (session.py); this base class knows only that frames arrive in order and
that a protocol error closes the link. Pure: `now` comes in.
"""

from __future__ import annotations

import enum

from . import messages as m
from .errors import ProtocolError
from .framing import SUPPORTED_VERSIONS, Frame, FrameDecoder, Prologue, encode_frame, encode_prologue
from .ratelimit import TokenBucket
from .session_config import SessionConfig
from .session_events import Closed, Event

FRAME_BYTES_PER_TOKEN = 65536
# Requests for mail work (Deliver, Store, Fetch, Delete, DeliverMany): counted apart, for the
# node-wide budget that all links share (link_loop.py).
MAIL_REQUEST_TYPES = frozenset({0x20, 0x21, 0x22, 0x24, 0x26})
E = m.ErrorCode


class State(enum.Enum):
    AWAIT_PROLOGUE = "await-prologue"
    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


class FramedSession:
    def __init__(self, config: SessionConfig, now: float) -> None:
        self.config = config
        self.state = State.AWAIT_PROLOGUE
        self._decoder = FrameDecoder(config.max_payload)
        self._out = bytearray(encode_prologue())
        self._budget = TokenBucket(config.frame_rate, config.frame_burst, now)
        self.frames_received = 0
        self.mail_requests_received = 0
        self.closed_reason = ""
        self.closed_code: int | None = None   # set when we (not the peer) closed the link

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    def read_delay(self, now: float) -> float:
        """Seconds the adapter should wait before reading more: the peer's frame budget
        is in debt until then."""
        return self._budget.wait_time(now)

    def close(self, code: int = E.SHUTDOWN, message: str = "closing") -> list[Event]:
        if self.state is State.CLOSED:
            return []
        return self._fail(code, message)

    def _on_frame(self, frame: Frame) -> list[Event]:
        """What one frame (after the prologue) means; raises ProtocolError to close."""
        raise NotImplementedError

    def _frames(self, data: bytes, now: float) -> list[Event]:
        """Feed `data` in, frame by frame in order, until the session closes."""
        events: list[Event] = []
        try:
            for item in self._decoder.feed(data):
                if isinstance(item, Prologue):
                    self._on_prologue(item)
                    continue
                # Every frame spends the peer's budget, whatever it turns out to be.
                self.frames_received += 1
                self._budget.charge(now, 1 + len(item.payload) // FRAME_BYTES_PER_TOKEN)
                if item.type in MAIL_REQUEST_TYPES:
                    self.mail_requests_received += 1
                events.extend(self._on_frame(item))
                if self.state is State.CLOSED:
                    break
        except ProtocolError as exc:
            events.extend(self._fail(exc.code, exc.message))
        return events

    def _on_prologue(self, prologue: Prologue) -> None:
        if self.state is not State.AWAIT_PROLOGUE:
            raise ProtocolError(E.UNEXPECTED, "second prologue")
        if prologue.version not in SUPPORTED_VERSIONS:
            supported = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
            raise ProtocolError(E.UNSUPPORTED_VERSION,
                                f"protocol version {prologue.version} not supported; "
                                f"supported versions: {supported}")
        self.state = State.HANDSHAKE

    def _send(self, message: m.Message) -> None:
        ftype, payload = m.encode_message(message)
        self._out += encode_frame(ftype, payload, self.config.max_payload)

    def _fail(self, code: int, text: str) -> list[Event]:
        if self.state is State.CLOSED:
            return []
        self._send(m.Error(int(code), text[:255]))
        return self._closed(int(code), text, by_peer=False)

    def _closed(self, code: int, text: str, by_peer: bool) -> list[Event]:
        self.state = State.CLOSED
        self.closed_code = None if by_peer else code
        self.closed_reason = f"{'peer' if by_peer else 'we'} closed the link ({code}): {text}"
        return [Closed(code, text, by_peer)]
