"""Contact strings and the per-address rate limiter (pure helpers of the peer layer)."""

from __future__ import annotations

import unittest

from fluxchat.contact import Contact, advertise, parse_contact, resolve, valid_host
from fluxchat.ratelimit import RateLimiter


class ContactTest(unittest.TestCase):
    def test_advertise_carries_our_port_for_public(self) -> None:
        self.assertEqual(advertise("public", 25009), "public:25009")
        for contact in ("private", "public:1", "example.org:25001"):
            self.assertEqual(advertise(contact, 25009), contact)

    def test_resolve_forms(self) -> None:
        self.assertEqual(resolve("public:25001", "192.0.2.9"), ("192.0.2.9", 25001))
        self.assertEqual(resolve("example.org:25001", "192.0.2.9"), ("example.org", 25001))
        self.assertEqual(resolve("[2001:db8::1]:25001", ""), ("2001:db8::1", 25001))
        self.assertEqual(resolve("2001:db8::1:25001", ""), ("2001:db8::1", 25001))

    def test_unusable_contacts_are_never_handed_out(self) -> None:
        for contact, observed in (("private", "192.0.2.9"), ("", "192.0.2.9"),
                                  ("public:0", "192.0.2.9"), ("public:70000", "192.0.2.9"),
                                  ("public:25001", ""), ("0.0.0.0:25001", ""),
                                  ("224.0.0.1:25001", ""), ("bad host:25001", ""),
                                  ("host:abc", ""), ("noport", ""), ("a..b:1", ""),
                                  ("x" * 300 + ":1", ""), ("héllo:1", "")):
            self.assertIsNone(resolve(contact, observed), contact)

    def test_one_parser_for_our_contact_and_theirs(self) -> None:
        self.assertEqual(parse_contact("private"), Contact(private=True))
        self.assertEqual(parse_contact("public"), Contact(private=False))
        self.assertEqual(parse_contact("public:7"), Contact(private=False, port=7))
        self.assertEqual(parse_contact("[2001:db8::1]:9"), Contact(False, "2001:db8::1", 9))
        for bad in ("", "public:0", "bad host:1", "x:123456", "host:", ":1"):
            with self.assertRaises(ValueError):
                parse_contact(bad)
            self.assertIsNone(resolve(bad, "192.0.2.9"))

    def test_valid_host(self) -> None:
        self.assertTrue(valid_host("node-1.example.org"))
        self.assertTrue(valid_host("10.0.0.1"))
        self.assertFalse(valid_host("::"))
        self.assertFalse(valid_host(""))
        self.assertFalse(valid_host("a b"))


class RateLimiterTest(unittest.TestCase):
    def test_burst_then_rate(self) -> None:
        limiter = RateLimiter(rate=2.0, burst=3.0)
        self.assertEqual([limiter.allow("a", 0.0) for _ in range(4)], [True, True, True, False])
        self.assertTrue(limiter.allow("b", 0.0))          # keys are independent
        self.assertFalse(limiter.allow("a", 0.4))
        self.assertTrue(limiter.allow("a", 0.5))          # one token back after 1/rate s
        self.assertFalse(limiter.allow("a", 0.5))

    def test_memory_stays_bounded_under_a_flood_of_keys(self) -> None:
        limiter = RateLimiter(rate=1.0, burst=2.0, max_keys=100)
        for i in range(1000):
            limiter.allow(f"10.0.{i // 250}.{i % 250}", float(i) / 1000)
        self.assertLessEqual(len(limiter._buckets), 100)  # noqa: SLF001 - the bound under test
        # After refilling, old keys carry no information and are forgotten.
        limiter.allow("late", 100.0)
        self.assertLessEqual(len(limiter._buckets), 100)  # noqa: SLF001


if __name__ == "__main__":
    unittest.main()
