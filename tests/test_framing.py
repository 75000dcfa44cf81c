"""Framing: golden bytes, prologue checks, early size refusal, any chunking, buffer bound."""

from __future__ import annotations

import itertools
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.errors import ProtocolError
from fluxchat.framing import (
    DEFAULT_MAX_PAYLOAD,
    HEADER_SIZE,
    PROLOGUE_MAGIC,
    PROLOGUE_SIZE,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Frame,
    FrameDecoder,
    Prologue,
    encode_frame,
    encode_prologue,
)
from fluxchat.messages import ErrorCode

PROLOGUE = encode_prologue()


def feed_bytewise(decoder: FrameDecoder, data: bytes) -> list[Prologue | Frame]:
    items: list[Prologue | Frame] = []
    for i in range(len(data)):
        items.extend(decoder.feed(data[i:i + 1]))
    return items


class EncodeTest(unittest.TestCase):
    def test_constants(self) -> None:
        self.assertEqual(PROLOGUE_MAGIC, b"FLUXCHAT")
        self.assertEqual(PROTOCOL_VERSION, 2)
        self.assertIn(PROTOCOL_VERSION, SUPPORTED_VERSIONS)
        self.assertEqual(DEFAULT_MAX_PAYLOAD, 2 * 1024 * 1024)

    def test_golden_prologue(self) -> None:
        self.assertEqual(PROLOGUE.hex(), "464c5558434841540002")
        self.assertEqual(encode_prologue(0x0203).hex(), "464c5558434841540203")

    def test_golden_frame(self) -> None:
        self.assertEqual(encode_frame(0x06, b"\x81\x01", 100).hex(), "00000002068101")
        self.assertEqual(encode_frame(0x25, b"", 0).hex(), "0000000025")

    def test_encode_refuses_oversize_and_bad_type(self) -> None:
        with self.assertRaises(ValueError):
            encode_frame(1, b"abc", 2)
        for ftype in (-1, 256):
            with self.subTest(ftype=ftype), self.assertRaises(ValueError):
                encode_frame(ftype, b"", 10)


class DecodeTest(unittest.TestCase):
    def test_prologue_then_frames(self) -> None:
        data = PROLOGUE + encode_frame(6, b"\x81\x01", 10) + encode_frame(0x25, b"", 10)
        expected = [Prologue(PROTOCOL_VERSION), Frame(6, b"\x81\x01"), Frame(0x25, b"")]
        self.assertEqual(FrameDecoder(10).feed(data), expected)
        decoder = FrameDecoder(10)
        self.assertEqual(feed_bytewise(decoder, data), expected)
        self.assertEqual(decoder.buffered, 0)

    def test_other_version_is_reported_not_judged(self) -> None:
        self.assertEqual(FrameDecoder().feed(encode_prologue(7)), [Prologue(7)])

    def test_bad_magic_rejected_on_first_wrong_byte(self) -> None:
        decoder = FrameDecoder()
        self.assertEqual(decoder.feed(b"FLUX"), [])
        with self.assertRaises(ProtocolError) as caught:
            decoder.feed(b"X")
        self.assertEqual(caught.exception.code, ErrorCode.MALFORMED)
        with self.assertRaises(ProtocolError):
            FrameDecoder().feed(b"GET / HTTP/1.1\r\n")

    def test_oversize_rejected_at_header_time(self) -> None:
        decoder = FrameDecoder(max_payload=16)
        decoder.feed(PROLOGUE)
        header = (17).to_bytes(4, "big") + b"\x01"
        self.assertEqual(decoder.feed(header[:4]), [])
        with self.assertRaises(ProtocolError) as caught:
            decoder.feed(header[4:])  # no payload byte sent yet
        self.assertEqual(caught.exception.code, ErrorCode.TOO_LARGE)

    def test_huge_length_rejected_with_default_limit(self) -> None:
        decoder = FrameDecoder()
        with self.assertRaises(ProtocolError) as caught:
            decoder.feed(PROLOGUE + b"\xff\xff\xff\xff\x01")
        self.assertEqual(caught.exception.code, ErrorCode.TOO_LARGE)

    def test_exact_limit_accepted(self) -> None:
        payload = b"x" * 16
        decoder = FrameDecoder(16)
        self.assertEqual(decoder.feed(PROLOGUE + encode_frame(3, payload, 16)),
                         [Prologue(PROTOCOL_VERSION), Frame(3, payload)])

    def test_failed_decoder_stays_failed(self) -> None:
        decoder = FrameDecoder(4)
        with self.assertRaises(ProtocolError):
            decoder.feed(PROLOGUE + b"\x00\x00\x00\x05\x01")
        for data in (b"", b"\x00", PROLOGUE):
            with self.subTest(data=data), self.assertRaises(ProtocolError) as caught:
                decoder.feed(data)
            self.assertEqual(caught.exception.code, ErrorCode.TOO_LARGE)
        self.assertEqual(decoder.buffered, 0)

    def test_buffered_counts_partial_item(self) -> None:
        decoder = FrameDecoder(100)
        decoder.feed(PROLOGUE[:3])
        self.assertEqual(decoder.buffered, 3)
        decoder.feed(PROLOGUE[3:] + encode_frame(1, b"abcdef", 100)[:8])
        self.assertEqual(decoder.buffered, 8)

    def test_buffer_bounded_under_one_large_feed(self) -> None:
        limit = 64
        frame = encode_frame(9, b"y" * limit, limit)
        decoder = FrameDecoder(limit)
        decoder.feed(PROLOGUE)
        items = decoder.feed(frame * 50 + frame[:-1])
        self.assertEqual(len(items), 50)
        self.assertEqual(decoder.buffered, len(frame) - 1)
        self.assertLessEqual(decoder.buffered, HEADER_SIZE + limit)


frames = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=8)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


class PropertyTest(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(frames, st.data())
    def test_any_chunking_round_trips(self, sent: list[tuple[int, bytes]],
                                      data: st.DataObject) -> None:
        wire = PROLOGUE + b"".join(encode_frame(t, p, 40) for t, p in sent)
        decoder = FrameDecoder(40)
        items: list[Prologue | Frame] = []
        for chunk in data.draw(chunked(wire)):
            items.extend(decoder.feed(chunk))
            self.assertLessEqual(decoder.buffered, HEADER_SIZE + 40)
        self.assertEqual(items, [Prologue(PROTOCOL_VERSION), *(Frame(t, p) for t, p in sent)])
        self.assertEqual(decoder.buffered, 0)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=200), st.booleans(), st.integers(0, 64))
    def test_arbitrary_bytes_only_raise_protocol_error(self, data: bytes, with_prologue: bool,
                                                       limit: int) -> None:
        decoder = FrameDecoder(limit)
        try:
            feed_bytewise(decoder, (PROLOGUE if with_prologue else b"") + data)
        except ProtocolError as exc:
            self.assertIn(exc.code, (ErrorCode.MALFORMED, ErrorCode.TOO_LARGE))
        # Before the prologue is complete the bound is the prologue's own size.
        self.assertLessEqual(decoder.buffered, max(PROLOGUE_SIZE, HEADER_SIZE + limit))


if __name__ == "__main__":
    unittest.main()
