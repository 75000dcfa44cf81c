"""Canonical CBOR subset: golden bytes (RFC 8949 Appendix A), rejections, properties."""

from __future__ import annotations

import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.cbor import CborError, dumps, loads
from fluxchat.cbor_flat import head_at, loads_flat
from fluxchat.errors import ProtocolError

# (value, hex) pairs from RFC 8949 Appendix A that fall inside our subset.
GOLDEN = [
    (0, "00"), (1, "01"), (10, "0a"), (23, "17"), (24, "1818"), (25, "1819"),
    (100, "1864"), (1000, "1903e8"), (1000000, "1a000f4240"),
    (1000000000000, "1b000000e8d4a51000"), (18446744073709551615, "1bffffffffffffffff"),
    (-18446744073709551616, "3bffffffffffffffff"), (-1, "20"), (-10, "29"),
    (-100, "3863"), (-1000, "3903e7"),
    (False, "f4"), (True, "f5"), (None, "f6"),
    (b"", "40"), (b"\x01\x02\x03\x04", "4401020304"),
    ("", "60"), ("a", "6161"), ("IETF", "6449455446"), ("\"\\", "62225c"),
    ("\u00fc", "62c3bc"), ("\u6c34", "63e6b0b4"), ("\U00010151", "64f0908591"),
    ([], "80"), ([1, 2, 3], "83010203"), ([1, [2, 3], [4, 5]], "8301820203820405"),
    (list(range(1, 26)),
     "98190102030405060708090a0b0c0d0e0f101112131415161718181819"),
    ({}, "a0"), ({1: 2, 3: 4}, "a201020304"), ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
    (["a", {"b": "c"}], "826161a161626163"),
    ({"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"},
     "a56161614161626142616361436164614461656145"),
]

# Inputs every strict decoder must refuse, each with the rule it breaks.
REJECTED = {
    "empty input": "",
    "trailing byte": "0000",
    "non-shortest uint8": "1817",
    "non-shortest uint16": "1900ff",
    "non-shortest uint32": "1a0000ffff",
    "non-shortest uint64": "1b00000000ffffffff",
    "non-shortest negative": "3800",
    "non-shortest length": "5801ff",
    "reserved info 28": "1c",
    "indefinite bytes": "5f4101ff",
    "indefinite text": "7f6161ff",
    "indefinite array": "9f01ff",
    "indefinite map": "bf6161 01ff",
    "lone break": "ff",
    "tag": "c11a514b67b0",
    "half float": "f93c00",
    "single float": "fa47c35000",
    "double float": "fb3ff199999999999a",
    "undefined": "f7",
    "simple 16": "f0",
    "simple 255": "f8ff",
    "duplicate key": "a2616101616102",
    "unsorted keys": "a2616201616102",
    "unsorted int keys": "a203040102",
    "length-first order broken": "a2626161016162 02",
    "bytes key": "a1410101",
    "bool key": "a1f501",
    "array key": "a1800101",
    "invalid utf-8": "61ff",
    "utf-8 surrogate": "63eda080",
    "overlong utf-8": "62c0af",
    "truncated head": "19",
    "truncated bytes": "4501",
    "huge bytes length": "5bffffffffffffffff00",
    "huge array length": "9bffffffffffffffff",
    "huge map length": "bb0000000100000000",
    "truncated array": "830102",
    "truncated map": "a16161",
}


def _nested(depth: int) -> bytes:
    return b"\x81" * depth + b"\x00"


class GoldenTest(unittest.TestCase):
    def test_rfc_examples(self) -> None:
        for value, hexed in GOLDEN:
            with self.subTest(value=value):
                self.assertEqual(dumps(value).hex(), hexed)
                self.assertEqual(loads(bytes.fromhex(hexed)), value)

    def test_tuple_encodes_as_array(self) -> None:
        self.assertEqual(dumps((1, (2,))), bytes.fromhex("82018102"))
        self.assertEqual(loads(dumps((1, (2,)))), [1, [2]])

    def test_map_keys_sorted_by_encoded_bytes(self) -> None:
        # Bytewise order of encodings: ints (major 0) before negatives (1) before text (3);
        # shorter text before longer since the length sits in the head.
        value = {"bb": 1, "a": 2, -1: 3, 10: 4, 100: 5}
        self.assertEqual(dumps(value).hex(), "a50a04186405200361610262626201")


class EncodeRefusalTest(unittest.TestCase):
    def test_unsupported_types(self) -> None:
        for value in (1.5, set(), object(), {1.0: 1}, {(1,): 2}, {True: 1}, [frozenset()]):
            with self.subTest(value=value), self.assertRaises(TypeError):
                dumps(value)

    def test_out_of_range_ints(self) -> None:
        for value in (2**64, -(2**64) - 1):
            with self.subTest(value=value), self.assertRaises(ValueError):
                dumps(value)


class RejectionTest(unittest.TestCase):
    def test_each_rule(self) -> None:
        for rule, hexed in REJECTED.items():
            with self.subTest(rule=rule), self.assertRaises(CborError):
                loads(bytes.fromhex(hexed.replace(" ", "")))

    def test_error_is_protocol_malformed(self) -> None:
        with self.assertRaises(ProtocolError) as caught:
            loads(b"\xff")
        self.assertEqual(caught.exception.code, 1)

    def test_depth_limit(self) -> None:
        self.assertEqual(loads(_nested(16)), [[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]])
        with self.assertRaises(CborError):
            loads(_nested(17))
        with self.assertRaises(CborError):
            loads(_nested(3), max_depth=2)
        with self.assertRaises(CborError):
            loads(_nested(5000), max_depth=10_000)  # no RecursionError escapes

    def test_item_limit(self) -> None:
        data = dumps(list(range(10)))
        self.assertEqual(len(loads(data, max_items=11)), 10)
        with self.assertRaises(CborError):
            loads(data, max_items=10)
        with self.assertRaises(CborError):
            loads(dumps({1: 2, 3: 4}), max_items=4)

    def test_every_truncation_rejected(self) -> None:
        data = dumps({"a": [1, b"xyz", "\u6c34", None], "b": {2: -300}})
        for cut in range(len(data)):
            with self.subTest(cut=cut), self.assertRaises(CborError):
                loads(data[:cut])


scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=64)
           | st.text(max_size=32))
values = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5)
                   | st.dictionaries(st.integers(-(2**64), 2**64 - 1) | st.text(max_size=8),
                                     inner, max_size=5)),
    max_leaves=30,
)


class PropertyTest(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(values)
    def test_round_trip(self, value: object) -> None:
        encoded = dumps(value)
        self.assertEqual(loads(encoded), value)
        self.assertEqual(dumps(loads(encoded)), encoded)  # one encoding per value

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=64))
    def test_arbitrary_bytes_only_raise_cbor_error(self, data: bytes) -> None:
        try:
            value = loads(data)
        except CborError:
            return
        self.assertEqual(dumps(value), data)  # whatever is accepted is canonical

    @settings(max_examples=200, deadline=None)
    @given(values, st.integers(0, 2**16), st.integers(0, 255))
    def test_mutations_only_raise_cbor_error(self, value: object, where: int, byte: int) -> None:
        data = bytearray(dumps(value))
        data[where % len(data)] = byte
        try:
            decoded = loads(bytes(data))
        except CborError:
            return
        self.assertEqual(dumps(decoded), bytes(data))


scalars = (st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1)
           | st.binary(max_size=300) | st.text(max_size=40))


def flat_or_none(data: bytes, max_items: int) -> list[object] | None:
    """What loads_flat must give: loads' answer when it is an array of scalars, else None."""
    try:
        value = loads(data, max_depth=1, max_items=max_items)
    except CborError:
        return None
    if not isinstance(value, list) or any(isinstance(item, (list, dict)) for item in value):
        return None
    return value


class FlatTest(unittest.TestCase):
    """loads_flat accepts exactly what loads accepts of flat arrays, and gives the same."""

    def assert_same_as_loads(self, data: bytes, max_items: int = 100) -> None:
        expected = flat_or_none(data, max_items)
        if expected is None:
            with self.assertRaises(CborError, msg=data.hex()):
                loads_flat(data, max_items)
        else:
            self.assertEqual(loads_flat(data, max_items), expected, msg=data.hex())

    def test_golden_and_rejected_inside_an_array(self) -> None:
        for _, hex_text in GOLDEN:
            self.assert_same_as_loads(bytes.fromhex(hex_text))
            self.assert_same_as_loads(b"\x82\x01" + bytes.fromhex(hex_text))
        for rule, hex_text in REJECTED.items():
            for data in (bytes.fromhex(hex_text), b"\x81" + bytes.fromhex(hex_text),
                         b"\x82" + bytes.fromhex(hex_text) + b"\x00"):
                with self.subTest(rule=rule, data=data.hex()), self.assertRaises(CborError):
                    loads_flat(data, 100)

    def test_nested_containers_and_scalars_refused(self) -> None:
        for value in ([[]], [{}], [1, [2]], 5, b"x", "x", {}, None):
            with self.assertRaises(CborError, msg=repr(value)):
                loads_flat(dumps(value), 100)

    def test_item_limit_counts_the_array(self) -> None:
        for count in (0, 14, 15, 16, 30):
            data = dumps([b"a" * 30] * count)
            self.assert_same_as_loads(data, max_items=16)
        with self.assertRaises(CborError):
            loads_flat(dumps([1] * 16), 16)

    def test_every_truncation_and_flip_of_a_record_shaped_array(self) -> None:
        data = dumps([1, b"\xab" * 32, 1_800_000_000, 2**40, b"k" * 32, b"p" * 1216,
                      "subject \u00e9", "", -5, True, None, b"s" * 512])
        for end in range(len(data)):
            self.assert_same_as_loads(data[:end])
        for pos in range(len(data)):
            for bit in (0x01, 0x20, 0x80):
                damaged = bytearray(data)
                damaged[pos] ^= bit
                self.assert_same_as_loads(bytes(damaged))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(scalars, max_size=20), st.integers(0, 2**16), st.integers(0, 255))
    def test_mutations_agree_with_loads(self, items: list[object], where: int,
                                        byte: int) -> None:
        data = dumps(items)
        self.assertEqual(loads_flat(data, 100), items)
        damaged = bytearray(data)
        damaged[where % len(damaged)] = byte
        self.assert_same_as_loads(bytes(damaged))

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=64))
    def test_arbitrary_bytes_agree_with_loads(self, data: bytes) -> None:
        self.assert_same_as_loads(data)


class HeadTest(unittest.TestCase):
    def test_heads(self) -> None:
        self.assertEqual(head_at(bytes.fromhex("00001a000f4240"), 2), (0, 1000000, 7))
        self.assertEqual(head_at(bytes.fromhex("5901000000"), 0), (2, 256, 3))
        self.assertEqual(head_at(b"\xf5", 0), (7, 21, 1))
        for hex_text in ("", "1817", "1900ff", "1a0000ffff", "1b00000000ffffffff", "5801",
                         "19", "1a0000", "1c", "5f", "ff", "f93c00", "f8ff"):
            with self.assertRaises(CborError, msg=hex_text):
                head_at(bytes.fromhex(hex_text), 0)


if __name__ == "__main__":
    unittest.main()
