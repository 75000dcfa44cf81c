"""Fast paths of the canonical CBOR decoder (cbor.py) for the fixed shapes every mail has.

An envelope, its plaintext, its signed inner part and a certified record are each one flat
array of scalars, decoded for every mail. `loads_flat` decodes such an array in one loop
without recursion; `head_at` reads one head, for parsers of fixed layouts that slice instead
of decoding (envelope2.split). Both refuse exactly what `loads` refuses (tests compare them
with `loads` on flips, cuts and random bytes): hostile input, same bounds.
"""

from __future__ import annotations

from typing import Any

from .cbor import _ARRAY, _BYTES, _FLOORS, _NINT, _SIMPLE, _TAG, _TEXT, _UINT, _WIDTHS, CborError, _read_simple


def head_at(data: bytes, pos: int) -> tuple[int, int, int]:
    """(major type, argument, position after the head) of the head at `pos`, refusing what
    `loads` refuses in a head: truncation, non-shortest arguments, floats and extended simple
    values, reserved and indefinite-length heads. For parsers of fixed layouts (envelopes)
    that slice instead of decoding; the argument of a string is not checked against the input."""
    if pos >= len(data):
        raise CborError("truncated input")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        return major, info, pos + 1
    if info > 27:
        raise CborError("reserved or indefinite-length head")
    if major == _SIMPLE:
        raise CborError("floats and extended simple values are not allowed")
    after = pos + 1 + _WIDTHS[info - 24]
    if after > len(data):
        raise CborError("truncated input")
    arg = int.from_bytes(data[pos + 1:after], "big")
    if arg < _FLOORS[info - 24]:
        raise CborError("non-shortest integer or length")
    return major, arg, after


def loads_flat(data: bytes, max_items: int) -> list[Any]:
    """Exactly one canonical array whose items are all scalars (integers, strings, booleans,
    null), at most `max_items` items counting the array itself as `loads` counts them; a
    nested array or map is refused. What `loads(data, max_depth=1, max_items=max_items)`
    accepts of such arrays, in one loop without recursion: the shape of every record and
    envelope layer, decoded for each mail."""
    major, count, pos = head_at(data, 0)
    if major != _ARRAY:
        raise CborError("expected an array")
    end = len(data)
    if count >= max_items:
        raise CborError("too many items")
    if count > end - pos:   # each item needs at least one byte
        raise CborError("array longer than the input")
    items: list[Any] = []   # Any, as `loads` narrowed by isinstance gives: callers check types
    for _ in range(count):
        if pos >= end:
            raise CborError("truncated input")
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        # Heads with up to two argument bytes inline (every item of ours but times); the
        # shortest-form floors are head_at's: 24 for one byte, 256 (a first byte not 0) for
        # two. Others, and anything to refuse, go through head_at.
        if info < 24:
            arg, pos = info, pos + 1
        elif info == 24 and major != _SIMPLE and pos + 1 < end and data[pos + 1] >= 24:
            arg, pos = data[pos + 1], pos + 2
        elif info == 25 and major != _SIMPLE and pos + 2 < end and data[pos + 1]:
            arg, pos = data[pos + 1] << 8 | data[pos + 2], pos + 3
        else:
            major, arg, pos = head_at(data, pos)
        if major == _BYTES or major == _TEXT:
            after = pos + arg
            if after > end:
                raise CborError("truncated input")
            raw = data[pos:after]
            pos = after
            if major == _TEXT:
                try:
                    items.append(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    raise CborError("invalid UTF-8 in text string") from None
            else:
                items.append(raw)
        elif major == _UINT:
            items.append(arg)
        elif major == _NINT:
            items.append(-1 - arg)
        elif major == _SIMPLE:
            items.append(_read_simple(arg))
        elif major == _TAG:
            raise CborError("tags are not allowed")
        else:
            raise CborError("nested array or map where a scalar was expected")
    if pos != end:
        raise CborError("trailing bytes after the item")
    return items
