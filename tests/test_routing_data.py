"""Routing data is never taken on a peer's word: pure address rules, and the attacks on
real in-process nodes over TLS (a third party's claimed address, names and bogus hosts in
Nodes replies)."""

from __future__ import annotations

import os
import unittest
from typing import Any

from fluxchat import messages as m
from fluxchat.addresses import observed_address, reported_ok, routable
from fluxchat.link import Link
from tests.lab import NodeTestCase, eventually


class AddressRulesTest(unittest.TestCase):
    def test_only_unicast_ip_literals_are_routable(self) -> None:
        for host in ("127.0.0.1", "::1", "203.0.113.9", "2001:db8::5", "8.8.8.8"):
            self.assertTrue(routable(host), host)
        for host in ("", "node.example.org", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255",
                     "240.1.2.3", "1.2.3.4\n", "[::1]"):
            self.assertFalse(routable(host), host)

    def test_a_reporter_cannot_point_us_somewhere_more_local_than_itself(self) -> None:
        self.assertTrue(reported_ok("8.8.8.8", "127.0.0.1"))       # a lab may name anything
        self.assertTrue(reported_ok("203.0.113.5", "192.0.2.1"))   # LAN to LAN
        self.assertTrue(reported_ok("8.8.4.4", "8.8.8.8"))
        self.assertFalse(reported_ok("127.0.0.1", "8.8.8.8"))     # global → our loopback
        self.assertFalse(reported_ok("10.0.0.1", "8.8.8.8"))      # global → our LAN
        self.assertFalse(reported_ok("127.0.0.1", "10.0.0.2"))
        self.assertFalse(reported_ok("evil.example", "127.0.0.1"))

    def test_observed_address(self) -> None:
        seen = ("198.51.100.7", 40000)
        self.assertEqual(observed_address("out", "public:25001", ("198.51.100.7", 25001)),
                         ("198.51.100.7", 25001))
        self.assertEqual(observed_address("in", "public:25001", seen), ("198.51.100.7", 25001))
        self.assertEqual(observed_address("in", "198.51.100.7:25002", seen), ("198.51.100.7", 25002))
        # Claims of another host or a name are not taken from an inbound link.
        self.assertIsNone(observed_address("in", "203.0.113.1:25001", seen))
        self.assertIsNone(observed_address("in", "node.example.org:25001", seen))
        self.assertIsNone(observed_address("in", "private", seen))
        self.assertIsNone(observed_address("out", "private", seen))
        self.assertIsNone(observed_address("in", "public:0", seen))

    def test_observed_address_is_parsed_once_per_link(self) -> None:
        # Asked again for every mail to a linked peer: the answer is kept, not parsed anew.
        link = ("in", "public:25003", ("198.51.100.8", 40001))
        before = observed_address.cache_info().hits
        self.assertEqual(observed_address(*link), ("198.51.100.8", 25003))
        self.assertEqual(observed_address(*link), ("198.51.100.8", 25003))
        self.assertEqual(observed_address.cache_info().hits, before + 1)


class ClaimedAddressTest(NodeTestCase):
    async def test_a_third_party_cannot_publish_a_linked_private_node_elsewhere(self) -> None:
        victim, attacker = await self.chain(2)
        private = (await self.start(2, [f"127.0.0.1:{victim.port}"], contact="private")).node
        assert private is not None
        pid = private.identity.node_id
        await eventually(lambda: pid in victim.net.links)
        claimed = m.NodeInfo(pid, "127.0.0.77", 4444)
        attacker._handlers[m.FindNode] = lambda link, req: m.Nodes(req.rid, (claimed,))
        await victim.overlay.find_node(os.urandom(32))
        self.assertIn(pid, victim.net.links)   # the lookup did reach it, over its own link
        self.assertNotIn(pid, victim.overlay.table)
        self.assertNotIn(pid, [i.node_id for i in victim.overlay.closest_infos(pid, b"")])

    async def test_names_and_bogus_hosts_in_nodes_replies_are_never_dialed(self) -> None:
        victim, attacker = await self.chain(2)
        bogus = [m.NodeInfo(os.urandom(32), host, 25001)
                 for host in ("evil.example", "0.0.0.0", "224.0.0.9", "240.0.0.1")]
        attacker._handlers[m.FindNode] = lambda link, req: m.Nodes(req.rid, tuple(bogus))
        dialed: list[str] = []
        real_dial = victim.net.dial

        async def recording_dial(host: str, port: int, expected: bytes | None = None,
                                 **kw: Any) -> Link:
            dialed.append(host)
            return await real_dial(host, port, expected, **kw)

        victim.net.dial = recording_dial   # type: ignore[method-assign]
        found = await victim.overlay.find_node(os.urandom(32))
        self.assertEqual([p.node_id for p in found], [attacker.identity.node_id])
        self.assertEqual(set(dialed) - {"127.0.0.1"}, set())
        self.assertEqual(len(victim.overlay.table), 1)


if __name__ == "__main__":
    unittest.main()
