"""Many identities, junk mail: a crowd of fresh identities (the precomputed test keys), each
on its own authenticated link, sends envelopes that parse but do not open, in `Deliver` and
`DeliverMany` requests. The bounds asserted: what all of them make the victim open stays
within the node-wide budget (fairshare.py), the one greedy member is held to its own budget,
and an honest newcomer's mail still goes in, one by one and in a burst."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from fluxchat import messages as m
from fluxchat.mail_limits import (
    NODE_PRIVATE_OPS_BURST,
    NODE_PRIVATE_OPS_RATE,
    PRIVATE_OPS_BURST,
    PRIVATE_OPS_RATE,
)
from fluxchat.node import Node
from tests.adversary import Attacker, junk_outcomes
from tests.test_mail_abuse import MailAbuseCase, junk_for, mail_for

E = m.ErrorCode
CROWD = range(10, 22)   # 12 identities never seen by the victim before
GREEDY = 10             # the one that sends more than its own budget
PER_MEMBER = 32         # junk envelopes from each other member: half Deliver, half DeliverMany
GREEDY_SENDS = 176      # beyond PRIVATE_OPS_BURST: its own budget refuses the rest
IN_FLIGHT = 32


def outcomes(replies: list[m.Message]) -> list[str]:
    return [word for reply in replies for word in junk_outcomes(reply)]


async def send_junk(attacker: Attacker, victim: Node, count: int) -> list[str]:
    """Half the junk in one DeliverMany, the rest as single Delivers alongside it, at most
    `IN_FLIGHT` at once (below the link's own limit on requests in flight)."""
    junk = junk_for(victim, SimpleNamespace(identity=attacker.me), count)  # type: ignore[arg-type]
    half = count // 2
    rids = [attacker.request(lambda rid: m.DeliverMany(rid, tuple(junk[:half])))]
    replies: list[m.Message] = []
    for start in range(half, count, IN_FLIGHT):
        rids += [attacker.request(lambda rid, e=e: m.Deliver(rid, e))
                 for e in junk[start:start + IN_FLIGHT]]
        replies += [await attacker.response(rid) for rid in rids]
        rids = []
    return outcomes(replies)


class JunkCrowdTest(MailAbuseCase):
    async def test_a_crowd_of_identities_stays_within_the_node_and_peer_budgets(self) -> None:
        [victim] = await self.chain(1)
        crowd = {index: await Attacker.connect("127.0.0.1", victim.port, index)
                 for index in CROWD}
        started = time.monotonic()
        greedy = await send_junk(crowd[GREEDY], victim, GREEDY_SENDS)   # first, alone
        others = await asyncio.gather(*(send_junk(attacker, victim, PER_MEMBER)
                                        for index, attacker in crowd.items() if index != GREEDY))
        elapsed = time.monotonic() - started
        self.assertNotIn("other", [word for words in [greedy, *others] for word in words])
        # The greedy member: its own budget, then its own refusals.
        self.assertLessEqual(greedy.count("opened"),
                             PRIVATE_OPS_BURST + PRIVATE_OPS_RATE * elapsed + 1)
        self.assertGreater(greedy.count("peer") + greedy.count("burst"), 0)
        # Everyone together: the node's budget, whatever the number of identities.
        opened = sum(words.count("opened") for words in [greedy, *others])
        self.assertEqual(victim.mailroom.private_ops, opened)
        self.assertLessEqual(opened, NODE_PRIVATE_OPS_BURST + NODE_PRIVATE_OPS_RATE * elapsed + 1)
        self.assertLess(opened, GREEDY_SENDS + PER_MEMBER * (len(CROWD) - 1))
        # That budget refused the others (each far within its own): singly ("node") or in a
        # DeliverMany ("burst"), whichever met it first. Unless they were so slow (a loaded
        # machine: twenty times the usual 0.5 s) that it refilled as fast as they asked.
        asked = greedy.count("opened") + sum(len(words) for words in others)
        if asked > NODE_PRIVATE_OPS_BURST + NODE_PRIVATE_OPS_RATE * elapsed:
            self.assertGreater(sum(words.count("node") + words.count("burst")
                                   for words in others), 0)
        self.assertEqual(sum(words.count("peer") for words in others), 0)
        # An honest newcomer is served from what refills: its mail at once, a burst as the
        # node's budget refills (what was refused goes again, as the mailer would send it).
        honest = (await self.start(2, [f"127.0.0.1:{victim.port}"])).node
        assert honest is not None and victim.store is not None
        own = await honest.net.dial("127.0.0.1", victim.port, victim.identity.node_id)
        reply = await own.request(lambda rid: m.Deliver(rid, mail_for(victim, honest)))
        self.assertIsInstance(reply, m.Ok)
        burst = tuple(mail_for(victim, honest, f"burst {i}") for i in range(8))
        for _ in range(5):
            reply = await own.request(lambda rid: m.DeliverMany(rid, burst))
            assert isinstance(reply, m.Delivered)
            self.assertEqual(set(reply.codes) - {0, int(E.RATE_LIMITED)}, set())
            burst = tuple(e for e, code in zip(burst, reply.codes, strict=True) if code)
            if not burst:
                break
            await asyncio.sleep(len(burst) / NODE_PRIVATE_OPS_RATE)
        self.assertEqual(victim.store.count_inbox()[0], 9)
        for attacker in crowd.values():
            attacker.close()
