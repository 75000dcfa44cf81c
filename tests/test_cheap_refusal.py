"""Refusing junk costs less than reading it: once a peer's budget of mail work says no, the
rest of its request goes unread, and a request arriving while that budget is spent is
refused before its first envelope is parsed. Real nodes over real TLS; the victim counts the
envelope headers it parsed for peers (Intake.headers_read) beside those it opened. And the
node's budget of mail requests is shared by all links: many cannot multiply one's allowance."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fluxchat import messages as m
from fluxchat.envelope import MailContent, seal
from fluxchat.intake import PEER_BUDGET_SPENT
from fluxchat.mailroom import TOO_MUCH_IN_HAND
from fluxchat.node import Node
from fluxchat.wire_fields import MAX_ENVELOPES
from tests.adversary import Attacker
from tests.lab import WAIT
from tests.test_mail_abuse import MailAbuseCase, junk_for, mail_for

E = m.ErrorCode
# A burst of junk costs the victim its peer's whole budget of private-key operations (128,
# 0.2-0.3 s of CPU): beyond the lab's 3 s request timeout when a loaded machine gives the
# test a tenth of a core, so these requests wait as long as the lab waits on anything.
HEAVY = WAIT


class CheapRefusalTest(MailAbuseCase):
    async def test_a_spent_budget_refuses_the_rest_of_a_burst_unread(self) -> None:
        attacker, victim, link = await self.pair()
        intake = victim.mailroom.intake
        reply = await link.request(
            lambda rid: m.DeliverMany(rid, tuple(junk_for(victim, attacker, MAX_ENVELOPES))),
            HEAVY)
        assert isinstance(reply, m.Delivered)
        opened = intake.private_ops
        # Each envelope read was opened, but the one whose spend was refused; none after it.
        self.assertGreater(opened, 0)
        self.assertEqual(intake.headers_read, opened + 1)
        self.assertEqual(reply.codes, (int(E.INVALID),) * opened
                         + (int(E.RATE_LIMITED),) * (MAX_ENVELOPES - opened))

    async def test_a_peer_whose_budget_is_spent_is_refused_before_parsing(self) -> None:
        attacker, victim, link = await self.pair()
        intake = victim.mailroom.intake
        await link.request(
            lambda rid: m.DeliverMany(rid, tuple(junk_for(victim, attacker, MAX_ENVELOPES))),
            HEAVY)
        read, opened = intake.headers_read, intake.private_ops
        junk = junk_for(victim, attacker, 40)   # in flight at once: below the link's limit
        replies = await asyncio.gather(*(link.request(lambda rid, e=e: m.Deliver(rid, e))
                                         for e in junk))
        refused = [r for r in replies if isinstance(r, m.Fail) and r.code == E.RATE_LIMITED]
        self.assertGreater(len(refused), 0)
        self.assertEqual({r.message for r in refused}, {PEER_BUDGET_SPENT})
        # Only what the refilling budget let through was read, and all of that was opened.
        self.assertEqual(intake.headers_read - read, intake.private_ops - opened)


CROWD = range(10, 18)   # identities the victim has not seen
WAVE = 32               # garbage Delivers in flight per link (below its own limit)
RATE, BURST = 20.0, 40.0


async def flood(attacker: Attacker, until: float) -> int:
    """Waves of `WAVE` garbage Delivers until `until`; the number answered (read)."""
    answered = 0
    while time.monotonic() < until:
        rids = [attacker.request(lambda rid: m.Deliver(rid, b"junk")) for _ in range(WAVE)]
        for rid in rids:
            try:
                await asyncio.wait_for(attacker.response(rid), max(0.01, until - time.monotonic()))
            except TimeoutError:
                return answered
            answered += 1
    return answered


class NodeMailBudgetTest(MailAbuseCase):
    async def test_many_links_share_one_budget_of_mail_requests(self) -> None:
        # A small node-wide budget: what eight links may send alone is far beyond it.
        [victim] = await self.chain(1, links={"mail_requests_per_second": RATE,
                                              "mail_request_burst": BURST})
        crowd = [await Attacker.connect("127.0.0.1", victim.port, index) for index in CROWD]
        started = time.monotonic()
        attack = asyncio.gather(*(flood(attacker, started + 2.0) for attacker in crowd))
        # A newcomer (a light user of the budget) is read at once, in the thick of it.
        await asyncio.sleep(0.5)
        honest = (await self.start(2, [f"127.0.0.1:{victim.port}"])).node
        assert honest is not None
        own = await honest.net.dial("127.0.0.1", victim.port, victim.identity.node_id)
        reply = await own.request(lambda rid: m.Deliver(rid, mail_for(victim, honest)))
        self.assertIsInstance(reply, m.Ok)
        answered = sum(await attack)
        elapsed = time.monotonic() - started
        # The budget, plus what each link may bring in one read: its first as a newcomer and
        # one when the budget had room for it.
        bound = BURST + RATE * elapsed + 2 * WAVE * len(crowd)
        self.assertLessEqual(answered, bound)
        self.assertGreater(answered, 0)
        for attacker in crowd:
            attacker.close()


def big_junk(victim: Node, sender: Node, size: int) -> bytes:
    """A v1 envelope of about `size` bytes sealed to the victim, its GCM tag flipped: the
    victim opens it with an RSA private-key operation in a worker thread, then rejects it."""
    now = int(time.time())
    content = MailContent("mail", os.urandom(16), sender.identity.node_id,
                          victim.identity.node_id, now, "big", "x" * size, b"")
    envelope = seal(content, sender.identity, victim.identity.public_der, now + 3600,
                    os.urandom(32), os.urandom(12))
    return envelope[:-1] + bytes([envelope[-1] ^ 1])


class MailInHandTest(MailAbuseCase):
    async def test_a_peer_cannot_make_us_hold_more_than_its_mail_in_hand(self) -> None:
        attacker, victim, link = await self.pair()
        in_hand = victim.mailroom.in_hand
        envelopes = [big_junk(victim, attacker, 900_000) for _ in range(8)]   # 7.2 MB in all
        size = len(envelopes[0])
        taken = in_hand.limit // size   # what fits: 4 of them in 4 MiB
        self.assertLess(taken, len(envelopes))
        # The victim's opens wait in its one worker thread, behind a job that waits for us:
        # every request it takes stays in its hands until we let that job go.
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        gate = threading.Event()
        blocker = loop.run_in_executor(None, gate.wait)
        try:
            pending = [asyncio.ensure_future(link.request(
                lambda rid, e=e: m.Deliver(rid, e), HEAVY)) for e in envelopes]
            deadline = time.monotonic() + HEAVY
            while sum(r.done() for r in pending) < len(envelopes) - taken \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self.assertEqual(sum(r.done() for r in pending), len(envelopes) - taken)
            self.assertEqual(in_hand.held(attacker.identity.node_id), taken * size)
        finally:
            gate.set()
            await blocker
        replies = [await reply for reply in pending]
        refused = [r for r in replies if isinstance(r, m.Fail) and r.message == TOO_MUCH_IN_HAND]
        self.assertEqual(len(refused), len(envelopes) - taken)
        self.assertTrue(all(r.code == E.RATE_LIMITED for r in refused))
        self.assertEqual(sum(isinstance(r, m.Fail) and r.code == E.INVALID for r in replies), taken)
        self.assertLessEqual(in_hand.peak, in_hand.limit)
        self.assertEqual(in_hand.held(attacker.identity.node_id), 0)
        # The peer is served again once its mail in hand was answered.
        reply = await link.request(lambda rid: m.Deliver(rid, envelopes[0]), HEAVY)
        assert isinstance(reply, m.Fail)
        self.assertEqual((reply.code, reply.message), (E.INVALID, "envelope rejected"))
