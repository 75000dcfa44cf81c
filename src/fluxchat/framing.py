"""Link framing: a versioned prologue, then length-prefixed frames.

    prologue = "FLUXCHAT" | u16 version            (10 bytes, big-endian)
    frame    = u32 payload length | u8 type | payload

The decoder is sans-IO: feed it whatever bytes arrived, in any chunking, and it returns the
complete items. An oversized length is refused as soon as the 5-byte header is in, before any
payload is read, and input is consumed only as far as the current item needs, so the buffer
never holds more than one header plus `max_payload` bytes (or the 10-byte prologue) whatever
the peer sends.
"""

from __future__ import annotations

from .errors import ProtocolError
from .messages import ErrorCode
from .records import record

PROLOGUE_MAGIC = b"FLUXCHAT"
PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS = (2,)
PROLOGUE_SIZE = len(PROLOGUE_MAGIC) + 2
HEADER_SIZE = 5
DEFAULT_MAX_PAYLOAD = 2 * 1024 * 1024
_MAX_U32 = 2**32 - 1


@record
class Prologue:
    version: int


@record
class Frame:
    type: int
    payload: bytes


def encode_prologue(version: int = PROTOCOL_VERSION) -> bytes:
    if not 0 <= version <= 0xFFFF:
        raise ValueError(f"version out of range: {version}")
    return PROLOGUE_MAGIC + version.to_bytes(2, "big")


def encode_frame(ftype: int, payload: bytes, max_payload: int) -> bytes:
    """One frame; ValueError if it would exceed what the peer accepts (a bug on our side)."""
    if not 0 <= ftype <= 0xFF:
        raise ValueError(f"frame type out of range: {ftype}")
    if len(payload) > min(max_payload, _MAX_U32):
        raise ValueError(f"payload of {len(payload)} bytes exceeds the limit {max_payload}")
    return len(payload).to_bytes(4, "big") + bytes((ftype,)) + bytes(payload)


class FrameDecoder:
    """Turns a received byte stream into a Prologue followed by Frames.

    The version is reported, not judged: the session decides what it supports and answers
    with UNSUPPORTED_VERSION. After any error the decoder stays failed and raises again."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        if not 0 <= max_payload <= _MAX_U32:
            raise ValueError(f"max_payload out of range: {max_payload}")
        self.max_payload = max_payload
        self._buf = bytearray()
        self._seen_prologue = False
        self._need = PROLOGUE_SIZE  # bytes the current item needs in the buffer
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that belong to an item not yet complete."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Prologue | Frame]:
        if self._error is not None:
            raise ProtocolError(self._error.code, self._error.message)
        try:
            return self._consume(memoryview(data))
        except ProtocolError as exc:
            self._error = exc
            self._buf.clear()
            raise

    def _consume(self, view: memoryview) -> list[Prologue | Frame]:
        items: list[Prologue | Frame] = []
        pos = 0
        while pos < len(view):
            take = min(self._need - len(self._buf), len(view) - pos)
            self._buf += view[pos:pos + take]
            pos += take
            if not self._seen_prologue:
                self._check_magic()
            if len(self._buf) == self._need:
                item = self._complete()
                if item is not None:
                    items.append(item)
        return items

    def _check_magic(self) -> None:
        """Reject a wrong peer (HTTP, TLS to the wrong port, …) on its first wrong byte."""
        head = bytes(self._buf[:len(PROLOGUE_MAGIC)])
        if not PROLOGUE_MAGIC.startswith(head):
            raise ProtocolError(ErrorCode.MALFORMED, "bad prologue: not a FluxChat peer")

    def _complete(self) -> Prologue | Frame | None:
        """The buffer holds exactly `_need` bytes: finish a prologue, header or frame."""
        buf = self._buf
        if not self._seen_prologue:
            self._seen_prologue = True
            version = int.from_bytes(buf[len(PROLOGUE_MAGIC):], "big")
            self._reset()
            return Prologue(version)
        if self._need == HEADER_SIZE:
            length = int.from_bytes(buf[:4], "big")
            if length > self.max_payload:
                raise ProtocolError(ErrorCode.TOO_LARGE,
                                    f"frame of {length} bytes exceeds {self.max_payload}")
            if length:
                self._need = HEADER_SIZE + length
                return None
        frame = Frame(buf[4], bytes(buf[HEADER_SIZE:]))
        self._reset()
        return frame

    def _reset(self) -> None:
        self._buf = bytearray()
        self._need = HEADER_SIZE
