"""Hostile peers against the mail layer, over real TLS links between in-process nodes.

The attacker is a real node whose handlers we replace or whose links we drive by hand; each
test asserts the bound the victim keeps (private-key operations, Fetch rounds, held bytes,
key rows), never a time.
"""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace
from typing import Any

from fluxchat import messages as m
from fluxchat.envelope import MailContent, seal
from fluxchat.link import Link
from fluxchat.mail_limits import (
    FETCH_ROUNDS,
    NODE_PRIVATE_OPS_BURST,
    NODE_PRIVATE_OPS_RATE,
    PRIVATE_OPS_BURST,
    PRIVATE_OPS_RATE,
)
from fluxchat.mailer import FETCH_BATCH
from fluxchat.node import Node
from fluxchat.routing import Peer
from fluxchat.wire_fields import MAX_ENVELOPES
from tests.adversary import Attacker
from tests.keys import identity
from tests.lab import NodeTestCase, eventually

E = m.ErrorCode


def junk_for(victim: Node, sender: Node, count: int) -> list[bytes]:
    """Envelopes sealed to the victim with their last byte (the GCM tag) flipped: each
    parses, each costs the victim a private-key operation, none opens."""
    out = []
    for _ in range(count):
        envelope = mail_for(victim, sender, "junk")
        out.append(envelope[:-1] + bytes([envelope[-1] ^ 1]))
    return out


def mail_for(victim: Node, sender: Node, subject: str = "hi") -> bytes:
    now = int(time.time())
    content = MailContent("mail", os.urandom(16), sender.identity.node_id,
                          victim.identity.node_id, now, subject, "body", b"")
    return seal(content, sender.identity, victim.identity.public_der, now + 3600,
                os.urandom(32), os.urandom(12))


class MailAbuseCase(NodeTestCase):
    async def pair(self, **overrides: Any) -> tuple[Node, Node, Link]:
        """(attacker, victim, the attacker's link to the victim)."""
        attacker, victim = await self.chain(2, **overrides)
        link = await attacker.net.dial("127.0.0.1", victim.port, victim.identity.node_id)
        return attacker, victim, link

    def serve_fetch(self, attacker: Node, envelopes: list[bytes], more: bool = True) -> list[int]:
        """Make the attacker answer every Fetch with `envelopes`; returns the Fetch log."""
        served: list[int] = []

        def evil_fetch(link: Link, request: m.Fetch) -> m.Message:
            served.append(request.limit)
            return m.MailBatch(request.rid, tuple(envelopes), more)

        attacker._handlers[m.Fetch] = evil_fetch
        attacker._handlers[m.Delete] = lambda link, request: m.Ok(request.rid)
        return served


class FetchLoopTest(MailAbuseCase):
    async def test_junk_batches_marked_more_end_the_drain_after_one_round(self) -> None:
        attacker, victim, link = await self.pair()
        served = self.serve_fetch(attacker, junk_for(victim, attacker, MAX_ENVELOPES))
        before = victim.mailroom.private_ops
        got = await victim.mailroom.fetch_from(_peer(attacker))
        self.assertEqual(got, 0)
        self.assertEqual(len(served), 1)                       # no new valid mail: stop
        # Never more envelopes opened than asked for, although 256 came.
        self.assertEqual(victim.mailroom.private_ops - before, FETCH_BATCH)

    async def test_copies_already_seen_cost_no_private_key_work(self) -> None:
        attacker, victim, link = await self.pair()
        mail = mail_for(victim, attacker)
        self.assertIsInstance(await link.request(lambda rid: m.Deliver(rid, mail)), m.Ok)
        served = self.serve_fetch(attacker, [mail] * FETCH_BATCH)
        before = victim.mailroom.private_ops
        await victim.mailroom.fetch_from(_peer(attacker))
        self.assertEqual(victim.mailroom.private_ops, before)
        self.assertEqual(len(served), 1)

    async def test_a_drain_is_bounded_in_rounds_even_with_valid_mail(self) -> None:
        attacker, victim, link = await self.pair()
        batches = [[mail_for(victim, attacker, f"m{i}-{j}") for j in range(2)]
                   for i in range(FETCH_ROUNDS + 3)]
        served: list[int] = []

        def fresh_fetch(link: Link, request: m.Fetch) -> m.Message:
            served.append(request.limit)
            return m.MailBatch(request.rid, tuple(batches[len(served) - 1]), True)

        attacker._handlers[m.Fetch] = fresh_fetch
        attacker._handlers[m.Delete] = lambda link, request: m.Ok(request.rid)
        got = await victim.mailroom.fetch_from(_peer(attacker))
        self.assertEqual(len(served), FETCH_ROUNDS)
        self.assertEqual(got, 2 * FETCH_ROUNDS)

    async def test_notify_flood_coalesces_into_few_fetches(self) -> None:
        attacker, victim, link = await self.pair()
        served = self.serve_fetch(attacker, junk_for(victim, attacker, 4))
        for _ in range(50):   # waves of notices, each one in before the next (Ping answered)
            for _ in range(40):
                link.notify(m.Notify())
            self.assertIsInstance(await link.request(m.Ping), m.Pong)
            await eventually(lambda: len(served) >= 1)
        # One fetch at once, at most one more after the interval: never one per notice.
        self.assertLessEqual(len(served), 2)
        self.assertLessEqual(victim.mailroom.private_ops, 8)


class DeliverBudgetTest(MailAbuseCase):
    async def test_junk_deliver_requests_spend_only_the_peer_budget(self) -> None:
        attacker, victim, link = await self.pair()
        junk = junk_for(victim, attacker, 40)
        started = time.monotonic()
        replies: list[m.Message] = []
        for _ in range(8):   # 40 in flight at a time: below the link's own request limit
            replies += await asyncio.gather(*(link.request(lambda rid, e=envelope: m.Deliver(rid, e))
                                              for envelope in junk))
        elapsed = time.monotonic() - started
        codes = [r.code for r in replies if isinstance(r, m.Fail)]
        self.assertEqual(len(codes), 320)
        allowed = PRIVATE_OPS_BURST + PRIVATE_OPS_RATE * elapsed + 1
        self.assertLessEqual(victim.mailroom.private_ops, allowed)
        self.assertGreater(codes.count(int(E.RATE_LIMITED)), 0)
        # Another peer's budget is its own: honest mail from it still goes in.
        honest = (await self.start(2, [f"127.0.0.1:{victim.port}"])).node
        assert honest is not None
        own = await honest.net.dial("127.0.0.1", victim.port, victim.identity.node_id)
        reply = await own.request(lambda rid: m.Deliver(rid, mail_for(victim, honest)))
        self.assertIsInstance(reply, m.Ok)


class NodeWorkTest(MailAbuseCase):
    async def test_many_identities_together_stay_within_the_node_budget(self) -> None:
        # 8 identities, 60 junk envelopes each: every one within its own budget (a burst of
        # 128), together far beyond the node's (256 + 24/s).
        [victim] = await self.chain(1)
        attackers = [await Attacker.connect("127.0.0.1", victim.port, index)
                     for index in range(10, 18)]

        async def attack(attacker: Attacker) -> list[m.Message]:
            sender = SimpleNamespace(identity=attacker.me)
            rids = [attacker.request(lambda rid, e=envelope: m.Deliver(rid, e))
                    for envelope in junk_for(victim, sender, 60)]   # type: ignore[arg-type]
            return [await attacker.response(rid) for rid in rids]

        started = time.monotonic()
        replies = await asyncio.gather(*(attack(attacker) for attacker in attackers))
        elapsed = time.monotonic() - started
        self.assertLessEqual(victim.mailroom.private_ops,
                             NODE_PRIVATE_OPS_BURST + NODE_PRIVATE_OPS_RATE * elapsed + 1)
        refused = [sum(isinstance(r, m.Fail) and r.code == E.RATE_LIMITED for r in answers)
                   for answers in replies]
        self.assertGreater(sum(refused), 480 - NODE_PRIVATE_OPS_BURST - NODE_PRIVATE_OPS_RATE * elapsed - 1)
        # Each within its own budget: the refusals say it was the node's, not theirs.
        texts = {r.message for answers in replies for r in answers
                 if isinstance(r, m.Fail) and r.code == E.RATE_LIMITED}
        self.assertEqual(texts, {"too much mail work for this node; try again later"})
        # A newcomer is served from what refills: its honest mail goes in.
        honest = (await self.start(2, [f"127.0.0.1:{victim.port}"])).node
        assert honest is not None
        own = await honest.net.dial("127.0.0.1", victim.port, victim.identity.node_id)
        reply = await own.request(lambda rid: m.Deliver(rid, mail_for(victim, honest)))
        self.assertIsInstance(reply, m.Ok)
        for attacker in attackers:
            attacker.close()


class QuotaTest(MailAbuseCase):
    async def test_one_sender_cannot_deny_a_recipient_its_mail(self) -> None:
        quotas = {"quota_per_recipient": 40_000, "quota_per_sender_recipient": 10_000}
        attacker, storer, link = await self.pair(mail=quotas)
        recipient = identity(5)
        stored = refused = 0
        for _ in range(60):   # 60 envelopes of about 1 KiB for one recipient
            content = MailContent("mail", os.urandom(16), attacker.identity.node_id,
                                  recipient.node_id, int(time.time()), "fill", "x" * 600, b"")
            envelope = seal(content, attacker.identity, recipient.public_der,
                            int(time.time()) + 3600, os.urandom(32), os.urandom(12))
            reply = await link.request(lambda rid, e=envelope: m.Store(rid, e))
            stored += isinstance(reply, m.Ok)
            refused += isinstance(reply, m.Fail) and reply.code == E.REFUSED
        assert storer.store is not None
        held = storer.store.held_stats()[1]
        self.assertLessEqual(held, 10_000)
        self.assertGreater(refused, 0)
        honest = (await self.start(2, [f"127.0.0.1:{storer.port}"])).node
        assert honest is not None
        content = MailContent("mail", os.urandom(16), honest.identity.node_id, recipient.node_id,
                              int(time.time()), "real", "mail", b"")
        envelope = seal(content, honest.identity, recipient.public_der, int(time.time()) + 3600,
                        os.urandom(32), os.urandom(12))
        own = await honest.net.dial("127.0.0.1", storer.port, storer.identity.node_id)
        self.assertIsInstance(await own.request(lambda rid: m.Store(rid, envelope)), m.Ok)


class KeyDirectoryTest(MailAbuseCase):
    async def test_only_the_link_owner_key_is_stored(self) -> None:
        attacker, victim, link = await self.pair()
        assert victim.store is not None
        rows = victim.store.count_keys()
        fake = identity(6).public_der[:-40] + os.urandom(40)   # a "key" with a junk modulus tail
        for key in (fake, identity(7).public_der, b"\x30\x00", b""):
            reply = await link.request(lambda rid, k=key: m.StoreKey(rid, k))
            self.assertIsInstance(reply, m.Fail)
            assert isinstance(reply, m.Fail)
            self.assertEqual(reply.code, E.FORBIDDEN)
        self.assertEqual(victim.store.count_keys(), rows)
        own = attacker.identity.public_der
        self.assertIsInstance(await link.request(lambda rid: m.StoreKey(rid, own)), m.Ok)

    async def test_rows_expire_in_upkeep(self) -> None:
        (node,) = await self.chain(1)
        assert node.store is not None
        old = int(time.time()) - 4 * int(node.config.kademlia.republish_interval)
        node.store.put_key(identity(8).node_id, identity(8).public_der, old)
        await node.upkeep()
        self.assertIsNone(node.store.get_key(identity(8).node_id))


def _peer(node: Node) -> Peer:
    return Peer(node.identity.node_id, "127.0.0.1", node.port)
