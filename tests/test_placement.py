"""Mail placement and exact re-replication (pure): who gets held mail when the set changes."""

from __future__ import annotations

import unittest

from fluxchat.placement import ReplicaSets, replica_targets
from fluxchat.routing import Peer

ME, RECIPIENT, STORER = (n.to_bytes(2, "big") * 16 for n in (1, 2, 3))


def peers(*numbers: int) -> list[Peer]:
    return [Peer(n.to_bytes(2, "big") * 16, "192.0.2.1", 40000 + n) for n in numbers]


class PlacementTest(unittest.TestCase):
    def test_replica_targets_skip_ourselves_and_the_recipient(self) -> None:
        closest = peers(1, 2, 7, 8, 9)
        self.assertEqual(replica_targets(closest, {ME, RECIPIENT}, 2), peers(7, 8))

    def test_only_newcomers_get_the_mail_after_the_set_changed(self) -> None:
        sets = ReplicaSets()
        sets.arrived(RECIPIENT, STORER, peers(10, 11, 12))
        self.assertEqual(sets.newcomers(RECIPIENT, peers(10, 11, 12)), [])
        # 12 left, 13 came: only 13 needs the mail.
        self.assertEqual(sets.newcomers(RECIPIENT, peers(10, 11, 13)), peers(13))
        # Later mail for the same recipient does not reset what we know.
        sets.arrived(RECIPIENT, STORER, peers(20, 21, 22))
        self.assertEqual(sets.newcomers(RECIPIENT, peers(10, 11, 13)), peers(13))

    def test_a_failed_store_is_tried_again_and_far_holders_are_forgotten(self) -> None:
        sets = ReplicaSets()
        sets.arrived(RECIPIENT, STORER, peers(10, 11))
        sets.given(RECIPIENT, peers(10, 13, 14), took=peers(14))   # 13 refused or timed out
        self.assertEqual(sets.newcomers(RECIPIENT, peers(10, 13, 14)), peers(13))
        # 11 dropped out of the k closest: if it comes back, it is a newcomer again.
        self.assertEqual(sets.newcomers(RECIPIENT, peers(10, 11)), peers(11))

    def test_unknown_recipients_go_to_the_whole_set_and_are_forgotten_when_gone(self) -> None:
        sets = ReplicaSets()
        self.assertEqual(sets.newcomers(RECIPIENT, peers(10, 11)), peers(10, 11))
        sets.arrived(RECIPIENT, STORER, peers(10))
        sets.arrived(STORER, RECIPIENT, peers(10))
        sets.keep_only({STORER})
        self.assertFalse(sets.known(RECIPIENT))
        self.assertEqual(len(sets), 1)

    def test_holders_per_recipient_stay_within_the_closest_set(self) -> None:
        sets = ReplicaSets()
        sets.arrived(RECIPIENT, STORER, peers(10))
        for n in range(11, 200):   # a long churn: each round a new member took the mail
            sets.given(RECIPIENT, peers(*range(max(10, n - 19), n + 1)), took=peers(n))
        self.assertLessEqual(len(sets._holders[RECIPIENT]), 20)   # noqa: SLF001 - the bound
        closest = peers(*range(180, 200))
        self.assertEqual(sets.newcomers(RECIPIENT, closest), [])
        self.assertEqual(sets.newcomers(RECIPIENT, peers(150)), peers(150))


if __name__ == "__main__":
    unittest.main()
