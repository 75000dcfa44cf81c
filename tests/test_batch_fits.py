"""A storer only holds what it can hand out: every MailBatch fits one frame, tested at the boundary
(the accounting against the real encoder, and real nodes storing and fetching a frame-sized envelope)."""

from __future__ import annotations

import os
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat import messages as m
from fluxchat.cbor import dumps
from fluxchat.envelope import ENVELOPE_VERSION, NONCE_BYTES
from fluxchat.framing import DEFAULT_MAX_PAYLOAD
from fluxchat.mailroom import BATCH_OVERHEAD, ENVELOPE_OVERHEAD, max_held_envelope
from tests.keys import identity
from tests.lab import NodeTestCase, eventually

# CBOR's byte-string header grows at these lengths: the accounting must hold on either side.
EDGES = [0, 1, 23, 24, 255, 256, 65535, 65536]


def junk_envelope(recipient: bytes, expires_at: int, size: int) -> bytes:
    """An envelope with a valid clear header and `size` bytes in all (its ciphertext is noise)."""
    def build(cipher: int) -> bytes:
        return dumps([[ENVELOPE_VERSION, recipient, os.urandom(16), expires_at], b"\x01" * 512,
                      b"\x02" * NONCE_BYTES, b"\x03" * cipher])
    cipher = size - len(build(16)) + 16
    envelope = build(cipher)
    while len(envelope) != size:   # the length header may have grown by a few bytes
        cipher -= len(envelope) - size
        envelope = build(cipher)
    return envelope


class AccountingTest(unittest.TestCase):
    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.sampled_from(EDGES) | st.integers(0, 70000), max_size=6))
    def test_counted_size_bounds_the_encoded_batch(self, sizes: list[int]) -> None:
        envelopes = tuple(b"x" * n for n in sizes)
        _, payload = m.encode_message(m.MailBatch(2**64 - 1, envelopes, True))
        self.assertLessEqual(len(payload), BATCH_OVERHEAD + sum(n + ENVELOPE_OVERHEAD for n in sizes))

    def test_the_largest_held_envelope_fits_a_batch_alone(self) -> None:
        envelope = b"x" * max_held_envelope(DEFAULT_MAX_PAYLOAD)
        _, payload = m.encode_message(m.MailBatch(2**64 - 1, (envelope,), True))
        self.assertLessEqual(len(payload), DEFAULT_MAX_PAYLOAD)
        # ...while a Store one byte larger would still arrive in a frame: that is what we refuse.
        _, store = m.encode_message(m.Store(2**64 - 1, envelope + b"x"))
        self.assertLessEqual(len(store), DEFAULT_MAX_PAYLOAD)


class StorerTest(NodeTestCase):
    async def test_frame_sized_envelope_is_refused_and_the_largest_allowed_is_fetched(self) -> None:
        a, s = await self.chain(2)
        assert s.store is not None
        recipient = identity(2).node_id
        expires = int(a.clock()) + 3600
        limit = max_held_envelope(DEFAULT_MAX_PAYLOAD)
        link = await a.net.dial("127.0.0.1", s.port, s.identity.node_id)
        too_big = junk_envelope(recipient, expires, limit + 1)
        reply = await link.request(lambda rid: m.Store(rid, too_big))
        self.assertIsInstance(reply, m.Fail)
        self.assertIn("too large", reply.message if isinstance(reply, m.Fail) else "")
        largest = junk_envelope(recipient, expires, limit)
        self.assertIsInstance(await link.request(lambda rid: m.Store(rid, largest)), m.Ok)
        self.assertEqual(s.store.held_stats(), (1, limit))
        # The recipient comes online and fetches from the storer: the batch of one goes out in one
        # frame, the recipient drops the noise and deletes it at the storer.
        await self.start(2, [self.labs[1].address])
        await eventually(lambda: s.store is not None and s.store.held_stats()[0] == 0, timeout=15)


if __name__ == "__main__":
    unittest.main()
