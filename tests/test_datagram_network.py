"""Lookup datagrams between real nodes on loopback (PROTOCOL.md §16): lookups without links,
fallback to links, forged answers, the answer budget, and junk that must not disturb a node."""

from __future__ import annotations

import asyncio
import os
import time
import unittest
from typing import Any

from fluxchat import datagram as d
from fluxchat.node import Node
from fluxchat.routing import Peer
from tests.lab import NodeTestCase, eventually

QUIET = {"mail": {"fetch_interval": 300}}
HOST = "127.0.0.1"


class Socket(asyncio.DatagramProtocol):
    """A bare UDP socket of the test: what it receives goes to a queue."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls, host: str = HOST) -> Socket:
        sock = cls()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: sock, local_addr=(host, 0))
        sock.transport = transport
        return sock

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, (addr[0], addr[1])))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (HOST, port))

    async def next(self, timeout: float = 10.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.received.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class DatagramNetworkTest(NodeTestCase):
    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.sockets: list[Socket] = []

    async def asyncTearDown(self) -> None:
        for sock in self.sockets:
            sock.close()
        await super().asyncTearDown()

    async def socket(self, host: str = HOST) -> Socket:
        sock = await Socket.open(host)
        self.sockets.append(sock)
        return sock

    async def lone(self, index: int, **overrides: Any) -> Node:
        """A node that knows nobody yet (no bootstrap): we fill its table by hand."""
        lab = await self.start(index, [], **_merged(QUIET, overrides))
        assert lab.node is not None
        return lab.node

    async def test_a_lookup_across_nodes_opens_no_link(self) -> None:
        chain = await self.chain(5, **QUIET)
        asker = await self.lone(5)
        first, last = chain[0], chain[-1]
        asker.overlay.table.observe(Peer(first.identity.node_id, HOST, first.port), time.time())
        found = await asker.overlay.find_node(last.identity.node_id)
        self.assertIn(last.identity.node_id, [p.node_id for p in found])
        self.assertEqual(len(asker.net.links), 0)          # node finding made no link
        stats = asker.overlay.datagrams.stats if asker.overlay.datagrams else {}
        self.assertGreaterEqual(stats["answers"], 2)
        self.assertEqual(stats["answers"], stats["asked"])
        self.assertEqual(stats["fell_back"], 0)
        self.assertGreater(sum(n.overlay.datagrams.stats["answered"]   # type: ignore[union-attr]
                               for n in chain), 0)
        # Responders enter the table only after a probe met their TLS key (no link either).
        await eventually(lambda: last.identity.node_id in asker.overlay.table)
        # What the lookup found is then used over links pinned to the ID, as before.
        self.assertEqual(await asker.overlay.publish_key(), len(found))

    async def test_a_node_with_datagrams_off_is_asked_over_a_link(self) -> None:
        chain = await self.chain(3, **QUIET)
        old = await self.start(3, [f"{HOST}:{chain[-1].port}"],
                               **_merged(QUIET, {"datagrams": {"enabled": False}}))
        assert old.node is not None
        self.assertIsNone(old.node.overlay.datagrams)
        asker = await self.lone(4)
        asker.overlay.table.observe(Peer(old.node_id, HOST, old.node.port), time.time())
        found = await asker.overlay.find_node(chain[0].identity.node_id)
        self.assertIn(chain[0].identity.node_id, [p.node_id for p in found])
        datagrams = asker.overlay.datagrams
        assert datagrams is not None
        self.assertEqual(datagrams.stats["fell_back"], 1)
        self.assertIn(old.node_id, asker.net.links)       # the fallback's link
        self.assertTrue(datagrams.silent.skip((HOST, old.node.port), time.monotonic()))
        self.assertFalse(datagrams.usable(HOST, old.node.port))   # links only, for a while
        # ... while the node itself still looks up over datagrams and answers over links.
        self.assertTrue(await old.node.overlay.find_node(os.urandom(32)))

    async def test_forged_answers_are_ignored(self) -> None:
        asker = await self.lone(0)
        datagrams = asker.overlay.datagrams
        assert datagrams is not None
        responder, forger = await self.socket(), await self.socket()
        target = os.urandom(32)
        query = asyncio.ensure_future(datagrams.find_node(HOST, responder.port, target))
        request, source = await responder.next()
        decoded = d.decode_request(request)
        assert decoded is not None
        self.assertEqual((decoded.target, source[1]), (target, asker.port))
        lie = [d.Contact(os.urandom(32), "198.51.100.9", 1)]
        truth = [d.Contact(os.urandom(32), "203.0.113.5", 25001)]
        forger.send(d.encode_answer(decoded.txid, lie), asker.port)           # wrong source
        responder.send(d.encode_answer(os.urandom(16), lie), asker.port)      # wrong txid
        responder.send(d.encode_answer(decoded.txid, truth), asker.port)      # the answer
        self.assertEqual(await query, truth)
        self.assertEqual(datagrams.stats["dropped"], 2)
        responder.send(d.encode_answer(decoded.txid, lie), asker.port)        # a replay
        await eventually(lambda: datagrams.stats["dropped"] == 3)
        self.assertEqual(len(datagrams.pending), 0)

    async def test_an_unanswered_query_gives_up_and_frees_its_transaction(self) -> None:
        asker = await self.lone(0)
        datagrams = asker.overlay.datagrams
        assert datagrams is not None
        silent = await self.socket()
        started = time.monotonic()
        self.assertIsNone(await datagrams.find_node(HOST, silent.port, os.urandom(32)))
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertEqual(len(datagrams.pending), 0)
        await silent.next()   # it was asked

    async def test_answers_per_source_prefix_are_bounded(self) -> None:
        node = await self.lone(0, datagrams={"per_source": 2, "total": 1000})
        asker = await self.socket()
        for _ in range(20):
            asker.send(d.encode_request(os.urandom(16), os.urandom(32)), node.port)
        other = await self.socket("127.0.9.1")     # another /24: its own budget
        other.send(d.encode_request(os.urandom(16), os.urandom(32)), node.port)
        await other.next()
        assert node.overlay.datagrams is not None
        stats = node.overlay.datagrams.stats
        await eventually(lambda: stats["answered"] + stats["refused"] == 21)
        self.assertEqual(stats["answered"], 5)           # a burst of 4, and the other /24
        self.assertEqual(asker.received.qsize(), 4)

    async def test_answers_in_all_are_bounded(self) -> None:
        node = await self.lone(0, datagrams={"per_source": 100, "total": 3})
        senders = [await self.socket(f"127.0.{i}.1") for i in range(10, 14)]
        for sender in senders:
            for _ in range(5):
                sender.send(d.encode_request(os.urandom(16), os.urandom(32)), node.port)
        assert node.overlay.datagrams is not None
        stats = node.overlay.datagrams.stats
        await eventually(lambda: stats["answered"] + stats["refused"] == 20)
        self.assertEqual(stats["answered"], 6)           # two seconds' worth, for everyone

    async def test_junk_does_not_disturb_the_node(self) -> None:
        node = await self.lone(0)
        sender = await self.socket()
        request = d.encode_request(os.urandom(16), os.urandom(32))
        junk = [b"\0", os.urandom(d.REQUEST_SIZE), request[:-1], request + b"\0",
                d.encode_answer(os.urandom(16), []),        # an answer nobody asked for
                b"FXDG\x01\x01" + bytes(10), b"FXDG\x07\x01" + request[6:],
                os.urandom(60_000)]
        for data in junk:
            sender.send(data, node.port)
        txid = os.urandom(16)
        sender.send(d.encode_request(txid, os.urandom(32)), node.port)
        data, _ = await sender.next()     # the first datagram back answers the good request
        answer = d.decode_answer(data)
        assert answer is not None and node.overlay.datagrams is not None
        self.assertEqual(answer.txid, txid)
        self.assertEqual(node.overlay.datagrams.stats["dropped"], len(junk))
        self.assertEqual(node.overlay.datagrams.stats["answered"], 1)
        # The node is well: it still takes links and answers over them.
        other = await self.start(1, [f"{HOST}:{node.port}"], **QUIET)
        await eventually(lambda: other.node_id in node.net.links)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    return merged


if __name__ == "__main__":
    unittest.main()
