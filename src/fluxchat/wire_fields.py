"""Field kinds for the peer-link message schemas, and the error codes of the wire protocol.

A kind checks one field of a message: `decode` takes a CBOR value and raises
ProtocolError(MALFORMED); `encode` takes a Python value and raises ValueError, since a bad
outgoing value is our own bug. Records (such as NodeInfo) are arrays of their FIELDS.
"""

from __future__ import annotations

import enum
from typing import Any

from .errors import ProtocolError
from .records import record


class ErrorCode(enum.IntEnum):
    """Codes sent in Error (link-level, the link closes) and Fail (one request fails)."""

    MALFORMED = 1
    TOO_LARGE = 2
    UNKNOWN_TYPE = 3
    UNEXPECTED = 4
    UNSUPPORTED_VERSION = 5
    AUTH_FAILED = 6
    WORK_INSUFFICIENT = 7
    WORK_TOO_HARD = 8
    TIMEOUT = 9
    BUSY = 10
    DUPLICATE = 11
    SHUTDOWN = 12
    WRONG_ID = 13
    RATE_LIMITED = 14
    # request level (Fail)
    REFUSED = 20
    NOT_FOUND = 21
    FORBIDDEN = 22
    INVALID = 23
    INTERNAL = 24


ID_BYTES = 32
NONCE_BYTES = 32
UUID_BYTES = 16
MAX_TEXT = 255
MAX_PUBLIC_KEY = 2048
MAX_SIGNATURE = 1024
MAX_NODES = 64
MAX_ENVELOPES = 256
MAX_UUIDS = 256
MAX_MAIL_KEY_RECORD = 2048
_MAX_UINT = 2**64 - 1


def _malformed(text: str) -> ProtocolError:
    return ProtocolError(ErrorCode.MALFORMED, text)


# ----- field kinds ------------------------------------------------------------------------


class Kind:
    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def decode(self, raw: Any, where: str) -> Any:
        if not self.accepts(raw):
            raise _malformed(f"bad field {where}")
        return raw

    def encode(self, value: Any, where: str) -> Any:
        if not self.accepts(value):
            raise ValueError(f"bad value for {where}: {value!r:.80}")
        return value


@record
class Bytes(Kind):
    sizes: range

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bytes) and len(value) in self.sizes


@record
class Text(Kind):
    sizes: range

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and len(value) in self.sizes


@record
class UInt(Kind):
    low: int = 0
    high: int = _MAX_UINT

    def accepts(self, value: Any) -> bool:
        # bool is an int subclass in Python but a different CBOR type.
        return type(value) is int and self.low <= value <= self.high


class Bool(Kind):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


@record
class ListOf(Kind):
    item: Kind
    max_len: int

    def decode(self, raw: Any, where: str) -> tuple[Any, ...]:
        if not isinstance(raw, list) or len(raw) > self.max_len:
            raise _malformed(f"bad list {where}")
        return tuple(self.item.decode(x, f"{where}[{i}]") for i, x in enumerate(raw))

    def encode(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, (list, tuple)) or len(value) > self.max_len:
            raise ValueError(f"bad list for {where}")
        return [self.item.encode(x, f"{where}[{i}]") for i, x in enumerate(value)]


@record
class Record(Kind):
    """A nested record such as NodeInfo: an array of its own FIELDS."""

    cls: type

    def decode(self, raw: Any, where: str) -> Any:
        return decode_record(self.cls, raw, where)

    def encode(self, value: Any, where: str) -> list[Any]:
        if type(value) is not self.cls:
            raise ValueError(f"{where} must be a {self.cls.__name__}")
        return encode_record(value, where)


ID = Bytes(range(ID_BYTES, ID_BYTES + 1))
ID_OR_EMPTY = Bytes(range(0, ID_BYTES + 1, ID_BYTES))  # 0 or 32 bytes
NONCE = Bytes(range(NONCE_BYTES, NONCE_BYTES + 1))
UUID = Bytes(range(UUID_BYTES, UUID_BYTES + 1))
PUBLIC_KEY = Bytes(range(0, MAX_PUBLIC_KEY + 1))
SIGNATURE = Bytes(range(0, MAX_SIGNATURE + 1))
BLOB = Bytes(range(0, 2**32))  # envelopes: bounded by the frame size, checked by envelope.py
TEXT = Text(range(0, MAX_TEXT + 1))
HOST = Text(range(1, MAX_TEXT + 1))
UINT = UInt()
PORT = UInt(1, 65535)
BOOL = Bool()


# ----- records ----------------------------------------------------------------------------


def decode_record(cls: type, raw: Any, where: str) -> Any:
    schema: tuple[tuple[str, Kind], ...] = cls.FIELDS  # type: ignore[attr-defined]  # every record class has one
    if not isinstance(raw, list) or len(raw) != len(schema):
        raise _malformed(f"{where}: expected an array of {len(schema)} fields")
    values = [kind.decode(item, f"{where}.{name}") for (name, kind), item in zip(schema, raw, strict=True)]
    return cls(*values)


def encode_record(obj: Any, where: str) -> list[Any]:
    return [kind.encode(getattr(obj, name), f"{where}.{name}") for name, kind in obj.FIELDS]
