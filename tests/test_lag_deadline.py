"""The TLS deadline of an accepted connection does not charge the peer for our own stalls,
and stays a bound: pure rules, then a real listener whose whole process stalls mid-accept."""

from __future__ import annotations

import asyncio
import time
import unittest

from fluxchat.lag_deadline import GRACE, NOISE, SLICE, LagDeadline, tls_deadline
from fluxchat.tls import client_context
from tests.adversary import tcp
from tests.lab import eventually
from tests.test_attacks import ATTACK_SOURCES, PeerAttackCase, limits


def look(deadline: LagDeadline, now: float, late: float = 0.0) -> float:
    """One wait as asked for, ending `late` seconds after it should; the time it ended."""
    woke = now + deadline.wait(now) + late
    deadline.woke(woke)
    return woke


class RulesTest(unittest.TestCase):
    def test_on_time_looks_change_nothing(self) -> None:
        deadline, now = LagDeadline(3.0, 6.0), 0.0
        while not deadline.expired(now):
            self.assertLessEqual(deadline.wait(now), SLICE)
            now = look(deadline, now, late=NOISE / 2)   # timer resolution, not a stall
        self.assertEqual(deadline.lag, 0.0)
        self.assertEqual(deadline.due(), 3.0)
        self.assertEqual(deadline.wait(now), 0.0)

    def test_a_stall_moves_the_deadline_by_its_length(self) -> None:
        deadline = LagDeadline(3.0, 6.0)
        now = look(deadline, 0.0, late=2.0)   # we were not running for 2 s
        self.assertAlmostEqual(deadline.lag, 2.0)
        self.assertAlmostEqual(deadline.due(), 5.0)
        self.assertFalse(deadline.expired(now))

    def test_stalls_are_forgiven_up_to_the_grace_only(self) -> None:
        deadline, now = LagDeadline(3.0, 6.0), 0.0
        while not deadline.expired(now):
            now = look(deadline, now, late=1.0)   # stalled again and again
        self.assertEqual(deadline.lag, 6.0)
        self.assertEqual(deadline.due(), 9.0)
        self.assertLessEqual(now, 9.0 + SLICE + 1.0)

    def test_an_early_end_is_no_stall(self) -> None:
        deadline = LagDeadline(3.0, 6.0)
        deadline.wait(0.0)
        deadline.woke(0.01)   # the handshake finished first
        self.assertEqual(deadline.lag, 0.0)

    def test_the_tls_deadline_never_passes_the_handshake_deadline(self) -> None:
        default = tls_deadline(100.0, 3.0, 10.0)
        self.assertEqual((default.deadline, default.grace), (103.0, 6.0))
        self.assertEqual(GRACE, 2.0)
        tight = tls_deadline(100.0, 3.0, 5.0)
        self.assertEqual((tight.deadline, tight.grace), (103.0, 2.0))
        short = tls_deadline(100.0, 3.0, 1.0)
        self.assertEqual((short.deadline, short.grace), (101.0, 0.0))


class StalledAcceptorTest(PeerAttackCase):
    async def test_our_own_stall_is_not_charged_to_the_peer(self) -> None:
        victim, port = await self.victim(limits(tls_timeout=1.0), handshake_timeout=60)
        reader, writer = await tcp("127.0.0.1", port)
        await eventually(lambda: victim.net.admission.in_flight == 1)
        # The whole process stalls past the TLS deadline, as under a load average of 20;
        # the peer (here in the same process) could not have sent anything meanwhile.
        time.sleep(1.6)
        await asyncio.wait_for(writer.start_tls(client_context()), 30)
        self.assertIsNotNone(writer.get_extra_info("ssl_object"))
        writer.transport.abort()

    async def test_a_silent_socket_is_still_dropped_within_timeout_and_grace(self) -> None:
        victim, port = await self.victim(limits(tls_timeout=0.3), handshake_timeout=60)
        reader, writer = await tcp("127.0.0.1", port, ATTACK_SOURCES[0])
        await eventually(lambda: victim.net.admission.in_flight == 1)
        for _ in range(6):   # stalls again and again: 3 s, five times timeout and grace
            time.sleep(0.5)
            await asyncio.sleep(0)
        # Closed long before the 60 s handshake deadline: the slot is free again.
        self.assertEqual(await asyncio.wait_for(reader.read(), 30), b"")
        await eventually(lambda: victim.net.admission.in_flight == 0)
        writer.close()


if __name__ == "__main__":
    unittest.main()
