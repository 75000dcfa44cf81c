"""Coordinated simultaneous open: the pure rules, and the relay's and target's refusals."""

from __future__ import annotations

import unittest

from fluxchat import messages as m
from fluxchat.punching import RETRY_AFTER, PunchBook, accept_offer, tls_server
from fluxchat.wire_fields import ErrorCode
from tests.lab import NodeTestCase, eventually


class RulesTest(unittest.TestCase):
    def test_parts_and_offers(self) -> None:
        self.assertTrue(tls_server(b"\x01", b"\x02"))
        self.assertFalse(tls_server(b"\x02", b"\x01"))
        self.assertTrue(accept_offer(b"\x05", b"\x09", busy_with_peer=False))
        # Both started at once: only the smaller ID's attempt goes ahead.
        self.assertTrue(accept_offer(b"\x09", b"\x05", busy_with_peer=True))
        self.assertFalse(accept_offer(b"\x05", b"\x09", busy_with_peer=True))

    def test_book(self) -> None:
        book = PunchBook()
        self.assertTrue(book.due(b"p", 0.0))
        book.begin(b"p")
        self.assertFalse(book.due(b"p", 0.0))   # one attempt at a time
        book.end(b"p", False, 10.0)
        self.assertFalse(book.due(b"p", 11.0))
        self.assertTrue(book.due(b"p", 10.0 + RETRY_AFTER))
        book.begin(b"p")
        book.end(b"p", True, 1000.0)
        self.assertEqual((book.attempts, book.succeeded), (2, 1))
        self.assertTrue(book.due(b"p", 1000.0))


class RefusalsTest(NodeTestCase):
    async def test_relay_coordinates_only_for_its_clients_and_within_a_rate(self) -> None:
        (relay,) = await self.chain(1)
        home = (await self.start(1, [f"127.0.0.1:{relay.port}"], contact="private")).node
        asker = (await self.start(2, [f"127.0.0.1:{relay.port}"])).node
        assert home is not None and asker is not None
        link = await asker.net.dial("127.0.0.1", relay.port, relay.identity.node_id)
        stranger = await link.request(lambda rid: m.Punch(rid, asker.identity.node_id, 4000))
        assert isinstance(stranger, m.Fail)
        self.assertEqual(stranger.code, ErrorCode.NOT_FOUND)
        await eventually(lambda: home.identity.node_id in relay.relays.reservations)
        answers = [await link.request(lambda rid: m.Punch(rid, home.identity.node_id, 4000))
                   for _ in range(5)]
        codes = [a.code for a in answers if isinstance(a, m.Fail)]
        self.assertIn(ErrorCode.RATE_LIMITED, codes)

    async def test_offers_only_from_our_relays(self) -> None:
        first, second = await self.chain(2)
        link = await second.net.dial("127.0.0.1", first.port, first.identity.node_id)
        answer = await link.request(lambda rid: m.PunchOffer(rid, second.identity.node_id,
                                                              "127.0.0.1", 4000))
        assert isinstance(answer, m.Fail)
        self.assertEqual(answer.code, ErrorCode.FORBIDDEN)


if __name__ == "__main__":
    unittest.main()
