"""Relays: signed records, the record directory, reservations and budgets (pure), and the
relay requests over real links on loopback."""

from __future__ import annotations

import asyncio
import time
import unittest

from fluxchat import messages as m
from fluxchat.envelope import MailContent, seal
from fluxchat.messages import NodeInfo
from fluxchat.node import Node
from fluxchat.reachability import Status, Verdict
from fluxchat.relaying import (
    BYTES_PER_MINUTE,
    MAX_RECORDS,
    RECORD_LIFETIME,
    RESERVATION_LIFETIME,
    RETRY_MAX,
    WANTED_RELAYS,
    RelayDirectory,
    RelayError,
    RelayRecord,
    Reservations,
    choose_relays,
    make_record,
    parse_record,
    retry_pause,
)
from fluxchat.wire_fields import ErrorCode
from tests.keys import identity
from tests.lab import NodeTestCase, eventually

NOW = 1_800_000_000
RELAYS = [NodeInfo(identity(1).node_id, "198.51.100.10", 25001)]


class RecordTest(unittest.TestCase):
    def test_round_trip_and_checks(self) -> None:
        me = identity(0)
        record = make_record(me, RELAYS, NOW)
        parsed = parse_record(record.encode(), NOW + 5, me.node_id)
        self.assertEqual(parsed, record)
        self.assertEqual(parsed.expires_at, NOW + RECORD_LIFETIME)
        with self.assertRaisesRegex(RelayError, "another node"):
            parse_record(record.encode(), NOW, identity(2).node_id)
        with self.assertRaisesRegex(RelayError, "expired"):
            parse_record(record.encode(), NOW + RECORD_LIFETIME)

    def test_every_byte_flip_is_rejected(self) -> None:
        data = make_record(identity(0), RELAYS, NOW).encode()
        for index in range(0, len(data), 7):
            forged = bytearray(data)
            forged[index] ^= 0x01
            with self.assertRaises(RelayError, msg=f"byte {index}"):
                parse_record(bytes(forged), NOW)

    def test_a_key_that_is_not_the_owners_is_rejected(self) -> None:
        record = make_record(identity(0), RELAYS, NOW)
        other = identity(3)
        swapped = RelayRecord(record.node_id, other.public_der, record.relays,
                              record.issued_at, record.expires_at,
                              other.sign(record.signed_part()))
        with self.assertRaisesRegex(RelayError, "hash"):
            parse_record(swapped.encode(), NOW)

    def test_garbage_and_oversize(self) -> None:
        for data in (b"", b"\x80", b"\xff" * 10, b"\x00" * 5000):
            with self.assertRaises(RelayError):
                parse_record(data, NOW)


class DirectoryTest(unittest.TestCase):
    def test_newest_record_wins_and_expired_ones_go(self) -> None:
        directory = RelayDirectory()
        old = make_record(identity(0), RELAYS, NOW)
        new = make_record(identity(0), [], NOW + 10)
        self.assertTrue(directory.put(old, NOW))
        self.assertTrue(directory.put(new, NOW))
        self.assertFalse(directory.put(old, NOW))
        self.assertEqual(directory.get(identity(0).node_id, NOW), new)
        self.assertIsNone(directory.get(identity(0).node_id, NOW + 10 + RECORD_LIFETIME))

    def test_bounded(self) -> None:
        directory = RelayDirectory()
        record = make_record(identity(0), RELAYS, NOW)
        for i in range(MAX_RECORDS):
            directory.records[i.to_bytes(32, "big")] = record
        self.assertFalse(directory.put(make_record(identity(1), RELAYS, NOW), NOW))
        # Once they expired, room is made.
        self.assertTrue(directory.put(make_record(identity(1), RELAYS, NOW + RECORD_LIFETIME),
                                      NOW + RECORD_LIFETIME))


class ReservationsTest(unittest.TestCase):
    def test_limits_per_relay_and_per_network(self) -> None:
        held = Reservations(limit=3, per_network=2)
        self.assertIsNone(held.reserve(b"a", "203.0.113.1", 0))
        self.assertIsNone(held.reserve(b"b", "203.0.113.2", 0))
        self.assertIn("203.0.113.0/24", held.reserve(b"c", "203.0.113.3", 0) or "")
        self.assertIsNone(held.reserve(b"a", "203.0.113.1", 1))   # a renewal is fine
        self.assertIsNone(held.reserve(b"d", "192.0.2.1", 0))
        self.assertEqual(held.reserve(b"e", "198.51.100.1", 0), "relay is full")
        # Reservations end unless renewed.
        self.assertIsNone(held.reserve(b"e", "198.51.100.1", RESERVATION_LIFETIME + 0.5))
        self.assertNotIn(b"b", held)
        self.assertIn(b"a", held)

    def test_byte_budget_per_reservation(self) -> None:
        held = Reservations()
        self.assertEqual(held.spend(b"a", 10, 0), "no reservation for the recipient")
        held.reserve(b"a", "203.0.113.1", 0)
        self.assertIsNone(held.spend(b"a", BYTES_PER_MINUTE - 100, 0))
        self.assertIn("budget", held.spend(b"a", 1000, 0) or "")
        self.assertIsNone(held.spend(b"a", 1000, 1.0))   # refills over the minute

    def test_holds_only_until_the_reservation_ends(self) -> None:
        held = Reservations()
        self.assertFalse(held.holds(b"a", 0))
        held.reserve(b"a", "203.0.113.1", 0)
        self.assertTrue(held.holds(b"a", RESERVATION_LIFETIME - 1))
        self.assertFalse(held.holds(b"a", RESERVATION_LIFETIME))

    def test_a_failed_relay_is_asked_again_soon_then_rarely(self) -> None:
        pauses = [retry_pause(n) for n in range(1, 10)]
        self.assertEqual(pauses[:4], [2.0, 4.0, 8.0, 16.0])
        self.assertEqual(max(pauses), RETRY_MAX)
        self.assertEqual(pauses, sorted(pauses))

    def test_choose_relays_keeps_working_ones(self) -> None:
        self.assertEqual(choose_relays([b"x"], [b"a", b"b", b"x", b"c"], {b"a"}),
                         [b"x", b"b", b"c"])
        self.assertEqual(choose_relays([b"x", b"y"], [b"a"], {b"x"}), [b"y", b"a"])


def seal_now(recipient: int, sender: int = 3, body: str = "b") -> bytes:
    content = MailContent("mail", bytes(range(16)), identity(sender).node_id,
                          identity(recipient).node_id, int(time.time()), "s", body, b"")
    return seal(content, identity(sender), identity(recipient).public_der,
                int(time.time()) + 3600, bytes(32), bytes(12))


class RelayNetworkTest(NodeTestCase):
    """Loopback nodes are reachable; the "home" says `private`, so it keeps relays."""

    async def test_relay_forwards_over_the_open_link_within_a_byte_budget(self) -> None:
        (relay,) = await self.chain(1)
        home_lab = await self.start(1, [f"127.0.0.1:{relay.port}"], contact="private")
        home = home_lab.node
        assert home is not None
        await eventually(lambda: relay.identity.node_id in home.relays.relays)
        self.assertIn(home.identity.node_id, relay.relays.reservations)
        record = await eventually(lambda: relay.relays.directory.get(home.identity.node_id,
                                                                     NOW - 10**8), 10)
        self.assertEqual(record.relays[0].node_id, relay.identity.node_id)
        sender = await self.start(3, [f"127.0.0.1:{relay.port}"])
        assert sender.node is not None
        envelope = seal_now(1, body="x" * 900_000)
        outcome = await sender.node.relay_sender.send(envelope, home.identity.node_id)
        self.assertEqual(outcome, ("forwarded", relay.identity.node_id))
        assert home.store is not None
        self.assertEqual(home.store.count_inbox()[0], 1)
        # A byte budget: a flood beyond it is refused, the link stays.
        link = await sender.node.net.dial("127.0.0.1", relay.port, relay.identity.node_id)
        refused = None
        for _ in range(BYTES_PER_MINUTE // len(envelope) + 5):
            answer = await link.request(lambda rid: m.Relay(rid, envelope))
            if isinstance(answer, m.Fail):
                refused = answer
                break
        assert refused is not None
        self.assertEqual(refused.code, ErrorCode.REFUSED)
        self.assertIn("budget", refused.message)

    async def test_relay_holds_mail_while_the_link_is_down(self) -> None:
        (relay,) = await self.chain(1)
        home_lab = await self.start(1, [f"127.0.0.1:{relay.port}"], contact="private")
        home = home_lab.node
        assert home is not None
        await eventually(lambda: home.identity.node_id in relay.relays.reservations)
        await home_lab.stop()
        await eventually(lambda: home.identity.node_id not in relay.net.links)
        sender = await self.start(3, [f"127.0.0.1:{relay.port}"])
        assert sender.node is not None
        link = await sender.node.net.dial("127.0.0.1", relay.port, relay.identity.node_id)
        answer = await link.request(lambda rid: m.Relay(rid, seal_now(1)))
        self.assertEqual(answer, m.Relayed(answer.rid, True))   # type: ignore[attr-defined]
        # The home comes back: the relay tells it and it fetches the mail.
        await home_lab.start()
        assert home_lab.node is not None and home_lab.node.store is not None
        store = home_lab.node.store
        await eventually(lambda: store.count_inbox()[0] == 1)

    async def home_with_relay(self, **overrides: object) -> tuple[Node, Node]:
        (relay,) = await self.chain(1, **overrides)
        home_lab = await self.start(1, [f"127.0.0.1:{relay.port}"], contact="private",
                                    **overrides)
        assert home_lab.node is not None
        home = home_lab.node
        await eventually(lambda: relay.identity.node_id in home.relays.relays)
        return relay, home

    async def test_the_relay_keeps_a_reserved_link_at_its_link_cap(self) -> None:
        relay, home = await self.home_with_relay(client={"max_links": 3})
        link = relay.net.links[home.identity.node_id]
        # A public node closes its join's links once done: each newcomer links again.
        for index in (3, 4, 5):   # the cap: the home's link is the one unused the longest
            newcomer = await self.start(index, [f"127.0.0.1:{relay.port}"])
            assert newcomer.node is not None
            await newcomer.node.net.dial("127.0.0.1", relay.port, relay.identity.node_id)
        await eventually(lambda: newcomer.node_id in relay.net.links)
        self.assertIs(relay.net.links.get(home.identity.node_id), link)
        self.assertFalse(link.closed)
        self.assertEqual(len(relay.net.links), 3)

    async def test_the_home_keeps_its_relay_links_at_its_link_cap(self) -> None:
        # With all the relays it wants, the home stops looking for more: nothing but the test
        # uses its links. The others are private, so they are nobody's relay candidates.
        relays = await self.chain(WANTED_RELAYS, first=5)
        await eventually(lambda: all(r.reach.reachable for r in relays))   # none refuses
        home_lab = await self.start(1, [f"127.0.0.1:{relays[0].port}"], contact="private")
        home = home_lab.node
        assert home is not None
        home_id = home.identity.node_id

        def settled() -> bool:   # its record names them all and no request is in flight
            records = [r.relays.directory.get(home_id, int(time.time())) for r in relays]
            return all(rec is not None and len(rec.relays) == WANTED_RELAYS for rec in records) \
                and all(link.idle_since() is not None for link in home.net.links.values())

        await eventually(settled)
        kept = {r.identity.node_id: home.net.links[r.identity.node_id] for r in relays}
        others = [await self.start(index, [f"127.0.0.1:{relays[0].port}"], contact="private")
                  for index in (3, 4)]
        home.net.registry.max_links = WANTED_RELAYS + 1
        first, second = (other.node for other in others)
        assert first is not None and second is not None
        await home.net.dial("127.0.0.1", first.port, first.identity.node_id)
        # At the cap: the dial pushes out the newest link, the only one without a relay
        # reservation (the relay links are the ones unused the longest).
        await home.net.dial("127.0.0.1", second.port, second.identity.node_id)
        self.assertEqual(home.net.links, kept | {second.identity.node_id:
                                                 home.net.links[second.identity.node_id]})
        self.assertFalse(any(link.closed for link in kept.values()))

    async def test_relay_links_outlive_the_idle_timeout(self) -> None:
        relay, home = await self.home_with_relay(client={"idle_timeout": 3})
        link = home.net.links[relay.identity.node_id]
        await asyncio.sleep(7)   # more than twice the idle timeout
        self.assertIs(home.net.links.get(relay.identity.node_id), link)
        self.assertFalse(link.closed)
        self.assertIn(home.identity.node_id, relay.relays.reservations)

    async def test_reserve_refused_by_an_unreachable_node(self) -> None:
        first, second = await self.chain(2)
        # The second's link starts the first's own check: let it end, or its verdict (under
        # load, after ours) would replace the one we set. The next one is minutes away.
        await eventually(lambda: first.reach.verdict.status is not Status.UNKNOWN)
        first.reach._apply(Verdict(Status.UNREACHABLE, "x:1", 1.0))
        link = await second.net.dial("127.0.0.1", first.port, first.identity.node_id)
        answer = await link.request(m.Reserve)
        assert isinstance(answer, m.Fail)
        self.assertEqual(answer.code, ErrorCode.REFUSED)

    async def test_store_relay_rejects_a_forged_record(self) -> None:
        first, second = await self.chain(2)
        link = await second.net.dial("127.0.0.1", first.port, first.identity.node_id)
        data = bytearray(make_record(identity(5), RELAYS, int(time.time())).encode())
        data[-3] ^= 1
        answer = await link.request(lambda rid: m.StoreRelay(rid, bytes(data)))
        assert isinstance(answer, m.Fail)
        self.assertEqual(answer.code, ErrorCode.INVALID)


if __name__ == "__main__":
    unittest.main()
