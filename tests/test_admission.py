"""Handshake admission and per-prefix rate limits: pure, with made-up times."""

from __future__ import annotations

import unittest

from fluxchat.admission import Admission, AdmissionLimits, Slot, prefix_of
from fluxchat.pow import affordable_difficulty
from fluxchat.ratelimit import RateLimiter, TokenBucket


class PrefixTest(unittest.TestCase):
    def test_prefixes(self) -> None:
        self.assertEqual(prefix_of("192.0.2.77"), "192.0.2.0/24")
        self.assertEqual(prefix_of("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(prefix_of("::ffff:198.51.100.9"), "198.51.100.0/24")
        self.assertEqual(prefix_of("not-an-address"), "not-an-address")


class AdmissionTest(unittest.TestCase):
    def test_one_prefix_cannot_take_every_slot(self) -> None:
        admission = Admission(AdmissionLimits(max_handshakes=8, per_prefix=2, reserved=2))
        slots = [admission.admit(f"203.0.113.{i}") for i in range(10)]
        self.assertEqual(sum(isinstance(s, Slot) for s in slots), 2)
        self.assertIsInstance(admission.admit("198.51.100.1"), Slot)
        self.assertEqual(admission.in_flight, 3)

    def test_slots_are_given_back_exactly_once(self) -> None:
        admission = Admission(AdmissionLimits(max_handshakes=4, per_prefix=4, reserved=0))
        slot = admission.admit("192.0.2.1")
        assert isinstance(slot, Slot)
        admission.release(slot, established=False)
        admission.release(slot, established=False)
        self.assertEqual(admission.in_flight, 0)
        self.assertEqual(admission.in_flight_from("192.0.2.1"), 0)

    def test_reserved_slots_are_kept_for_addresses_with_a_good_history(self) -> None:
        admission = Admission(AdmissionLimits(max_handshakes=6, per_prefix=2, reserved=2))
        known = admission.admit("192.0.2.1")
        assert isinstance(known, Slot)
        admission.release(known, established=True)
        # Newcomers from many prefixes fill what is not reserved...
        newcomers = [admission.admit(f"198.51.{i}.1") for i in range(10)]
        self.assertEqual(sum(isinstance(s, Slot) for s in newcomers), 4)
        self.assertIsInstance(admission.admit("203.0.113.5"), str)
        # ...and the peer we know still gets in.
        self.assertIsInstance(admission.admit("192.0.2.1"), Slot)

    def test_known_neighbours_do_not_share_their_prefix_allowance(self) -> None:
        admission = Admission(AdmissionLimits(max_handshakes=16, per_prefix=2, reserved=4))
        for host in ("198.51.100.10", "198.51.100.11"):
            admission.remember(host)
        for _ in range(2):   # newcomers fill the prefix's allowance...
            self.assertIsInstance(admission.admit("198.51.100.99"), Slot)
        self.assertIsInstance(admission.admit("198.51.100.98"), str)
        # ...and each known neighbour still has its own.
        for host in ("198.51.100.10", "198.51.100.11"):
            self.assertIsInstance(admission.admit(host), Slot)
            self.assertIsInstance(admission.admit(host), Slot)
            self.assertIsInstance(admission.admit(host), str)
        self.assertEqual(admission.key_of("198.51.100.10"), "198.51.100.10")
        self.assertEqual(admission.key_of("198.51.100.99"), "198.51.100.0/24")

    def test_memory_of_good_addresses_is_bounded(self) -> None:
        admission = Admission(AdmissionLimits(4, 4, 1), max_remembered=10)
        for i in range(100):
            admission.remember(f"10.0.0.{i}")
        self.assertEqual(len(admission._good), 10)   # noqa: SLF001 - the bound under test


class RateLimiterTest(unittest.TestCase):
    def test_a_flood_of_new_keys_evicts_the_quiet_not_the_busy(self) -> None:
        limiter = RateLimiter(rate=1.0, burst=2.0, max_keys=100)
        self.assertTrue(limiter.allow("busy", 0.0))
        self.assertTrue(limiter.allow("busy", 0.0))
        for i in range(1000):
            limiter.allow(f"new{i}", 0.0)
            limiter.allow("busy", 0.0)   # keeps its place, keeps its (empty) bucket
        self.assertEqual(len(limiter), 100)
        self.assertFalse(limiter.allow("busy", 0.0))

    def test_token_bucket_refills_at_its_rate(self) -> None:
        bucket = TokenBucket(rate=10.0, burst=5.0, now=0.0)
        self.assertTrue(bucket.take(0.0, 5))
        self.assertFalse(bucket.take(0.0))
        self.assertTrue(bucket.take(0.1))
        self.assertFalse(bucket.take(0.1))


class AffordableDifficultyTest(unittest.TestCase):
    def test_four_times_the_mean_work_must_fit_the_budget(self) -> None:
        self.assertEqual(affordable_difficulty(0), 0)
        self.assertEqual(affordable_difficulty(4 * 2**16), 16)
        self.assertEqual(affordable_difficulty(4 * 2**16 - 1), 15)
        self.assertEqual(affordable_difficulty(1e30), 40)


if __name__ == "__main__":
    unittest.main()
