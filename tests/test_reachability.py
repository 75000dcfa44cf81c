"""Reachability: the pure decisions, and dial-back over real links on loopback."""

from __future__ import annotations

import socket
import unittest

from fluxchat import messages as m
from fluxchat.probe import probe
from fluxchat.reachability import (
    BACKOFF_BASE,
    MAX_PROBES,
    AddressBook,
    DialBackGuard,
    Status,
    judge,
    network_of,
    pick_helpers,
)
from fluxchat.wire_fields import ErrorCode
from tests.lab import NodeTestCase, eventually


class PureDecisionsTest(unittest.TestCase):
    def test_helpers_come_from_different_networks_first(self) -> None:
        candidates = [(b"a", "198.51.100.1"), (b"b", "198.51.100.2"), (b"c", "203.0.113.9"),
                      (b"d", "192.0.2.4")]
        self.assertEqual(pick_helpers(candidates, 3), [b"a", b"c", b"d"])
        self.assertEqual(pick_helpers(candidates[:2], 3), [b"a", b"b"])
        self.assertEqual(pick_helpers(candidates + [(b"a", "192.0.2.9")], 9),
                         [b"a", b"c", b"d", b"b"])

    def test_networks(self) -> None:
        self.assertEqual(network_of("198.51.100.77"), "198.51.100.0/24")
        self.assertEqual(network_of("2001:db8:1:2::5"), "2001:db8:1::/48")
        self.assertEqual(network_of("example.org"), "example.org")

    def test_verdicts(self) -> None:
        self.assertIs(judge("", [], 5.0).status, Status.UNKNOWN)
        self.assertIs(judge("h:1", [False, False], 5.0).status, Status.UNREACHABLE)
        self.assertIs(judge("h:1", [True, False], 5.0).status, Status.REACHABLE)
        self.assertIs(judge("h:1", [True, False, False], 5.0).status, Status.UNREACHABLE)
        verdict = judge("h:1", [True, True], 7.0)
        self.assertEqual((verdict.address, verdict.checked_at, verdict.answers,
                          verdict.successes), ("h:1", 7.0, 2, 2))

    def test_guard_bounds_per_requester_per_network_and_in_flight(self) -> None:
        guard = DialBackGuard()
        self.assertTrue(guard.admit(b"x", "198.51.100.1", 0.0))
        self.assertTrue(guard.admit(b"x", "198.51.100.1", 0.0))
        self.assertFalse(guard.admit(b"x", "198.51.100.1", 0.0))   # burst of 2 per ID
        self.assertTrue(guard.admit(b"x", "198.51.100.1", 31.0))   # refilled
        # Many IDs from one /24: the network's bucket runs dry.
        allowed = sum(guard.admit(bytes([i]), "203.0.113.5", 100.0) for i in range(20))
        self.assertEqual(allowed, 8)
        for _ in range(MAX_PROBES):
            guard.begin()
        self.assertFalse(guard.admit(b"fresh", "192.0.2.1", 500.0))
        guard.end()
        self.assertTrue(guard.admit(b"fresh", "192.0.2.1", 500.0))

    def test_failed_addresses_back_off_exponentially(self) -> None:
        book = AddressBook()
        self.assertTrue(book.dial_allowed("h", 1, 0.0))
        self.assertEqual(book.failed("h", 1, 0.0), BACKOFF_BASE)
        self.assertFalse(book.dial_allowed("h", 1, 1.0))
        self.assertTrue(book.dial_allowed("h", 2, 1.0))   # per address
        self.assertEqual(book.failed("h", 1, 10.0), 10.0 + 2 * BACKOFF_BASE)
        book.succeeded(b"n", "h", 1, 30.0)
        self.assertTrue(book.dial_allowed("h", 1, 30.0))
        self.assertTrue(book.is_verified(b"n", "h", 1, 31.0))
        self.assertFalse(book.is_verified(b"n", "h", 2, 31.0))
        self.assertFalse(book.is_verified(b"n", "h", 1, 30.0 + 7200))


class DialBackNetworkTest(NodeTestCase):
    async def test_nodes_on_loopback_find_themselves_reachable(self) -> None:
        first, second, third = await self.chain(3)
        for node in (first, second, third):
            await eventually(lambda n=node: n.reach.verdict.status is not Status.UNKNOWN)
            self.assertIs(node.reach.verdict.status, Status.REACHABLE)
            self.assertEqual(node.reach.verdict.address, f"127.0.0.1:{node.port}")
            self.assertEqual(node.net.config.contact, f"public:{node.port}")
        # Inbound contacts were verified before entering the table.
        await eventually(lambda: third.identity.node_id in second.overlay.table)

    async def test_dial_back_is_rate_limited_per_requester(self) -> None:
        first, second = await self.chain(2)
        link = await second.net.dial("127.0.0.1", first.port, first.identity.node_id)
        answers = [await link.request(lambda rid: m.DialBack(rid, second.port))
                   for _ in range(4)]
        refused = [a for a in answers if isinstance(a, m.Fail)]
        self.assertTrue(refused)
        self.assertTrue(all(a.code == ErrorCode.RATE_LIMITED for a in refused))
        self.assertTrue(any(isinstance(a, m.DialBackReply) and a.reachable for a in answers))

    async def test_dial_back_goes_only_to_the_requester(self) -> None:
        first, second, third = await self.chain(3)
        # Second asks first to dial third's port: first dials second's own address at that
        # port, pinned to second's ID, so the "check" fails instead of reaching third.
        link = await second.net.dial("127.0.0.1", first.port, first.identity.node_id)
        reply = await link.request(lambda rid: m.DialBack(rid, third.port))
        assert isinstance(reply, m.DialBackReply)
        self.assertFalse(reply.reachable)
        self.assertEqual(reply.host, "127.0.0.1")

    async def test_probe_rejects_a_node_with_another_id(self) -> None:
        first, second = await self.chain(2)
        self.assertTrue(await probe("127.0.0.1", first.port, first.identity.node_id, 3))
        self.assertFalse(await probe("127.0.0.1", first.port, second.identity.node_id, 3))
        self.assertFalse(await probe("127.0.0.1", 1, first.identity.node_id, 3))


class JoinRetryTest(NodeTestCase):
    async def test_a_node_whose_bootstrap_failed_joins_when_the_peer_is_back(self) -> None:
        # The bootstrap address first swallows the connection and never answers (as a
        # network that drops packets for a while does), then a real node listens there.
        # A node that gave up after its first attempt would stay alone forever: no link,
        # an empty routing table, reachability unknown, no relays.
        silent = socket.create_server(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        try:
            lone = await self.start(1, [f"127.0.0.1:{port}"], client={"auth_timeout": 1})
            assert lone.node is not None
            self.assertEqual(lone.node.net.links, {})
            self.assertEqual(len(lone.node.overlay.table), 0)
        finally:
            silent.close()
        peer = await self.start(0, [], port=port)
        node = lone.node
        # Joined: the peer is in its table (the join's own links close once done).
        await eventually(lambda: peer.node_id in node.overlay.table)


if __name__ == "__main__":
    unittest.main()
