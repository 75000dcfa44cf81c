"""The pure mail-work limits: drain budgets and Notify coalescing."""

from __future__ import annotations

import unittest

from fluxchat.mail_limits import Drain, NoticeGate

A, B = b"a" * 32, b"b" * 32


class DrainTest(unittest.TestCase):
    def test_never_more_than_asked_for_and_within_bytes(self) -> None:
        drain = Drain(limit=3, max_rounds=4, max_bytes=10)
        self.assertEqual(drain.admit((b"1234",) * 9), (b"1234",) * 2)   # 3 asked, 10 bytes
        self.assertEqual(drain.taken_bytes, 8)
        self.assertFalse(drain.go_on(more=True, new_mail=2, complete=True))   # bytes nearly spent

    def test_stops_without_new_mail_after_max_rounds_or_when_incomplete(self) -> None:
        drain = Drain(limit=2, max_rounds=2, max_bytes=1000)
        drain.admit((b"x",))
        self.assertFalse(drain.go_on(more=True, new_mail=0, complete=True))
        self.assertFalse(drain.go_on(more=False, new_mail=1, complete=True))
        self.assertFalse(drain.go_on(more=True, new_mail=1, complete=False))
        self.assertTrue(drain.go_on(more=True, new_mail=1, complete=True))
        drain.admit((b"x",))
        self.assertFalse(drain.go_on(more=True, new_mail=1, complete=True))


class NoticeGateTest(unittest.TestCase):
    def test_notices_coalesce_and_one_during_a_fetch_asks_for_one_more(self) -> None:
        gate = NoticeGate(interval=5.0)
        self.assertTrue(gate.notice(A))
        self.assertFalse(gate.notice(A))          # a worker is already waiting
        self.assertTrue(gate.notice(B))           # peers are independent
        self.assertEqual(gate.delay(A, 100.0), 0.0)
        gate.started(A, 100.0)
        for _ in range(1000):
            self.assertFalse(gate.notice(A))
        self.assertTrue(gate.finished(A))         # exactly one more round
        self.assertEqual(gate.delay(A, 101.0), 4.0)
        gate.started(A, 105.0)
        self.assertFalse(gate.finished(A))
        self.assertTrue(gate.notice(A))           # the worker ended: a new one starts

    def test_abandoned_worker_is_forgotten(self) -> None:
        gate = NoticeGate()
        gate.notice(A)
        gate.abandoned(A)
        self.assertTrue(gate.notice(A))


if __name__ == "__main__":
    unittest.main()
