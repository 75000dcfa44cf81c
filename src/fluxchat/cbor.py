"""A strict subset of canonical CBOR (RFC 8949 §4.2.1, core deterministic encoding).

Why a subset: the wire format and signed envelope contents only need integers, byte and
text strings, arrays, maps, booleans and null. Accepting nothing else (no floats, tags,
indefinite lengths, non-shortest heads, unsorted maps) means every value has exactly one
encoding, so signatures over encodings are unambiguous and a decoder has little surface.

`loads` is written for hostile input: every length is checked against the bytes that remain
before anything is allocated, nesting depth and total item count are bounded, and every
failure is a `CborError` (a `ProtocolError` with code MALFORMED).
"""

from __future__ import annotations

import struct
from typing import Any

from .errors import ProtocolError

# ErrorCode.MALFORMED in messages.py; repeated here because messages imports this module.
_MALFORMED = 1

_UINT, _NINT, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_FALSE, _TRUE, _NULL = 0xF4, 0xF5, 0xF6
_MAX_UINT = 2**64 - 1
_MIN_INT = -(2**64)


class CborError(ProtocolError):
    """The bytes are not one well-formed item of our canonical CBOR subset."""

    def __init__(self, message: str) -> None:
        super().__init__(_MALFORMED, f"cbor: {message}")


# ----- encoding -----------------------------------------------------------------------

# Heads are built from a table (arguments below 24) or one struct call: the encoder runs
# for every frame and every envelope, so it avoids generic int.to_bytes calls.
_SMALL_HEADS = tuple(bytes((b,)) for b in range(256))
_HEAD_16, _HEAD_32, _HEAD_64 = struct.Struct(">BH"), struct.Struct(">BI"), struct.Struct(">BQ")


def _head(major: int, value: int) -> bytes:
    """The shortest head for (major type, argument), as deterministic encoding demands."""
    prefix = major << 5
    if value < 24:
        return _SMALL_HEADS[prefix | value]
    if value < 0x100:
        return bytes((prefix | 24, value))
    if value < 0x10000:
        return _HEAD_16.pack(prefix | 25, value)
    if value < 0x100000000:
        return _HEAD_32.pack(prefix | 26, value)
    return _HEAD_64.pack(prefix | 27, value)


def _encode_int(value: int) -> bytes:
    if not _MIN_INT <= value <= _MAX_UINT:
        raise ValueError(f"integer out of CBOR range: {value}")
    if value >= 0:
        return _head(_UINT, value)
    return _head(_NINT, -1 - value)


def _encode_map(obj: dict[Any, Any], out: bytearray) -> None:
    """Keys are sorted by their encoded bytes (bytewise lexicographic, RFC 8949 §4.2.1)."""
    pairs = []
    for key, value in obj.items():
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise TypeError(f"map keys must be int or str, got {type(key).__name__}")
        pairs.append((dumps(key), value))
    pairs.sort(key=lambda pair: pair[0])
    out += _head(_MAP, len(pairs))
    for key_bytes, value in pairs:
        out += key_bytes
        _encode_into(value, out)


def _encode_into(obj: object, out: bytearray) -> None:
    # Exact types first (the common case; bool is not `int` here), then the general rules.
    if type(obj) is bytes:
        out += _head(_BYTES, len(obj))
        out += obj
    elif type(obj) is int and 0 <= obj < 24:
        out.append(obj)
    elif type(obj) is str:
        raw = obj.encode("utf-8")  # lone surrogates raise UnicodeEncodeError (a ValueError)
        out += _head(_TEXT, len(raw))
        out += raw
    elif type(obj) is list or type(obj) is tuple:
        out += _head(_ARRAY, len(obj))
        for item in obj:
            _encode_into(item, out)
    else:
        _encode_other(obj, out)


def _encode_other(obj: object, out: bytearray) -> None:
    # bool before int: bool is a subclass of int in Python.
    if obj is None:
        out.append(_NULL)
    elif isinstance(obj, bool):
        out.append(_TRUE if obj else _FALSE)
    elif isinstance(obj, int):
        out += _encode_int(obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        out += _head(_BYTES, len(raw)) + raw
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        out += _head(_TEXT, len(raw)) + raw
    elif isinstance(obj, (list, tuple)):
        out += _head(_ARRAY, len(obj))
        for item in obj:
            _encode_into(item, out)
    elif isinstance(obj, dict):
        _encode_map(obj, out)
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as CBOR")


def dumps(obj: object) -> bytes:
    """Canonical encoding of `obj`; TypeError for unsupported types, ValueError for
    out-of-range integers or strings that are not valid Unicode."""
    out = bytearray()
    _encode_into(obj, out)
    return bytes(out)


def bytes_head(length: int) -> bytes:
    """The head of a byte string of `length` bytes: head ‖ bytes is its encoding, for
    writers that join large strings once instead of copying them into an encoder's buffer."""
    return _head(_BYTES, length)


def text_head(length: int) -> bytes:
    """The head of a text string of `length` UTF-8 bytes (see bytes_head)."""
    return _head(_TEXT, length)


# ----- decoding -----------------------------------------------------------------------

# Smallest argument that needs 1, 2, 4 or 8 bytes (additional info 24..27): anything
# smaller is a non-shortest encoding.
_FLOORS = (24, 1 << 8, 1 << 16, 1 << 32)
_WIDTHS = (1, 2, 4, 8)


class _Reader:
    """One pass over the input with the decoder's budgets. Written for speed (it decodes
    every frame and envelope): heads are parsed inline, positions are plain ints."""

    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.end = len(data)
        self.max_depth = max_depth
        self.items_left = max_items

    def count_items(self, count: int) -> None:
        self.items_left -= count
        if self.items_left < 0:
            raise CborError("too many items")

    def item(self, pos: int, depth: int) -> tuple[object, int]:
        """The item starting at `pos` and the position after it."""
        if depth > self.max_depth:
            raise CborError("nesting too deep")
        data, end = self.data, self.end
        if pos >= end:
            raise CborError("truncated input")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            arg = info
        elif info <= 27:
            if major == _SIMPLE:
                raise CborError("floats and extended simple values are not allowed")
            after = pos + _WIDTHS[info - 24]
            if after > end:
                raise CborError("truncated input")
            arg = int.from_bytes(data[pos:after], "big")
            if arg < _FLOORS[info - 24]:
                raise CborError("non-shortest integer or length")
            pos = after
        else:
            # 28-30 are reserved; 31 is indefinite length or "break": none is canonical.
            raise CborError("reserved or indefinite-length head")
        if major == _BYTES or major == _TEXT:
            after = pos + arg   # checked against the input before anything is copied
            if after > end:
                raise CborError("truncated input")
            raw = data[pos:after]
            if major == _BYTES:
                return raw, after
            try:
                return raw.decode("utf-8"), after
            except UnicodeDecodeError:
                raise CborError("invalid UTF-8 in text string") from None
        if major == _UINT:
            return arg, pos
        if major == _ARRAY:
            if arg > end - pos:  # each item needs at least one byte
                raise CborError("array longer than the input")
            self.count_items(arg)
            items: list[object] = []
            for _ in range(arg):
                value, pos = self.item(pos, depth + 1)
                items.append(value)
            return items, pos
        if major == _NINT:
            return -1 - arg, pos
        if major == _MAP:
            return self.map(pos, arg, depth)
        if major == _TAG:
            raise CborError("tags are not allowed")
        return _read_simple(info), pos

    def map(self, pos: int, length: int, depth: int) -> tuple[dict[object, object], int]:
        if 2 * length > self.end - pos:
            raise CborError("map longer than the input")
        self.count_items(2 * length)
        result: dict[object, object] = {}
        previous: bytes | None = None
        for _ in range(length):
            start = pos
            key, pos = self.item(pos, depth + 1)
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise CborError("map keys must be integers or text")
            encoded = self.data[start:pos]
            if previous is not None and encoded <= previous:
                raise CborError("map keys duplicated or not in canonical order")
            previous = encoded
            result[key], pos = self.item(pos, depth + 1)
        return result, pos


def _read_simple(info: int) -> object:
    if info == _FALSE & 0x1F:
        return False
    if info == _TRUE & 0x1F:
        return True
    if info == _NULL & 0x1F:
        return None
    raise CborError("simple value other than false/true/null")


def loads(data: bytes, max_depth: int = 16, max_items: int = 100_000) -> object:
    """Decode exactly one canonical item; anything else raises CborError.

    Depth counts containers: a bare scalar is depth 0, `[[1]]` reaches depth 2."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("loads() takes bytes")
    reader = _Reader(bytes(data), max_depth, max_items)
    try:
        reader.count_items(1)
        value, pos = reader.item(0, 0)
    except RecursionError:  # only if a caller raised max_depth past Python's own limit
        raise CborError("nesting too deep") from None
    if pos != reader.end:
        raise CborError("trailing bytes after the item")
    return value
