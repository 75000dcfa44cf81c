"""Proof of work: known digest, solve/verify, binding to nonce and both IDs, limits."""

from __future__ import annotations

import hashlib
import unittest

from fluxchat import pow as work

NONCE = bytes(range(32))
DIALER = b"\xd1" * 32
ACCEPTOR = b"\xa2" * 32
OTHER = b"\xa3" * 32


class DigestTest(unittest.TestCase):
    def test_digest_layout(self) -> None:
        expected = hashlib.sha256(b"fluxchat-pow-v1" + NONCE + DIALER + ACCEPTOR
                                  + (258).to_bytes(8, "big")).digest()
        self.assertEqual(work.DOMAIN, b"fluxchat-pow-v1")
        self.assertEqual(work.work_digest(NONCE, DIALER, ACCEPTOR, 258), expected)

    def test_leading_zero_bits(self) -> None:
        self.assertEqual(work.leading_zero_bits(b"\x00" * 32), 256)
        self.assertEqual(work.leading_zero_bits(b"\x80" + b"\x00" * 31), 0)
        self.assertEqual(work.leading_zero_bits(b"\x00\x01" + b"\xff" * 30), 15)
        self.assertEqual(work.leading_zero_bits(b"\x00\x00\x10" + b"\x00" * 29), 19)


class SolveVerifyTest(unittest.TestCase):
    def test_solutions_verify_and_are_smallest(self) -> None:
        for difficulty in (0, 1, 8, 10, 12):
            with self.subTest(difficulty=difficulty):
                counter = work.solve(NONCE, DIALER, ACCEPTOR, difficulty)
                self.assertTrue(work.verify(NONCE, DIALER, ACCEPTOR, counter, difficulty))
                for smaller in range(counter):
                    self.assertFalse(work.verify(NONCE, DIALER, ACCEPTOR, smaller, difficulty))

    def test_zero_difficulty_is_counter_zero(self) -> None:
        self.assertEqual(work.solve(NONCE, DIALER, ACCEPTOR, 0), 0)

    def test_start_and_limit(self) -> None:
        first = work.solve(NONCE, DIALER, ACCEPTOR, 8)
        second = work.solve(NONCE, DIALER, ACCEPTOR, 8, start=first + 1)
        self.assertGreater(second, first)
        self.assertTrue(work.verify(NONCE, DIALER, ACCEPTOR, second, 8))
        with self.assertRaises(ValueError):
            work.solve(NONCE, DIALER, ACCEPTOR, 8, start=first + 1, limit=second)
        with self.assertRaises(ValueError):
            work.solve(NONCE, DIALER, ACCEPTOR, 8, start=5, limit=4)

    def test_wrong_counter_fails(self) -> None:
        counter = work.solve(NONCE, DIALER, ACCEPTOR, 12)
        rejected = [c for c in range(counter + 1, counter + 200)
                    if not work.verify(NONCE, DIALER, ACCEPTOR, c, 12)]
        self.assertGreater(len(rejected), 150)  # about 1 in 4096 passes by chance

    def test_solution_bound_to_acceptor_dialer_and_nonce(self) -> None:
        counter = work.solve(NONCE, DIALER, ACCEPTOR, 12)
        self.assertTrue(work.verify(NONCE, DIALER, ACCEPTOR, counter, 12))
        # Fixed inputs keep this deterministic; each variation's own solution differs too.
        for args in ((NONCE, DIALER, OTHER), (NONCE, OTHER, ACCEPTOR),
                     (b"\x00" * 32, DIALER, ACCEPTOR), (NONCE, ACCEPTOR, DIALER)):
            with self.subTest(args=[a[:2].hex() for a in args]):
                own = work.solve(*args, 12)
                self.assertNotEqual(own, counter)
                self.assertFalse(work.verify(*args, counter, 12))

    def test_verify_needs_full_difficulty(self) -> None:
        counter = work.solve(NONCE, DIALER, ACCEPTOR, 8)
        bits = work.leading_zero_bits(work.work_digest(NONCE, DIALER, ACCEPTOR, counter))
        self.assertTrue(work.verify(NONCE, DIALER, ACCEPTOR, counter, bits))
        self.assertFalse(work.verify(NONCE, DIALER, ACCEPTOR, counter, bits + 1))


class LimitTest(unittest.TestCase):
    def test_difficulty_above_max_refused(self) -> None:
        self.assertEqual(work.MAX_DIFFICULTY, 40)
        for difficulty in (41, 256, -1):
            with self.subTest(difficulty=difficulty), self.assertRaises(ValueError):
                work.solve(NONCE, DIALER, ACCEPTOR, difficulty)
            self.assertFalse(work.verify(NONCE, DIALER, ACCEPTOR, 0, difficulty))

    def test_verify_rejects_out_of_range_counters(self) -> None:
        self.assertFalse(work.verify(NONCE, DIALER, ACCEPTOR, -1, 0))
        self.assertFalse(work.verify(NONCE, DIALER, ACCEPTOR, 2**64, 0))
        self.assertTrue(work.verify(NONCE, DIALER, ACCEPTOR, 2**64 - 1, 0))


if __name__ == "__main__":
    unittest.main()
