"""Refusing junk costs less than reading it: once a peer's budget of mail work says no, the
rest of its request goes unread, and a request arriving while that budget is spent is
refused before its first envelope is parsed. Real nodes over real TLS; the victim counts the
envelope headers it parsed for peers (Intake.headers_read) beside those it opened."""

from __future__ import annotations

import asyncio

from fluxchat import messages as m
from fluxchat.intake import PEER_BUDGET_SPENT
from fluxchat.wire_fields import MAX_ENVELOPES
from tests.test_mail_abuse import MailAbuseCase, junk_for

E = m.ErrorCode


class CheapRefusalTest(MailAbuseCase):
    async def test_a_spent_budget_refuses_the_rest_of_a_burst_unread(self) -> None:
        attacker, victim, link = await self.pair()
        intake = victim.mailroom.intake
        reply = await link.request(
            lambda rid: m.DeliverMany(rid, tuple(junk_for(victim, attacker, MAX_ENVELOPES))))
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
            lambda rid: m.DeliverMany(rid, tuple(junk_for(victim, attacker, MAX_ENVELOPES))))
        read, opened = intake.headers_read, intake.private_ops
        junk = junk_for(victim, attacker, 40)   # in flight at once: below the link's limit
        replies = await asyncio.gather(*(link.request(lambda rid, e=e: m.Deliver(rid, e))
                                         for e in junk))
        refused = [r for r in replies if isinstance(r, m.Fail) and r.code == E.RATE_LIMITED]
        self.assertGreater(len(refused), 0)
        self.assertEqual({r.message for r in refused}, {PEER_BUDGET_SPENT})
        # Only what the refilling budget let through was read, and all of that was opened.
        self.assertEqual(intake.headers_read - read, intake.private_ops - opened)
