"""batching: cutting due mail into bursts per recipient and bursts into frames."""

from __future__ import annotations

import unittest

from hypothesis import given
from hypothesis import strategies as st

from fluxchat import messages as m
from fluxchat.batching import bursts, frames


def key(item: tuple[bytes, int]) -> bytes:
    return item[0]


class BurstsTest(unittest.TestCase):
    def test_per_recipient_in_order_of_first_appearance(self) -> None:
        due = [(b"a", 1), (b"b", 2), (b"a", 3), (b"a", 4), (b"c", 5), (b"a", 6)]
        out = bursts(due, key, 2, 10, lambda _: 5)
        self.assertEqual(out, [[(b"a", 1), (b"a", 3)], [(b"b", 2)], [(b"a", 4), (b"a", 6)],
                               [(b"c", 5)]])

    def test_count_and_room_bound_the_bursts(self) -> None:
        due = [(b"a", n) for n in range(10)] + [(b"b", 10)]
        self.assertEqual(bursts(due, key, 3, 2, lambda _: 5), [[(b"a", 0), (b"a", 1), (b"a", 2)],
                                                                 [(b"a", 3), (b"a", 4), (b"a", 5)]])
        room = {b"a": 1, b"b": 0}
        self.assertEqual(bursts(due, key, 3, 9, room.__getitem__), [[(b"a", 0), (b"a", 1), (b"a", 2)]])


class FramesTest(unittest.TestCase):
    @given(st.lists(st.integers(0, 3000), max_size=40), st.integers(200, 4000))
    def test_every_frame_fits_unless_one_envelope_alone_is_larger(self, sizes: list[int],
                                                                  limit: int) -> None:
        envelopes = [bytes(n) for n in sizes]
        groups = list(frames(envelopes, limit))
        self.assertEqual([i for group in groups for i in group], list(range(len(sizes))))
        for group in groups:
            _, payload = m.encode_message(m.DeliverMany(2**64 - 1,
                                                        tuple(envelopes[i] for i in group)))
            self.assertTrue(len(payload) <= limit or len(group) == 1, (group, len(payload)))


if __name__ == "__main__":
    unittest.main()
