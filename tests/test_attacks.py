"""Attacks on the peer layer, each run with the adversary kit against real nodes on loopback.

Every test exceeds one bound on purpose and then asserts the bound itself (links, slots,
bytes, frames), not how long something took.
"""

from __future__ import annotations

import asyncio
import os
import unittest

from fluxchat import messages as m
from fluxchat.link import Link
from fluxchat.peer_net import DialError
from tests.adversary import Attacker, hostile_net
from tests.keys import identity
from tests.lab import LabNode, NodeTestCase

ATTACKER = 21


class PinTest(NodeTestCase):
    """Issue 10.1: every dial returns a link authenticated as the expected ID, or fails."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        fakes = [os.urandom(32) for _ in range(39)]
        self.fakes = fakes

        async def lie(link: Link, message: m.Message) -> m.Message | None:
            # Every made-up ID "lives" at the attacker's own address.
            if isinstance(message, m.FindNode):
                return m.Nodes(message.rid, tuple(m.NodeInfo(f, "127.0.0.1", self.port)
                                                  for f in fakes[:20]))
            if isinstance(message, m.Store):
                return m.Ok(message.rid)
            return None

        self.attacker = hostile_net(ATTACKER, lie)
        self.port = await self.attacker.listen("127.0.0.1", 0)

    async def asyncTearDown(self) -> None:
        await self.attacker.close()
        await super().asyncTearDown()

    async def test_a_link_to_an_address_is_not_lent_to_other_ids(self) -> None:
        lab = LabNode(self.dir, 0, [f"127.0.0.1:{self.port}"])
        self.labs.append(lab)
        victim = await lab.start()
        self.assertIn(identity(ATTACKER).node_id, victim.net.links)
        for fake in self.fakes:
            with self.assertRaises(DialError):
                await victim.net.dial("127.0.0.1", self.port, fake)
        # Concurrent dials to one address for different IDs are not shared either.
        results = await asyncio.gather(
            victim.net.dial("127.0.0.1", self.port),
            *(victim.net.dial("127.0.0.1", self.port, f) for f in self.fakes[:5]),
            return_exceptions=True)
        self.assertEqual(results[0].peer_id, identity(ATTACKER).node_id)   # type: ignore
        self.assertTrue(all(isinstance(r, DialError) for r in results[1:]))
        self.assertEqual(set(victim.net.links), {identity(ATTACKER).node_id})

    async def test_made_up_ids_never_enter_the_routing_table(self) -> None:
        lab = LabNode(self.dir, 0, [f"127.0.0.1:{self.port}"])
        self.labs.append(lab)
        victim = await lab.start()
        for _ in range(3):
            await victim.overlay.find_node(os.urandom(32))
        ids = {entry.peer.node_id for entry in victim.overlay.table.entries()}
        self.assertEqual(ids & set(self.fakes), set())
        self.assertEqual(ids, {identity(ATTACKER).node_id})
        # Asked to reach a made-up ID, the victim fails rather than "deliver" to the attacker.
        with self.assertRaises(DialError):
            await victim.net.request("127.0.0.1", self.port, self.fakes[0], m.Ping)


class KitTest(NodeTestCase):
    """The kit itself: it gets in as an honest peer would, and stalls where it is told."""

    async def test_attacker_authenticates_and_is_answered(self) -> None:
        victim = (await self.chain(1))[0]
        attacker = await Attacker.connect("127.0.0.1", victim.port, ATTACKER)
        self.assertEqual(attacker.peer_id, victim.identity.node_id)
        rid = attacker.request(lambda rid: m.FindNode(rid, bytes(32)))
        self.assertIsInstance(await attacker.response(rid), m.Nodes)
        attacker.close()


if __name__ == "__main__":
    unittest.main()
