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


def _head(major: int, value: int) -> bytes:
    """The shortest head for (major type, argument), as deterministic encoding demands."""
    prefix = major << 5
    if value < 24:
        return bytes((prefix | value,))
    if value < 2**8:
        return bytes((prefix | 24,)) + value.to_bytes(1, "big")
    if value < 2**16:
        return bytes((prefix | 25,)) + value.to_bytes(2, "big")
    if value < 2**32:
        return bytes((prefix | 26,)) + value.to_bytes(4, "big")
    return bytes((prefix | 27,)) + value.to_bytes(8, "big")


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
        raw = obj.encode("utf-8")  # lone surrogates raise UnicodeEncodeError (a ValueError)
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


# ----- decoding -----------------------------------------------------------------------


class _Reader:
    """Cursor over the input with the decoder's budgets."""

    def __init__(self, data: bytes, max_depth: int, max_items: int) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.items_left = max_items

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, count: int) -> bytes:
        if count > self.remaining:
            raise CborError("truncated input")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def count_items(self, count: int) -> None:
        self.items_left -= count
        if self.items_left < 0:
            raise CborError("too many items")


def _read_head(reader: _Reader) -> tuple[int, int, int]:
    """Returns (major, additional info, argument); rejects non-shortest arguments."""
    initial = reader.take(1)[0]
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        return major, info, info
    if info > 27:
        # 28-30 are reserved; 31 is indefinite length or "break": none is canonical.
        raise CborError("reserved or indefinite-length head")
    if major == _SIMPLE:
        raise CborError("floats and extended simple values are not allowed")
    size = 1 << (info - 24)
    value = int.from_bytes(reader.take(size), "big")
    floor = 24 if size == 1 else 1 << (4 * size)  # smallest value needing this width
    if value < floor:
        raise CborError("non-shortest integer or length")
    return major, info, value


def _read_string(reader: _Reader, length: int, text: bool) -> bytes | str:
    raw = reader.take(length)  # take() checks the length against the input first
    if not text:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CborError("invalid UTF-8 in text string") from None


def _read_array(reader: _Reader, length: int, depth: int) -> list[object]:
    if length > reader.remaining:  # each item needs at least one byte
        raise CborError("array longer than the input")
    reader.count_items(length)
    return [_read_item(reader, depth + 1) for _ in range(length)]


def _read_map(reader: _Reader, length: int, depth: int) -> dict[object, object]:
    if 2 * length > reader.remaining:
        raise CborError("map longer than the input")
    reader.count_items(2 * length)
    result: dict[object, object] = {}
    previous: bytes | None = None
    for _ in range(length):
        start = reader.pos
        key = _read_item(reader, depth + 1)
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise CborError("map keys must be integers or text")
        encoded = reader.data[start:reader.pos]
        if previous is not None and encoded <= previous:
            raise CborError("map keys duplicated or not in canonical order")
        previous = encoded
        result[key] = _read_item(reader, depth + 1)
    return result


def _read_simple(info: int) -> object:
    if info == _FALSE & 0x1F:
        return False
    if info == _TRUE & 0x1F:
        return True
    if info == _NULL & 0x1F:
        return None
    raise CborError("simple value other than false/true/null")


def _read_item(reader: _Reader, depth: int) -> object:
    if depth > reader.max_depth:
        raise CborError("nesting too deep")
    major, info, arg = _read_head(reader)
    if major == _UINT:
        return arg
    if major == _NINT:
        return -1 - arg
    if major in (_BYTES, _TEXT):
        return _read_string(reader, arg, text=major == _TEXT)
    if major == _ARRAY:
        return _read_array(reader, arg, depth)
    if major == _MAP:
        return _read_map(reader, arg, depth)
    if major == _TAG:
        raise CborError("tags are not allowed")
    return _read_simple(info)


def loads(data: bytes, max_depth: int = 16, max_items: int = 100_000) -> object:
    """Decode exactly one canonical item; anything else raises CborError.

    Depth counts containers: a bare scalar is depth 0, `[[1]]` reaches depth 2."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("loads() takes bytes")
    reader = _Reader(bytes(data), max_depth, max_items)
    try:
        reader.count_items(1)
        value = _read_item(reader, 0)
    except RecursionError:  # only if a caller raised max_depth past Python's own limit
        raise CborError("nesting too deep") from None
    if reader.remaining:
        raise CborError("trailing bytes after the item")
    return value
