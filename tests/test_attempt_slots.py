"""AttemptSlots (pure): how many attempts run, to whom, on which mail; and the states a move
may come from (outbox_states.sources), which the store's one-statement moves rely on."""

from __future__ import annotations

import unittest

from fluxchat.attempt_slots import AttemptSlots
from fluxchat.outbox_states import TRANSITIONS, OutboxState, allowed, sources

Mail = tuple[bytes, bytes]   # (recipient, uuid)


def mails(recipient: bytes, count: int, first: int = 0) -> list[Mail]:
    return [(recipient, bytes([first + i]) * 16) for i in range(count)]


def plan(slots: AttemptSlots, due: list[Mail], size: int = 2) -> list[list[Mail]]:
    return slots.plan(due, lambda mail: mail[0], lambda mail: mail[1], size)


class AttemptSlotsTest(unittest.TestCase):
    def test_bursts_per_recipient_and_in_all_are_bounded(self) -> None:
        slots = AttemptSlots(workers=3, per_recipient=2)
        due = mails(b"a", 7) + mails(b"b", 3, first=50)
        planned = plan(slots, due)
        self.assertEqual([[uuid[0] for _, uuid in burst] for burst in planned],
                         [[0, 1], [2, 3], [50, 51]])
        self.assertEqual((slots.room(), slots.room_for(b"a"), slots.full()), (0, 0, [b"a"]))
        self.assertEqual(plan(slots, mails(b"c", 2, first=90)), [])
        self.assertEqual(len(slots.busy), 6)

    def test_released_slots_and_mail_are_free_again(self) -> None:
        slots = AttemptSlots(workers=4, per_recipient=1)
        (burst,) = plan(slots, mails(b"a", 2))
        slots.release(b"a", (uuid for _, uuid in burst))
        self.assertEqual((slots.room(), slots.room_for(b"a"), slots.full(), slots.busy),
                         (4, 1, [], set()))


class SourcesTest(unittest.TestCase):
    def test_sources_are_exactly_the_states_allowed_to_move_there(self) -> None:
        for new in OutboxState:
            self.assertEqual(set(sources(new)),
                             {old for old in TRANSITIONS if allowed(old, new)}, new)


if __name__ == "__main__":
    unittest.main()
