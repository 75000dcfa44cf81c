"""Lookup datagrams (PROTOCOL.md §16): the codec and the bounds, pure."""

from __future__ import annotations

import ipaddress
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat import datagram as d
from fluxchat.datagram_guard import AnswerBudget, Pending, Silent

TXID = bytes(range(16))
TARGET = bytes(range(32, 64))
V4 = d.Contact(bytes([0xAA]) * 32, "198.51.100.7", 25001)
V6 = d.Contact(bytes([0xBB]) * 32, "2001:db8::1", 25002)

# The examples of PROTOCOL.md §16, byte for byte.
GOLDEN_REQUEST = ("46584447" "01" "01" + TXID.hex() + TARGET.hex())
GOLDEN_ANSWER = ("46584447" "01" "02" + TXID.hex() + "02"
                 + "aa" * 32 + "04" + "c6336407" + "61a9"
                 + "bb" * 32 + "06" + "20010db8000000000000000000000001" + "61aa")


class CodecTest(unittest.TestCase):
    def test_golden_request(self) -> None:
        data = d.encode_request(TXID, TARGET)
        self.assertEqual(len(data), d.REQUEST_SIZE)
        self.assertEqual(data[:54].hex(), GOLDEN_REQUEST)
        self.assertEqual(data[54:], bytes(1146))
        self.assertEqual(d.decode_request(data), d.FindNodeRequest(TXID, TARGET))
        self.assertEqual(d.kind_of(data), d.FIND_NODE)

    def test_golden_answer(self) -> None:
        data = d.encode_answer(TXID, [V4, V6])
        self.assertEqual(data.hex(), GOLDEN_ANSWER)
        self.assertEqual(d.decode_answer(data), d.NodesAnswer(TXID, (V4, V6)))
        self.assertEqual(d.kind_of(data), d.NODES)

    def test_request_must_be_exactly_padded(self) -> None:
        data = d.encode_request(TXID, TARGET)
        self.assertIsNone(d.decode_request(data[:-1]))
        self.assertIsNone(d.decode_request(data + b"\0"))
        self.assertIsNone(d.decode_request(data[:-1] + b"\1"))     # padding is zeros
        self.assertIsNone(d.decode_request(b"FXDG\x02" + data[5:]))  # another version
        self.assertIsNone(d.decode_request(b"FXCD" + data[4:]))      # LAN discovery's magic
        self.assertIsNone(d.decode_request(data[:5] + b"\x02" + data[6:]))   # an answer type

    def test_an_answer_is_never_larger_than_the_request(self) -> None:
        many = [d.Contact(bytes([i]) * 32, f"2001:db8::{i + 1:x}", 1000 + i) for i in range(40)]
        data = d.encode_answer(TXID, many)
        self.assertLessEqual(len(data), d.REQUEST_SIZE)
        decoded = d.decode_answer(data)
        assert decoded is not None
        self.assertEqual(decoded.contacts, tuple(many[:len(decoded.contacts)]))
        self.assertEqual(len(decoded.contacts), (d.REQUEST_SIZE - d.ANSWER_HEAD) // 51)   # IPv6 entries: 51 bytes
        v4 = [d.Contact(bytes([i]) * 32, f"198.51.100.{i}", 1000 + i) for i in range(40)]
        self.assertEqual(len(d.decode_answer(d.encode_answer(TXID, v4)).contacts),  # type: ignore[union-attr]
                         d.MAX_CONTACTS)
        small = d.encode_answer(TXID, many, limit=200)
        self.assertLessEqual(len(small), 200)

    def test_unusable_contacts_are_left_out(self) -> None:
        bad = [d.Contact(b"short", "198.51.100.1", 1), d.Contact(bytes(32), "example.org", 1),
               d.Contact(bytes(32), "198.51.100.1", 0), V4]
        self.assertEqual(d.decode_answer(d.encode_answer(TXID, bad)),
                         d.NodesAnswer(TXID, (V4,)))

    def test_malformed_answers(self) -> None:
        good = bytes.fromhex(GOLDEN_ANSWER)
        for broken in (good[:-1], good + b"\0", good[:22] + b"\x03" + good[23:],
                       good[:22] + b"\x01" + good[23:],              # trailing entry bytes
                       good[:55] + b"\x05" + good[56:],              # unknown family
                       good[:60] + b"\0\0" + good[62:],                # port 0
                       b"FXDG\x01\x02", bytes(d.REQUEST_SIZE + 1)):
            self.assertIsNone(d.decode_answer(broken), broken.hex())

    def test_bad_arguments(self) -> None:
        with self.assertRaises(ValueError):
            d.encode_request(b"short", TARGET)
        with self.assertRaises(ValueError):
            d.encode_answer(b"short", [])

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=1300))
    def test_any_bytes_decode_to_none_or_a_value(self, data: bytes) -> None:
        for decode in (d.decode_request, d.decode_answer, d.kind_of):
            decode(data)   # never raises

    @settings(max_examples=100, deadline=None)
    @given(st.lists(st.tuples(st.binary(min_size=32, max_size=32),
                              st.ip_addresses().map(str), st.integers(1, 65535)), max_size=40))
    def test_round_trip(self, rows: list[tuple[bytes, str, int]]) -> None:
        contacts = [d.Contact(i, ipaddress.ip_address(h).compressed, p) for i, h, p in rows]
        decoded = d.decode_answer(d.encode_answer(TXID, contacts))
        assert decoded is not None
        self.assertEqual(decoded.contacts, tuple(contacts[:len(decoded.contacts)]))


class BoundsTest(unittest.TestCase):
    def test_per_source_prefix_bound(self) -> None:
        budget = AnswerBudget(per_source=5, total=1000, now=0.0)
        answered = sum(budget.allow(f"198.51.100.{i % 200}", 0.0) for i in range(100))
        self.assertEqual(answered, 10)                 # one /24: a 2 s burst, then nothing
        self.assertTrue(budget.allow("203.0.113.9", 0.0))       # another prefix is not hurt
        self.assertFalse(budget.allow("198.51.100.1", 0.1))
        self.assertTrue(budget.allow("198.51.100.1", 0.3))      # refilled at 5/s
        v6 = sum(budget.allow(f"2001:db8::{i:x}", 0.0) for i in range(1, 50))
        self.assertEqual(v6, 10)                       # one /64
        self.assertTrue(budget.allow("2001:db8:0:1::1", 0.0))   # the next /64

    def test_node_wide_bound(self) -> None:
        budget = AnswerBudget(per_source=5, total=20, now=0.0)
        answered = sum(budget.allow(f"10.{i // 256}.{i % 256}.1", 0.0) for i in range(500))
        self.assertEqual(answered, 40)                 # 2 s of the node-wide rate
        self.assertFalse(budget.allow("192.0.2.1", 0.0))
        self.assertTrue(budget.allow("192.0.2.1", 0.1))

    def test_pending_table_is_bounded(self) -> None:
        pending = Pending(capacity=3)
        for i in range(3):
            self.assertTrue(pending.open(bytes([i]) * 16, ("192.0.2.1", 1), 1.0, 0.0))
        self.assertFalse(pending.open(b"\x09" * 16, ("192.0.2.1", 1), 1.0, 0.0))   # full
        self.assertEqual(len(pending), 3)
        self.assertTrue(pending.open(b"\x09" * 16, ("192.0.2.1", 1), 2.0, 1.0))    # expired ones go
        self.assertEqual(len(pending), 1)

    def test_pending_claims_only_the_right_answer(self) -> None:
        pending = Pending()
        txid, asked = b"\x01" * 16, ("192.0.2.1", 25001)
        pending.open(txid, asked, 1.0, 0.0)
        self.assertFalse(pending.claim(b"\x02" * 16, asked, 0.1))            # wrong txid
        self.assertFalse(pending.claim(txid, ("192.0.2.2", 25001), 0.1))     # wrong source
        self.assertFalse(pending.claim(txid, ("192.0.2.1", 25002), 0.1))     # wrong port
        self.assertTrue(pending.claim(txid, asked, 0.2))                     # the real one
        self.assertFalse(pending.claim(txid, asked, 0.3))                    # only once
        pending.open(txid, asked, 1.0, 0.0)
        self.assertFalse(pending.claim(txid, asked, 1.5))                    # too late
        self.assertFalse(pending.open(txid, asked, 3.0, 1.0) and pending.open(txid, asked, 3.0, 1.0))
        pending.close(txid)
        self.assertEqual(len(pending), 0)
        with self.assertRaises(ValueError):
            Pending(0)

    def test_silent_contacts_are_remembered_for_a_while_and_bounded(self) -> None:
        silent = Silent(hold=10.0, capacity=2)
        silent.mark(("192.0.2.1", 1), 0.0)
        self.assertTrue(silent.skip(("192.0.2.1", 1), 5.0))
        self.assertFalse(silent.skip(("192.0.2.1", 1), 10.0))
        self.assertEqual(len(silent), 0)
        for port in (1, 2, 3):
            silent.mark(("192.0.2.1", port), 0.0)
        self.assertEqual(len(silent), 2)
        self.assertFalse(silent.skip(("192.0.2.1", 1), 1.0))   # the oldest was forgotten
        self.assertTrue(silent.skip(("192.0.2.1", 3), 1.0))


if __name__ == "__main__":
    unittest.main()
