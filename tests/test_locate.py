"""Overlay.locate: a lookup for a node ends as soon as the node itself answers, without
waiting for slower or dead neighbours of its ID (what bench/sim.py shows matters at scale)."""

from __future__ import annotations

import asyncio
import os
import time
import unittest

from fluxchat.overlay import QUERY_TIMEOUT
from fluxchat.routing import Peer
from tests.lab import NodeTestCase, eventually

# Over links: these tests time link setup (datagram lookups: tests/test_datagram_network.py).
QUIET = {"mail": {"fetch_interval": 300}, "datagrams": {"enabled": False}}


class LocateTest(NodeTestCase):
    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.held: list[asyncio.StreamWriter] = []

        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.held.append(writer)   # accept, then never say a word: a dead peer's cost

        self.silent = await asyncio.start_server(hold, "127.0.0.1", 0)

    async def asyncTearDown(self) -> None:
        for writer in self.held:
            writer.close()
        self.silent.close()
        await self.silent.wait_closed()
        await super().asyncTearDown()

    async def test_ends_when_the_target_answers_not_after_a_dead_neighbours_timeout(self) -> None:
        asker, _middle, target = await self.chain(3, **QUIET)
        goal = target.identity.node_id
        await eventually(lambda: goal in asker.overlay.table)
        # A silent node whose ID is as close to the target's as it gets: it is asked in the
        # lookup's first round, and only the dial timeout would ever settle it.
        neighbour = goal[:-1] + bytes([goal[-1] ^ 1])
        port = self.silent.sockets[0].getsockname()[1]
        asker.overlay.table.observe(Peer(neighbour, "127.0.0.1", port), time.time())
        started = time.monotonic()
        found = await asker.overlay.locate(goal)
        elapsed = time.monotonic() - started
        assert found is not None
        self.assertEqual((found.node_id, found.port), (goal, target.port))
        self.assertGreater(asker.config.client.auth_timeout, 2.0)
        self.assertLess(elapsed, 2.0)   # the silent neighbour's query was not waited for
        await eventually(lambda: len(self.held) == 1)   # ... although it was asked

    async def test_a_slow_query_does_not_hold_up_the_next_one(self) -> None:
        # alpha = 1: one query at a time, so only the slow mark lets the lookup go past the
        # silent node before its QUERY_TIMEOUT.
        asker, middle, target = await self.chain(3, kademlia={"alpha": 1}, **QUIET)
        goal = target.identity.node_id
        await eventually(lambda: goal in asker.overlay.table)
        # Queries over a link are timed: the joins closed theirs, so make one.
        await asker.net.dial("127.0.0.1", middle.port, middle.identity.node_id)
        await asker.overlay.find_node(os.urandom(32))     # the node has timed some queries
        self.assertLess(asker.overlay.times.slow_after(True), 1.0)
        neighbour = goal[:-1] + bytes([goal[-1] ^ 1])
        port = self.silent.sockets[0].getsockname()[1]
        asker.overlay.table.observe(Peer(neighbour, "127.0.0.1", port), time.time())
        asker.overlay.table.remove(goal)   # so the silent node is the closest one we know
        asker.overlay.times.record(False, 0.05)   # dialing here takes milliseconds
        started = time.monotonic()
        found = await asker.overlay.locate(goal)
        elapsed = time.monotonic() - started
        self.assertEqual(found.node_id if found else None, goal)
        self.assertGreaterEqual(QUERY_TIMEOUT, 4.0)
        self.assertLess(elapsed, 2.0)
        await eventually(lambda: len(self.held) == 1)   # the silent node was asked first

    async def test_an_absent_node_is_not_found(self) -> None:
        asker, _middle, _last = await self.chain(3, **QUIET)
        self.assertIsNone(await asker.overlay.locate(os.urandom(32)))
        self.assertIsNone(await asker.overlay.find_contact(os.urandom(32)))


if __name__ == "__main__":
    unittest.main()
