"""Mail between real in-process nodes on 127.0.0.1: direct, stored, receipts, duplicates."""

from __future__ import annotations

import os
import unittest

from fluxchat import messages as m
from fluxchat.envelope import MailContent, seal
from fluxchat.errors import EnvelopeError
from fluxchat.node import Node
from fluxchat.placement import ReplicaSets
from fluxchat.upkeep import REREPLICATE_MIN
from tests.keys import identity
from tests.lab import NodeTestCase, eventually


def state(node: Node, uuid: bytes) -> str:
    assert node.store is not None
    mail = node.store.get_outbox(uuid)
    return mail.state if mail else "missing"


def inbox(node: Node) -> list[bytes]:
    assert node.store is not None
    return [mail.uuid for mail in node.store.list_inbox(False, 1000, 0)[1]]


class MailNetworkTest(NodeTestCase):
    async def test_direct_delivery_with_verified_receipt(self) -> None:
        a, b = await self.chain(2)
        mail = a.mailer.submit(b.identity.node_id, "Grüße 👋", "你好, world")
        await eventually(lambda: state(a, mail.uuid) == "delivered")
        assert b.store is not None
        received = b.store.read_inbox(mail.uuid)
        assert received is not None
        self.assertEqual((received.subject, received.body), ("Grüße 👋", "你好, world"))
        self.assertEqual(received.sender, a.identity.node_id)
        assert a.store is not None
        states = [s for _, s, _ in a.store.outbox_history(mail.uuid)]
        self.assertEqual(states, ["queued", "handed_over", "delivered"])

    async def test_mail_to_oneself_lands_in_own_inbox(self) -> None:
        (a,) = await self.chain(1)
        mail = a.mailer.submit(a.identity.node_id, "note", "to self")
        self.assertEqual(state(a, mail.uuid), "delivered")
        self.assertEqual(inbox(a), [mail.uuid])

    async def test_offline_recipient_gets_stored_mail_and_sender_sees_receipt(self) -> None:
        a, _, _, b = await self.chain(4)
        b_lab = self.labs[3]
        await eventually(lambda: a.store is not None and a.store.get_key(b.identity.node_id)
                         or self._key_published(b))
        await b_lab.stop()
        mail = a.mailer.submit(identity(3).node_id, "while you were out", "stored for you")
        await eventually(lambda: state(a, mail.uuid) == "stored")
        assert a.store is not None
        self.assertGreaterEqual(a.store.get_outbox(mail.uuid).stored_on, 1)
        restarted = await b_lab.start()
        await eventually(lambda: inbox(restarted) == [mail.uuid])
        await eventually(lambda: state(a, mail.uuid) == "delivered")
        # Fetched mail is deleted from the storers after the recipient's commit.
        await eventually(lambda: all(lab.node.store.held_stats()[0] == 0
                                     for lab in self.labs[:3] if lab.node and lab.node.store))

    async def test_a_burst_to_an_offline_recipient_is_stored_then_delivered(self) -> None:
        a, _, _, b = await self.chain(4)
        b_lab = self.labs[3]
        await eventually(lambda: a.store is not None and a.store.get_key(b.identity.node_id)
                         or self._key_published(b))
        await b_lab.stop()
        mails = [a.mailer.submit(identity(3).node_id, f"burst {i}", "stored for you")
                 for i in range(20)]   # one burst, which nobody takes directly
        await eventually(lambda: all(state(a, mail.uuid) == "stored" for mail in mails))
        restarted = await b_lab.start()
        await eventually(lambda: sorted(inbox(restarted)) == sorted(m.uuid for m in mails))
        await eventually(lambda: all(state(a, mail.uuid) == "delivered" for mail in mails))

    def _key_published(self, node: Node) -> bool:
        return any(lab.node is not None and lab.node is not node and lab.node.store is not None
                   and lab.node.store.get_key(node.identity.node_id) for lab in self.labs)

    async def test_private_recipient_in_a_ten_node_network(self) -> None:
        nodes = await self.chain(9)
        # The recipient only dials out, so nobody can dial it: it keeps relays instead.
        b = (await self.start(9, [self.labs[-1].address], contact="private")).node
        assert b is not None
        a = nodes[0]
        await eventually(lambda: self._key_published(b))
        await eventually(lambda: len(b.relays.relays) == 3, timeout=15)
        self.assertFalse(any(b.identity.node_id in n.overlay.table for n in nodes))
        mail = a.mailer.submit(b.identity.node_id, "via a relay", "hello")
        await eventually(lambda: inbox(b) == [mail.uuid], timeout=15)
        await eventually(lambda: state(a, mail.uuid) == "delivered", timeout=15)
        assert a.store is not None
        history = a.store.outbox_history(mail.uuid)
        self.assertEqual(history[-1][1], "delivered")
        handed = [detail for _, state, detail in history if state in ("handed_over", "stored")]
        self.assertTrue(handed, history)
        if a.identity.node_id not in b.relays.relays:   # else B's own link to A carried it
            self.assertIn("through relay", handed[0])

    async def test_duplicate_store_is_held_once_and_only_the_recipient_may_fetch(self) -> None:
        a, s, c = await self.chain(3)
        assert a.store is not None and s.store is not None
        envelope = self._envelope(a, identity(5).node_id, identity(5).public_der)
        link = await a.net.dial("127.0.0.1", s.port, s.identity.node_id)
        for _ in range(2):
            reply = await link.request(lambda rid: m.Store(rid, envelope))
            self.assertIsInstance(reply, m.Ok)
        self.assertEqual(s.store.held_stats()[0], 1)
        intruder = await c.net.dial("127.0.0.1", s.port, s.identity.node_id)
        batch = await intruder.request(lambda rid: m.Fetch(rid, 10))
        self.assertIsInstance(batch, m.MailBatch)
        self.assertEqual(batch.envelopes, ())
        await intruder.request(lambda rid: m.Delete(rid, (envelope_uuid(envelope),)))
        self.assertEqual(s.store.held_stats()[0], 1)

    async def test_held_mail_is_pushed_to_the_recipients_closest_nodes(self) -> None:
        a, s, *others = await self.chain(4)
        assert s.store is not None
        envelope = self._envelope(a, identity(5).node_id, identity(5).public_der)
        link = await a.net.dial("127.0.0.1", s.port, s.identity.node_id)
        self.assertIsInstance(await link.request(lambda rid: m.Store(rid, envelope)), m.Ok)
        # A's STORE filled the replica set S sees, so nothing is pushed again...
        self.assertEqual(await s.replication.push(lookup=True), 0)
        # ...unless S knows nothing of the holders (as after a restart): then all get it.
        s.replication.sets = ReplicaSets()
        self.assertEqual(await s.replication.push(), 3)
        holders = [n for n in (a, *others) if n.store is not None and n.store.held_stats()[0]]
        self.assertEqual(len(holders), 3)
        self.assertEqual(await s.replication.push(), 0)

    async def test_upkeep_pushes_held_mail_only_to_nodes_new_to_the_replica_set(self) -> None:
        a, s, other = await self.chain(3)
        envelope = self._envelope(a, identity(6).node_id, identity(6).public_der)
        link = await a.net.dial("127.0.0.1", s.port, s.identity.node_id)
        self.assertIsInstance(await link.request(lambda rid: m.Store(rid, envelope)), m.Ok)
        newcomer = (await self.start(3, [f"127.0.0.1:{s.port}"])).node
        assert newcomer is not None and newcomer.store is not None and other.store is not None
        await eventually(lambda: newcomer.identity.node_id in s.overlay.table)
        self.assertTrue(s.overlay.membership_changed)
        await s.upkeep()      # the table changed, but a push waits REREPLICATE_MIN
        self.assertEqual(newcomer.store.held_stats()[0], 0)
        s.upkeeper.last_replication -= REREPLICATE_MIN   # time passes
        await s.upkeep()
        self.assertFalse(s.overlay.membership_changed)
        self.assertEqual(newcomer.store.held_stats()[0], 1)
        # The member that was in the set when A stored is left alone: A gave it the mail
        # (here A did not, which is how the test can tell that S sent it nothing).
        self.assertEqual(other.store.held_stats()[0], 0)
        self.assertEqual(await s.replication.push(lookup=True), 0)

    async def test_upkeep_forgets_old_uuids_expires_held_mail_and_saves_the_table(self) -> None:
        a, b = await self.chain(2)
        assert b.store is not None
        now = int(b.clock())
        old, recent = os.urandom(16), os.urandom(16)
        b.store.remember_seen(old, now, now - 3 * b.mailer.retention)
        b.store.remember_seen(recent, now, now - b.mailer.retention)
        b.store.save_routing([])
        await b.upkeep()
        self.assertFalse(b.store.is_seen(old))
        self.assertTrue(b.store.is_seen(recent))
        self.assertEqual([row[0] for row in b.store.load_routing()], [a.identity.node_id])

    async def test_replayed_old_mail_is_refused(self) -> None:
        a, b = await self.chain(2)
        old = MailContent("mail", os.urandom(16), a.identity.node_id, b.identity.node_id,
                          1_000_000, "old", "replay", b"")
        envelope = seal(old, a.identity, b.identity.public_der, 2**40, os.urandom(32),
                        os.urandom(12))
        with self.assertRaises(EnvelopeError):
            await b.mailroom.accept(envelope)
        link = await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        reply = await link.request(lambda rid: m.Deliver(rid, envelope))
        self.assertIsInstance(reply, m.Fail)
        self.assertEqual(inbox(b), [])

    async def test_redelivered_mail_is_kept_once(self) -> None:
        a, b = await self.chain(2)
        envelope = self._envelope(a, b.identity.node_id, b.identity.public_der)
        for _ in range(3):
            answer = await a.net.request("127.0.0.1", b.port, b.identity.node_id,
                                         lambda rid: m.Deliver(rid, envelope))
            self.assertIsInstance(answer, m.Ok)
        self.assertEqual(len(inbox(b)), 1)

    def _envelope(self, sender: Node, recipient: bytes, key: bytes) -> bytes:
        now = int(sender.clock())
        content = MailContent("mail", os.urandom(16), sender.identity.node_id, recipient, now,
                              "s", "b", b"")
        return seal(content, sender.identity, key, now + 3600, os.urandom(32), os.urandom(12))


def envelope_uuid(envelope: bytes) -> bytes:
    from fluxchat.envelope import parse_header
    return parse_header(envelope, 1 << 21).uuid


if __name__ == "__main__":
    unittest.main()
