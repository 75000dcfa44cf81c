"""Link messages: golden payloads for every type, strict decoding, roles, fuzzing."""

from __future__ import annotations

import dataclasses
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat import messages as m
from fluxchat.cbor import dumps, loads
from fluxchat.errors import ProtocolError

A = bytes(range(32))
B = b"\xbb" * 32
N = b"\xcc" * 32
U = b"\x11" * 16
NODE = m.NodeInfo(A, "10.0.0.1", 7000)
# Hand-written CBOR fragments, so the golden strings do not depend on the encoder.
HA, HB, HN = "5820" + A.hex(), "5820" + B.hex(), "5820" + N.hex()
HNODE = "83" + HA + "6831302e302e302e31" + "191b58"

# (message, type byte, payload hex) — at least one entry per registered type.
GOLDEN: list[tuple[m.Message, int, str]] = [
    (m.Hello(A, B, "public", b"\x81\x01", b"\x30\x01", b"\x99" * 64), 0x01,
     "86" + HA + HB + "667075626c6963" + "428101" + "423001" + "5840" + "99" * 64),
    (m.Hello(A, b"", "private", b"\x01", b"", bytes(64)), 0x01,
     "86" + HA + "40" + "6770726976617465" + "4101" + "40" + "5840" + "00" * 64),
    (m.Challenge(N, 20), 0x02, "82" + HN + "14"),
    (m.Work(300), 0x03, "81" + "19012c"),
    (m.Welcome("1.2.3.4", "public:1"), 0x04, "82" + "67312e322e332e34" + "687075626c69633a31"),
    (m.Error(5, "bad"), 0x05, "82" + "05" + "63626164"),
    (m.Ping(1), 0x06, "8101"),
    (m.Pong(1), 0x07, "8101"),
    (m.FindNode(2, B), 0x10, "82" + "02" + HB),
    (m.Nodes(2, (NODE,)), 0x11, "82" + "02" + "81" + HNODE),
    (m.Nodes(2, ()), 0x11, "820280"),
    (m.FindKey(3, B), 0x12, "82" + "03" + HB),
    (m.KeyReply(3, b"", (NODE,)), 0x13, "83" + "03" + "40" + "81" + HNODE),
    (m.StoreKey(4, b"\x30"), 0x14, "82" + "04" + "4130"),
    (m.FindMailKey(3, B), 0x15, "82" + "03" + HB),
    (m.MailKeyReply(3, b"", (NODE,)), 0x16, "83" + "03" + "40" + "81" + HNODE),
    (m.MailKeyReply(3, b"\x81\x01", ()), 0x16, "83" + "03" + "428101" + "80"),
    (m.StoreMailKey(4, b"\x81\x01"), 0x17, "82" + "04" + "428101"),
    (m.Deliver(5, b"env"), 0x20, "82" + "05" + "43656e76"),
    (m.Store(6, b"env"), 0x21, "82" + "06" + "43656e76"),
    (m.Fetch(7, 100), 0x22, "82" + "07" + "1864"),
    (m.MailBatch(7, (b"e1", b"e2"), True), 0x23, "83" + "07" + "82" + "42653142" + "6532" + "f5"),
    (m.Delete(8, (U,)), 0x24, "82" + "08" + "81" + "50" + U.hex()),
    (m.Notify(), 0x25, "80"),
    (m.DeliverMany(5, (b"ab", b"c")), 0x26, "82" + "05" + "82" + "426162" + "4163"),
    (m.Delivered(5, (0, 21)), 0x27, "82" + "05" + "82" + "00" + "15"),
    (m.Ok(9), 0x30, "8109"),
    (m.Fail(10, 21, "no"), 0x31, "83" + "0a" + "15" + "626e6f"),
    (m.DialBack(11, 25001), 0x40, "82" + "0b" + "1961a9"),
    (m.DialBackReply(11, True, "1.2.3.4"), 0x41, "83" + "0b" + "f5" + "67312e322e332e34"),
    (m.Reserve(12), 0x42, "810c"),
    (m.Reserved(12, 600), 0x43, "82" + "0c" + "190258"),
    (m.StoreRelay(13, b"rec"), 0x44, "82" + "0d" + "43726563"),
    (m.FindRelay(14, B), 0x45, "82" + "0e" + HB),
    (m.RelayReply(14, b"", (NODE,)), 0x46, "83" + "0e" + "40" + "81" + HNODE),
    (m.Relay(15, b"env"), 0x47, "82" + "0f" + "43656e76"),
    (m.Relayed(15, False), 0x48, "82" + "0f" + "f4"),
    (m.Punch(16, B, 40000), 0x49, "83" + "10" + HB + "199c40"),
    (m.PunchOffer(17, A, "1.2.3.4", 40001), 0x4A, "84" + "11" + HA + "67312e322e332e34"
     + "199c41"),
    (m.PunchReady(17, "", 40001), 0x4B, "83" + "11" + "60" + "199c41"),
]


def wire(msg: m.Message) -> list[object]:
    """The message's CBOR array as plain values, for tampering with."""
    ftype, payload = m.encode_message(msg)
    value = loads(payload)
    assert isinstance(value, list)
    return value


def decode_list(ftype: int, value: list[object]) -> m.Message:
    return m.decode_message(ftype, dumps(value))


class GoldenTest(unittest.TestCase):
    def test_every_type_has_a_golden_entry(self) -> None:
        self.assertEqual({ftype for _, ftype, _ in GOLDEN}, set(m.MESSAGE_TYPES))

    def test_golden_bytes(self) -> None:
        for msg, ftype, hexed in GOLDEN:
            with self.subTest(msg=msg):
                self.assertEqual(m.encode_message(msg), (ftype, bytes.fromhex(hexed)))
                self.assertEqual(m.decode_message(ftype, bytes.fromhex(hexed)), msg)

    def test_truncated_and_trailing_rejected(self) -> None:
        for msg, ftype, hexed in GOLDEN:
            payload = bytes.fromhex(hexed)
            for cut in range(len(payload)):
                with self.subTest(msg=msg, cut=cut):
                    self.assertMalformed(lambda: m.decode_message(ftype, payload[:cut]))
            with self.subTest(msg=msg, trailing=True):
                self.assertMalformed(lambda: m.decode_message(ftype, payload + b"\x00"))

    def assertMalformed(self, call: object) -> None:
        with self.assertRaises(ProtocolError) as caught:
            call()  # type: ignore[operator]
        self.assertEqual(caught.exception.code, m.ErrorCode.MALFORMED)


class ValidationTest(unittest.TestCase):
    assertMalformed = GoldenTest.assertMalformed

    def test_unknown_type(self) -> None:
        for ftype in (0x00, 0x08, 0x18, 0x28, 0x32, 0xFF):
            with self.subTest(ftype=ftype), self.assertRaises(ProtocolError) as caught:
                m.decode_message(ftype, b"\x80")
            self.assertEqual(caught.exception.code, m.ErrorCode.UNKNOWN_TYPE)

    def test_wrong_arity(self) -> None:
        for msg, ftype, _ in GOLDEN:
            fields = wire(msg)
            with self.subTest(msg=msg, extra=True):
                self.assertMalformed(lambda: decode_list(ftype, fields + [0]))
            if fields:
                with self.subTest(msg=msg, missing=True):
                    self.assertMalformed(lambda: decode_list(ftype, fields[:-1]))

    def test_payload_must_be_an_array(self) -> None:
        for payload in (b"\x01", b"\xa0", b"\x40", b"\xf6"):
            with self.subTest(payload=payload):
                self.assertMalformed(lambda: m.decode_message(0x06, payload))

    def test_wrong_field_types(self) -> None:
        # Each replacement has a CBOR type different from the field's own.
        for msg, ftype, _ in GOLDEN:
            fields = wire(msg)
            for i, value in enumerate(fields):
                for bad in self._other_types(value):
                    tampered = fields[:i] + [bad] + fields[i + 1:]
                    with self.subTest(msg=msg, field=i, bad=bad):
                        self.assertMalformed(lambda: decode_list(ftype, tampered))

    @staticmethod
    def _other_types(value: object) -> list[object]:
        candidates: list[object] = [7, "x", b"x", [], {}, None, True]
        return [c for c in candidates if type(c) is not type(value)]

    def test_ranges(self) -> None:
        long_text = "é" * 256
        cases = {
            "short id": (0x10, [1, b"\x00" * 31]),
            "long id": (0x10, [1, b"\x00" * 33]),
            "acceptor id of 16": (0x01, [A, b"\x00" * 16, ""]),
            "short nonce": (0x02, [B, b"\x00" * 31, 1, ""]),
            "negative rid": (0x06, [-1]),
            "negative difficulty": (0x02, [B, N, -5, ""]),
            "long contact": (0x01, [A, B, long_text]),
            "long message": (0x31, [1, 2, long_text]),
            "long observed host": (0x04, [long_text]),
            "key too big": (0x14, [1, b"\x00" * 2049]),
            "signature too big": (0x03, [b"", 0, b"\x00" * 1025]),
            "port 0": (0x11, [1, [[A, "h", 0]]]),
            "port 65536": (0x11, [1, [[A, "h", 65536]]]),
            "empty host": (0x11, [1, [[A, "", 1]]]),
            "node arity": (0x11, [1, [[A, "h"]]]),
            "node not array": (0x11, [1, [A]]),
            "65 nodes": (0x11, [1, [[A, "h", 1]] * 65]),
            "257 envelopes": (0x23, [1, [b""] * 257, False]),
            "257 uuids": (0x24, [1, [U] * 257]),
            "short uuid": (0x24, [1, [b"\x00" * 15]]),
            "nested too deep": (0x11, [1, [[A, "h", [1]]]]),
        }
        for name, (ftype, value) in cases.items():
            with self.subTest(name):
                self.assertMalformed(lambda: decode_list(ftype, value))

    def test_limits_themselves_accepted(self) -> None:
        edge = [
            m.Nodes(1, (m.NodeInfo(A, "h" * 255, 65535),) * 64),
            m.MailBatch(2**64 - 1, (b"",) * 256, False),
            m.Delete(0, (U,) * 256),
            m.Hello(A, B, "h" * 255, b"\x00" * 1200, b"\x00" * 2048, b"\x00" * 64),
            m.Work(2**64 - 1),
            m.Fail(1, 0, "水" * 255),
        ]
        for msg in edge:
            with self.subTest(msg=type(msg).__name__):
                self.assertEqual(m.decode_message(*m.encode_message(msg)), msg)

    def test_encode_refuses_bad_values(self) -> None:
        for msg in (m.Ping(-1), m.FindNode(1, b"short"), m.Welcome("x" * 256, ""),
                    m.Nodes(1, ((A, "h", 1),)), m.Delete(1, [b"x"]), m.Fetch(1, True)):
            with self.subTest(msg=msg), self.assertRaises(ValueError):
                m.encode_message(msg)  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            m.encode_message(m.Message())


class RoleTest(unittest.TestCase):
    def test_role_sets(self) -> None:
        self.assertEqual(m.REQUEST_TYPES, {m.Ping, m.FindNode, m.FindKey, m.StoreKey, m.Deliver,
                                           m.DeliverMany, m.Store, m.Fetch, m.Delete, m.FindMailKey,
                                           m.StoreMailKey, m.DialBack, m.Reserve,
                                           m.StoreRelay, m.FindRelay, m.Relay, m.Punch,
                                           m.PunchOffer})
        self.assertEqual(m.RESPONSE_TYPES, {m.Pong, m.Nodes, m.KeyReply, m.Ok, m.Fail, m.Delivered,
                                            m.MailBatch, m.MailKeyReply, m.DialBackReply,
                                            m.Reserved, m.RelayReply, m.Relayed,
                                            m.PunchReady})
        self.assertEqual(m.NOTICE_TYPES, {m.Notify})
        self.assertEqual(m.HANDSHAKE_TYPES, {m.Hello, m.Challenge, m.Work, m.Welcome, m.Error})
        self.assertTrue(m.Ping(1).is_request and m.Ok(1).is_response)
        self.assertFalse(m.Notify().is_request or m.Notify().is_response)

    def test_rid_first_for_requests_and_responses(self) -> None:
        for cls in m.REQUEST_TYPES | m.RESPONSE_TYPES:
            with self.subTest(cls=cls.__name__):
                self.assertEqual(dataclasses.fields(cls)[0].name, "rid")

    def test_messages_are_frozen(self) -> None:
        with self.assertRaises(dataclasses.FrozenInstanceError):
            m.Ping(1).rid = 2  # type: ignore[misc]


ALL_TYPES = sorted(m.MESSAGE_TYPES)
scalar = (st.integers(-3, 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=8)
          | st.booleans() | st.none() | st.sampled_from([A, U, "h"]))
cbor_values = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


class PropertyTest(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(ALL_TYPES), st.binary(max_size=120))
    def test_arbitrary_payload_only_raises_protocol_error(self, ftype: int, data: bytes) -> None:
        try:
            msg = m.decode_message(ftype, data)
        except ProtocolError as exc:
            self.assertEqual(exc.code, m.ErrorCode.MALFORMED)
            return
        self.assertEqual(m.encode_message(msg), (ftype, data))

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(ALL_TYPES), st.lists(cbor_values, max_size=5))
    def test_arbitrary_arrays_only_raise_protocol_error(self, ftype: int,
                                                        value: list[object]) -> None:
        payload = dumps(value)
        try:
            msg = m.decode_message(ftype, payload)
        except ProtocolError as exc:
            self.assertEqual(exc.code, m.ErrorCode.MALFORMED)
            return
        self.assertEqual(m.encode_message(msg), (ftype, payload))


if __name__ == "__main__":
    unittest.main()
