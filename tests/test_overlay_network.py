"""Kademlia over real links: a 20-node chain, lookups of every node, rejoining after restart."""

from __future__ import annotations

import asyncio
import json
import unittest

from fluxchat.ids import id_from_spki
from tests.lab import LabNode, NodeTestCase, eventually, start_chain

NODES = 20
QUIET = {"mail": {"fetch_interval": 300}}   # routing only: no periodic mail fetches


class OverlayNetworkTest(NodeTestCase):
    async def test_chain_of_twenty_every_node_finds_every_contact_and_key(self) -> None:
        self.labs = await start_chain(self.dir, NODES, QUIET)
        nodes = [lab.node for lab in self.labs if lab.node is not None]
        # Each node looks up every other node: the lookup must reach the node itself.
        for node in nodes:
            targets = [other.identity.node_id for other in nodes if other is not node]
            found = await asyncio.gather(*(node.overlay.find_contact(t) for t in targets))
            missing = [t.hex()[:8] for t, peer in zip(targets, found, strict=True) if peer is None]
            self.assertEqual(missing, [], f"node {node.identity.id_text[:10]} missed some")
            for target, peer in zip(targets, found, strict=True):
                assert peer is not None
                self.assertEqual(peer.node_id, target)
        # Keys through the key directory: forget the cache first, then ask the network.
        asker = nodes[0]
        assert asker.store is not None
        for other in nodes[1:]:
            asker.store._db.execute("DELETE FROM keys")   # noqa: SLF001 - test reset
            key = await asker.overlay.find_key(other.identity.node_id)
            assert key is not None
            self.assertEqual(id_from_spki(key), other.identity.node_id)

    async def test_the_join_closes_the_links_it_dialed_once_they_are_idle(self) -> None:
        # Bootstrap, key and mail key publication and the first fetch are one-shot
        # requests: their links would otherwise idle until client.idle_timeout, and a node
        # that holds them while later nodes join reaches a higher memory peak.
        self.labs = await start_chain(self.dir, 4, QUIET)
        nodes = [lab.node for lab in self.labs if lab.node is not None]
        last = nodes[-1]
        dialed = [link for link in last.net.links.values() if link.direction == "out"]
        self.assertEqual(dialed, [])
        # What the links were for was done: the others hold its key and mail key record.
        for other in nodes[:-1]:
            assert other.store is not None
            self.assertIsNotNone(other.store.get_key(last.identity.node_id))
            self.assertIsNotNone(other.store.get_mail_key(last.identity.node_id))
        # And it is still found, by datagrams or new links.
        peer = await nodes[0].overlay.find_contact(last.identity.node_id)
        assert peer is not None
        self.assertEqual(peer.port, last.port)

    async def test_restarted_node_rejoins_from_its_saved_table(self) -> None:
        self.labs = await start_chain(self.dir, 5, QUIET)
        last = self.labs[-1]
        assert last.node is not None
        await eventually(lambda: last.node is not None and len(last.node.overlay.table) >= 3)
        await last.stop()
        # Rewritten without its bootstrap entry: the node must rejoin from its saved table.
        again = LabNode(self.dir, last.index, [], QUIET)
        self.assertEqual(json.loads(again.config_path.read_text())["bootstrap"], [])
        self.labs[-1] = again
        node = await again.start()
        self.assertGreaterEqual(len(node.overlay.table), 3)
        first = self.labs[0].node
        assert first is not None
        peer = await first.overlay.find_contact(node.identity.node_id)
        assert peer is not None
        self.assertEqual(peer.port, node.port)


if __name__ == "__main__":
    unittest.main()
