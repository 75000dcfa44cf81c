"""The node-wide, fair budget of private-key work (fairshare.py): pure, the clock passed in."""

from __future__ import annotations

import unittest

from fluxchat.fairshare import FairShare


class FairShareTest(unittest.TestCase):
    def test_all_peers_together_stay_within_the_node_budget(self) -> None:
        share = FairShare(rate=10, burst=40, now=0.0)
        taken = 0
        for step in range(200):            # 8 peers asking 10 times a second for 20 s
            now = step * 0.1
            taken += sum(share.take(f"peer{p}", 1.0, now) for p in range(8))
        self.assertLessEqual(taken, 40 + 10 * 19.9 + 1)
        self.assertGreater(taken, 10 * 19.9 * 0.9)   # and the budget is used, not wasted

    def test_when_contended_the_heaviest_peers_wait_and_a_newcomer_is_served(self) -> None:
        share = FairShare(rate=10, burst=40, now=0.0)
        while share.take("heavy", 1.0, 0.0):   # a lone peer may take everything...
            pass
        self.assertEqual(share.share_of("heavy", 0.0), 40)
        # ...but once the node is contended, the newcomer gets what refills, not the heavy one.
        self.assertTrue(share.take("newcomer", 1.0, 0.1))
        self.assertFalse(share.take("heavy", 1.0, 0.2))
        self.assertTrue(share.take("newcomer", 1.0, 0.2))

    def test_equal_peers_get_equal_shares(self) -> None:
        share = FairShare(rate=10, burst=40, now=0.0)
        got = dict.fromkeys(("a", "b", "c", "d"), 0)
        for step in range(300):   # everybody asks 10 times more than the node allows
            now = step * 0.025
            for peer in got:
                got[peer] += share.take(peer, 1.0, now)
        self.assertLessEqual(max(got.values()) - min(got.values()), 3)

    def test_idle_peers_are_forgotten_and_memory_is_bounded(self) -> None:
        share = FairShare(rate=1000, burst=1000, now=0.0, active=5.0, max_peers=100)
        for p in range(500):
            share.take(f"p{p}", 1.0, 0.0)
        self.assertLessEqual(len(share._use), 100)   # noqa: SLF001 - the bound under test
        share.take("late", 1.0, 10.0)
        self.assertEqual(list(share._use), ["late"])   # noqa: SLF001


if __name__ == "__main__":
    unittest.main()
