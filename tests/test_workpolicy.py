"""When an acceptor demands proof of work (workpolicy.py), decided without I/O."""

from __future__ import annotations

import unittest

from fluxchat.workpolicy import WorkLimits, WorkPolicy

PEER, OTHER = b"\x01" * 32, b"\x02" * 32
RECORD, NEWER = b"record-1", b"record-2"
HOME, ELSEWHERE = "192.0.2.7", "198.51.100.0/24"


def policy(**changes: object) -> WorkPolicy:
    values: dict[str, object] = dict(difficulty=16, busy_handshakes=16, blame_seconds=600.0,
                                     remember=3)
    values.update(changes)
    return WorkPolicy(WorkLimits(**values))  # type: ignore[arg-type]


class WorkPolicyTest(unittest.TestCase):
    def test_unknown_dialers_pay_and_known_ones_do_not(self) -> None:
        rules = policy()
        self.assertEqual(rules.difficulty(PEER, RECORD, HOME, 1, 0.0), 16)
        rules.learn(PEER, RECORD)
        self.assertEqual(rules.difficulty(PEER, RECORD, HOME, 1, 0.0), 0)
        self.assertEqual(rules.difficulty(PEER, RECORD, ELSEWHERE, 1, 0.0), 0)
        # Another ID, or the known ID with a record we have not verified, pays.
        self.assertEqual(rules.difficulty(OTHER, RECORD, HOME, 1, 0.0), 16)
        self.assertEqual(rules.difficulty(PEER, NEWER, HOME, 1, 0.0), 16)
        rules.learn(PEER, NEWER)
        self.assertEqual(rules.difficulty(PEER, NEWER, HOME, 1, 0.0), 0)
        self.assertEqual(rules.difficulty(PEER, RECORD, HOME, 1, 0.0), 16)

    def test_everybody_pays_while_busy(self) -> None:
        rules = policy(busy_handshakes=4)
        rules.learn(PEER, RECORD)
        self.assertEqual(rules.difficulty(PEER, RECORD, HOME, 3, 0.0), 0)
        self.assertEqual(rules.difficulty(PEER, RECORD, HOME, 4, 0.0), 16)

    def test_misbehaviour_costs_work_for_a_while(self) -> None:
        rules = policy()
        rules.learn(PEER, RECORD)
        rules.blame(HOME, 100.0)
        self.assertEqual(rules.difficulty(PEER, RECORD, HOME, 1, 100.0), 16)
        self.assertEqual(rules.difficulty(PEER, RECORD, ELSEWHERE, 1, 100.0), 0)
        self.assertEqual(rules.difficulty(PEER, RECORD, HOME, 1, 700.0), 0)   # forgiven
        rules.blame(PEER, 800.0)   # a verified ID that misbehaved is no longer known
        self.assertEqual(rules.difficulty(PEER, RECORD, ELSEWHERE, 1, 800.0), 16)
        self.assertEqual(rules.difficulty(PEER, RECORD, ELSEWHERE, 1, 2000.0), 16)
        rules.learn(PEER, RECORD)
        self.assertEqual(rules.difficulty(PEER, RECORD, ELSEWHERE, 1, 2000.0), 0)

    def test_memory_is_bounded(self) -> None:
        rules = policy(remember=3)
        peers = [bytes([i]) * 32 for i in range(5)]
        for peer in peers:
            rules.learn(peer, RECORD)
            rules.blame(peer.hex(), 0.0)
        self.assertEqual(len(rules._known), 3)    # noqa: SLF001 - the bound under test
        self.assertEqual(len(rules._blamed), 3)   # noqa: SLF001
        self.assertEqual(rules.difficulty(peers[0], RECORD, HOME, 1, 0.0), 16)
        self.assertEqual(rules.difficulty(peers[4], RECORD, HOME, 1, 0.0), 0)

    def test_an_empty_record_teaches_nothing(self) -> None:
        rules = policy()
        rules.learn(PEER, b"")
        self.assertEqual(rules.difficulty(PEER, b"", HOME, 1, 0.0), 16)


if __name__ == "__main__":
    unittest.main()
