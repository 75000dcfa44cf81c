"""Attacks on the peer layer, each run with the adversary kit against real nodes on loopback.

Every test exceeds one bound on purpose and then asserts the bound itself (links, slots,
bytes, frames), not how long something took.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import unittest

from fluxchat import messages as m
from fluxchat.link import Link, OutputLimits, RequestTimeout
from fluxchat.peer_net import DialError, NetLimits, PeerNet
from fluxchat.session import SessionConfig, WorkNeeded
from fluxchat.tls import channel_binding, client_context
from tests.adversary import Attacker, crowd, encode_prologue, frame, hostile_net, tcp
from tests.keys import identity, link_credentials
from tests.lab import LabNode, NodeTestCase, eventually

ATTACKER = 21
E = m.ErrorCode
BIG = 256 * 1024          # one envelope in a victim's answer
# Attackers play up to four hosts in four /24s; honest peers come from 127.0.0.1.
ATTACK_SOURCES = ["127.0.2.1", "127.0.3.1", "127.0.4.1", "127.0.5.1"]


class Victim:
    """A real PeerNet as test node 0 that answers Fetch with big batches and counts all."""

    def __init__(self, limits: NetLimits, **session: object) -> None:
        self.seen: collections.Counter[str] = collections.Counter()
        self.hold: asyncio.Event | None = None
        self.links: list[Link] = []
        values: dict[str, object] = dict(handshake_timeout=5, idle_timeout=60,
                                         ping_interval=30)
        values.update(session)
        config = SessionConfig(identity(0), "public:1", 4, 16, **values)  # type: ignore[arg-type]
        self.net = PeerNet(config, limits, self.handle, self.links.append, lambda link: None)

    async def handle(self, link: Link, message: m.Message) -> m.Message | None:
        self.seen[type(message).__name__] += 1
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(message, m.Fetch):
            return m.MailBatch(message.rid, (bytes(BIG),) * 4, False)
        if isinstance(message, m.FindNode):
            return m.Nodes(message.rid, ())
        return None


def limits(**changes: object) -> NetLimits:
    base = NetLimits(auth_timeout=5, request_timeout=5, max_links=16, max_handshakes=8,
                     connections_per_second=1000)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


class PeerAttackCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        asyncio.get_running_loop().set_debug(False)
        self.nets: list[PeerNet] = []
        self.attackers: list[Attacker] = []

    async def asyncTearDown(self) -> None:
        for attacker in self.attackers:
            attacker.close()
        for net in self.nets:
            await net.close()

    async def victim(self, net_limits: NetLimits, **session: object) -> tuple[Victim, int]:
        victim = Victim(net_limits, **session)
        self.nets.append(victim.net)
        return victim, await victim.net.listen("127.0.0.1", 0)

    async def honest(self, index: int) -> PeerNet:
        net = hostile_net(index, lambda link, message: _nothing())
        self.nets.append(net)
        return net


async def _nothing() -> None:
    return None


class PinTest(NodeTestCase):
    """Issue 10.1: every dial returns a link authenticated as the expected ID, or fails."""

    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        fakes = [os.urandom(32) for _ in range(39)]
        self.fakes = fakes

        async def lie(link: Link, message: m.Message) -> m.Message | None:
            # Every made-up ID "lives" at the attacker's own address.
            if isinstance(message, m.FindNode):
                return m.Nodes(message.rid, tuple(m.NodeInfo(f, "127.0.0.1", self.port)
                                                  for f in fakes[:20]))
            if isinstance(message, m.Store):
                return m.Ok(message.rid)
            return None

        self.attacker = hostile_net(ATTACKER, lie)
        self.port = await self.attacker.listen("127.0.0.1", 0)

    async def asyncTearDown(self) -> None:
        await self.attacker.close()
        await super().asyncTearDown()

    async def test_a_link_to_an_address_is_not_lent_to_other_ids(self) -> None:
        lab = LabNode(self.dir, 0, [f"127.0.0.1:{self.port}"])
        self.labs.append(lab)
        victim = await lab.start()
        self.assertIn(identity(ATTACKER).node_id, victim.net.links)
        for fake in self.fakes:
            with self.assertRaises(DialError):
                await victim.net.dial("127.0.0.1", self.port, fake)
        # Concurrent dials to one address for different IDs are not shared either.
        results = await asyncio.gather(
            victim.net.dial("127.0.0.1", self.port),
            *(victim.net.dial("127.0.0.1", self.port, f) for f in self.fakes[:5]),
            return_exceptions=True)
        self.assertIsInstance(results[0], Link)
        self.assertEqual(results[0].peer_id, identity(ATTACKER).node_id)   # type: ignore
        self.assertTrue(all(isinstance(r, DialError) for r in results[1:]))
        self.assertEqual(set(victim.net.links), {identity(ATTACKER).node_id})

    async def test_made_up_ids_never_enter_the_routing_table(self) -> None:
        lab = LabNode(self.dir, 0, [f"127.0.0.1:{self.port}"])
        self.labs.append(lab)
        victim = await lab.start()
        for _ in range(3):
            await victim.overlay.find_node(os.urandom(32))
        ids = {entry.peer.node_id for entry in victim.overlay.table.entries()}
        self.assertEqual(ids & set(self.fakes), set())
        self.assertEqual(ids, {identity(ATTACKER).node_id})
        # Asked to reach a made-up ID, the victim fails rather than "deliver" to the attacker.
        with self.assertRaises(DialError):
            await victim.net.request("127.0.0.1", self.port, self.fakes[0], m.Ping)


class HandshakeSlotTest(PeerAttackCase):
    """Issue 10.2: silent and stalling connections cannot hold the handshake slots."""

    async def test_silent_sockets_from_four_prefixes_leave_room_for_honest_peers(self) -> None:
        victim, port = await self.victim(limits(max_handshakes=8))
        per_prefix = victim.net.admission.limits.per_prefix
        # Far more silent connections than there are slots, from every attacker address.
        sockets = []
        for source in ATTACK_SOURCES * 6:
            sockets.append(await tcp("127.0.0.1", port, source))
        await eventually(lambda: victim.net.refused >= len(sockets) - 4 * per_prefix)
        for source in ATTACK_SOURCES:
            self.assertLessEqual(victim.net.admission.in_flight_from(source), per_prefix)
        self.assertLessEqual(victim.net.admission.in_flight, 4 * per_prefix)
        # Honest newcomers still get in while the flood holds what it can.
        for index in (1, 2, 3):
            link = await (await self.honest(index)).dial("127.0.0.1", port)
            self.assertEqual(link.peer_id, identity(0).node_id)
        for _, writer in sockets:
            writer.transport.abort()

    async def test_a_silent_socket_is_dropped_at_the_tls_deadline(self) -> None:
        victim, port = await self.victim(limits(tls_timeout=0.3), handshake_timeout=60)
        reader, writer = await tcp("127.0.0.1", port, ATTACK_SOURCES[0])
        self.assertEqual(victim.net.admission.in_flight, 1)
        # Closed long before the 60 s handshake deadline: the slot is free again.
        self.assertEqual(await asyncio.wait_for(reader.read(), 30), b"")
        await eventually(lambda: victim.net.admission.in_flight == 0)
        writer.close()

    async def test_stalling_after_hello_ends_at_the_one_handshake_deadline(self) -> None:
        victim, port = await self.victim(limits(), handshake_timeout=1)
        stalled = await crowd(3, lambda: Attacker.connect("127.0.0.1", port, ATTACKER,
                                                          source=ATTACK_SOURCES[1],
                                                          stage="hello"))
        self.attackers += stalled
        codes = await asyncio.gather(*(a.closed_by_victim() for a in stalled))
        self.assertTrue(all(code == E.TIMEOUT for code in codes), codes)
        await eventually(lambda: victim.net.admission.in_flight == 0)
        self.assertEqual(victim.net.links, {})

    async def test_a_bare_connection_never_evicts_an_authenticated_link(self) -> None:
        victim, port = await self.victim(limits(max_links=1, max_handshakes=4))
        link = await (await self.honest(1)).dial("127.0.0.1", port)
        stalled = [await Attacker.connect("127.0.0.1", port, ATTACKER, source=source,
                                          stage=stage)
                   for source, stage in zip(ATTACK_SOURCES, ("tcp", "tls", "hello"), strict=False)]
        self.attackers += stalled
        await asyncio.gather(*(a.closed_by_victim() for a in stalled[2:]))
        self.assertEqual(list(victim.net.links), [identity(1).node_id])
        self.assertFalse(link.closed)


class ReplayTest(PeerAttackCase):
    """A recorded handshake replayed on a new connection proves nothing: fresh nonce."""

    async def test_replayed_handshake_is_refused(self) -> None:
        victim, port = await self.victim(limits())
        recorded = await Attacker.connect("127.0.0.1", port, ATTACKER)
        self.attackers.append(recorded)
        replay = await Attacker.connect("127.0.0.1", port, ATTACKER, stage="tls",
                                        source=ATTACK_SOURCES[0])
        self.attackers.append(replay)
        replay.send_raw(bytes(recorded.sent))
        code = await replay.closed_by_victim()
        await eventually(lambda: victim.net.admission.in_flight == 0)
        self.assertEqual(list(victim.net.links), [identity(ATTACKER).node_id])
        # The old proof of work is for another nonce (or, by a 1-in-16 chance at this
        # difficulty, it passes and the signature over the old nonce fails).
        self.assertIn(code, (E.WORK_INSUFFICIENT, E.AUTH_FAILED))


class ReconnectTest(PeerAttackCase):
    """A peer whose old connection died (unseen by us) gets its new link at once."""

    async def test_a_second_link_from_the_same_peer_replaces_the_first(self) -> None:
        victim, port = await self.victim(limits())
        first = await Attacker.connect("127.0.0.1", port, ATTACKER)
        self.attackers.append(first)
        old = (await eventually(lambda: victim.links))[0]
        second = await Attacker.connect("127.0.0.1", port, ATTACKER)
        self.attackers.append(second)
        rid = second.request(lambda rid: m.FindNode(rid, bytes(32)))
        self.assertIsInstance(await second.response(rid), m.Nodes)
        self.assertTrue(old.closed)
        self.assertEqual(len(victim.net.links), 1)
        self.assertEqual(await first.closed_by_victim(), E.DUPLICATE)


class EvictionTest(PeerAttackCase):
    """Issue 10.7: at the link cap, a crowd of identities from one prefix displaces its own
    links first, never the honest link from elsewhere."""

    async def test_a_crowd_from_one_prefix_evicts_itself(self) -> None:
        victim, port = await self.victim(limits(max_links=3))
        honest = await (await self.honest(1)).dial("127.0.0.1", port)
        crowd_ids = (20, 21, 22, 23, 19, 18)
        for index in crowd_ids:
            attacker = await Attacker.connect("127.0.0.1", port, index,
                                              source=ATTACK_SOURCES[0])
            self.attackers.append(attacker)
        await eventually(lambda: identity(18).node_id in victim.net.links)
        self.assertEqual(len(victim.net.links), 3)
        self.assertIn(identity(1).node_id, victim.net.links)
        self.assertFalse(honest.closed)


class PrefixLinkCapTest(PeerAttackCase):
    """Issue 10 (left open): established inbound links are capped per /24 and /64."""

    def from_crowd(self, victim: Victim) -> list[bytes]:
        return [peer for peer, link in victim.net.links.items()
                if link.address[0].startswith("127.0.2.")]

    async def test_a_crowd_from_one_prefix_keeps_at_most_its_share(self) -> None:
        victim, port = await self.victim(limits(links_per_prefix=2))
        honest = await (await self.honest(1)).dial("127.0.0.1", port)
        hosts = ("127.0.2.1", "127.0.2.2", "127.0.2.3", "127.0.2.4")   # one /24
        for index, host in zip((20, 21, 22, 23), hosts, strict=True):
            self.attackers.append(await Attacker.connect("127.0.0.1", port, index, source=host))
        await eventually(lambda: identity(23).node_id in victim.net.links)
        # Idle links of the crowd made room for its newer ones, two at a time.
        self.assertEqual(sorted(self.from_crowd(victim)),
                         sorted([identity(22).node_id, identity(23).node_id]))
        self.assertIn(identity(1).node_id, victim.net.links)
        self.assertFalse(honest.closed)

    async def test_a_full_prefix_of_busy_links_refuses_newcomers(self) -> None:
        victim, port = await self.victim(limits(links_per_prefix=2))
        victim.hold = asyncio.Event()   # every request stays in flight: no link is idle
        for index, host in ((20, "127.0.2.1"), (21, "127.0.2.2")):
            attacker = await Attacker.connect("127.0.0.1", port, index, source=host)
            self.attackers.append(attacker)
            attacker.request(lambda rid: m.FindNode(rid, bytes(32)))
        await eventually(lambda: victim.seen["FindNode"] == 2)
        with self.assertRaisesRegex(ConnectionError, "too many links from your network"):
            await Attacker.connect("127.0.0.1", port, 22, source="127.0.2.3")
        self.assertEqual(len(self.from_crowd(victim)), 2)
        # Another prefix is not held back.
        self.attackers.append(await Attacker.connect("127.0.0.1", port, 23,
                                                     source=ATTACK_SOURCES[1]))
        await eventually(lambda: identity(23).node_id in victim.net.links)
        victim.hold.set()


class OutputTest(PeerAttackCase):
    """Issue 10.4: a peer that pipelines requests and never reads cannot grow our memory."""

    async def test_queued_output_stays_bounded_and_the_reader_loses_the_link(self) -> None:
        output = OutputLimits(max_queued=1024 * 1024, write_timeout=1.0, close_grace=0.5)
        victim, port = await self.victim(limits(output=output))
        attacker = await Attacker.connect("127.0.0.1", port, ATTACKER, withhold_reads=True)
        self.attackers.append(attacker)
        for _ in range(60):   # 60 answers of 1 MiB each if they were all queued
            attacker.request(lambda rid: m.Fetch(rid, 4))
        await attacker.drain()
        await eventually(lambda: victim.links and victim.links[0].closed)
        link = victim.links[0]
        # Never more than the bound plus one answer was waiting for the peer.
        self.assertLessEqual(link.peak_queued, output.max_queued + 4 * BIG + 4096)
        self.assertGreater(link.refused_for_output, 0)
        await eventually(lambda: victim.net.links == {})


class FrameBudgetTest(PeerAttackCase):
    """Issue 10.5 (peer layer): every frame, Notify included, spends the link's budget."""

    async def test_a_flooder_is_read_no_faster_than_its_budget(self) -> None:
        victim, port = await self.victim(limits(), frame_rate=1.0, frame_burst=100.0)
        attacker = await Attacker.connect("127.0.0.1", port, ATTACKER)
        self.attackers.append(attacker)
        link = (await eventually(lambda: victim.links))[0]
        session = link._session   # noqa: SLF001 - the counters under test
        attacker.flood(m.Notify(), 2000)
        await attacker.drain()
        await eventually(lambda: session.frames_received > 100)
        read = session.frames_received
        # Far more frames, then a request: the link stays open but is not read from while
        # its budget is in debt, so none of it costs the victim anything.
        for _ in range(5):
            attacker.flood(m.Notify(), 2000)
            attacker.request(lambda rid: m.FindNode(rid, bytes(32)))
        await attacker.drain()
        await asyncio.sleep(0.3)
        self.assertGreater(session.read_delay(asyncio.get_running_loop().time()), 10)
        # One read is at most a chunk (64 KiB, about 13,000 empty notices), plus what a
        # budget of 1 frame/s refills meanwhile.
        self.assertLessEqual(session.frames_received, read + 3)
        self.assertEqual(victim.seen["FindNode"], 0)
        # A flood read at once costs one handler run, not one task per notice.
        self.assertLessEqual(victim.seen["Notify"], 3)
        self.assertFalse(link.closed)

    async def test_honest_peer_unharmed_by_a_flooder(self) -> None:
        victim, port = await self.victim(limits(), frame_rate=1.0, frame_burst=100.0)
        link = await (await self.honest(1)).dial("127.0.0.1", port)
        attacker = await Attacker.connect("127.0.0.1", port, ATTACKER)
        self.attackers.append(attacker)
        attacker.flood(m.Notify(), 5000)
        await attacker.drain()
        self.assertIsInstance(await link.request(lambda rid: m.FindNode(rid, bytes(32))),
                              m.Nodes)


class TimerTest(PeerAttackCase):
    """Issue 12.4: one timer per request (the session's), and timeouts are not retried."""

    async def test_a_withheld_answer_times_out_once_and_is_not_resent(self) -> None:
        victim, port = await self.victim(limits())
        victim.hold = asyncio.Event()
        net = await self.honest(1)
        link = await net.dial("127.0.0.1", port)
        with self.assertRaises(RequestTimeout):
            await link.request(lambda rid: m.FindNode(rid, bytes(32)), timeout=0.3)
        with self.assertRaises(RequestTimeout):
            await net.request("127.0.0.1", port, identity(0).node_id,
                              lambda rid: m.FindNode(rid, bytes(32)))
        self.assertEqual(victim.seen["FindNode"], 2)
        self.assertFalse(link.closed)
        victim.hold.set()

    async def test_a_failing_link_callback_leaves_a_working_link(self) -> None:
        victim, port = await self.victim(limits())

        def broken(link: Link) -> None:
            raise RuntimeError("database is locked")

        victim.net.registry._on_link = broken   # noqa: SLF001 - the failure under test
        dialer = await self.honest(1)
        with self.assertLogs("fluxchat.peer", "ERROR") as logs:
            link = await dialer.dial("127.0.0.1", port)
            await eventually(lambda: identity(1).node_id in victim.net.links)
            await eventually(lambda: logs.records)
        self.assertIsInstance(await link.request(lambda rid: m.FindNode(rid, bytes(32))),
                              m.Nodes)
        self.assertIn(identity(1).node_id, victim.net.links)


def paid_work(attacker: Attacker) -> bool:
    return any(isinstance(event, WorkNeeded) for event in attacker.events)


class WorkDemandTest(PeerAttackCase):
    """Issue 13.4: proof of work is demanded of unknown or misbehaving dialers, and of every
    dialer while the acceptor is busy; a peer the acceptor knows links without it."""

    async def connect(self, port: int, index: int = ATTACKER,
                      source: str = "127.0.0.1") -> Attacker:
        attacker = await Attacker.connect("127.0.0.1", port, index, source=source)
        self.attackers.append(attacker)
        return attacker

    async def test_a_known_peer_pays_no_work_and_a_newcomer_does(self) -> None:
        victim, port = await self.victim(limits())
        self.assertTrue(paid_work(await self.connect(port)))
        again = await self.connect(port)
        self.assertFalse(paid_work(again))
        self.assertIsInstance(await again.response(again.request(m.Ping)), m.Pong)
        self.assertTrue(paid_work(await self.connect(port, ATTACKER + 1)))
        # From another address the known peer is still known: the ID and record are.
        self.assertFalse(paid_work(await self.connect(port, source=ATTACK_SOURCES[0])))

    async def test_claiming_a_known_id_without_its_link_key_is_refused_and_costs_work(
            self) -> None:
        victim, port = await self.victim(limits())
        await self.connect(port)   # ATTACKER is now known
        # An impostor shows ATTACKER's record and identity key but can sign the TLS session
        # only with its own link key: no work is asked (the ID is known), the proof fails.
        reader, writer = await tcp("127.0.0.1", port, ATTACK_SOURCES[0])
        await writer.start_tls(client_context())
        binding = channel_binding(writer.get_extra_info("ssl_object"))
        copied, acceptor = link_credentials(ATTACKER), identity(0).node_id
        proof = link_credentials(ATTACKER + 1).prove(binding, copied.node_id, acceptor)
        impostor = Attacker(reader, writer, identity(ATTACKER + 1))
        self.attackers.append(impostor)
        impostor.send_raw(encode_prologue() + frame(m.Hello(
            copied.node_id, acceptor, "private", copied.encoded, copied.identity_der, proof)))
        self.assertEqual(await impostor.closed_by_victim(), E.AUTH_FAILED)
        # The impostor's source now pays work, whoever it claims to be; the real peer's
        # address does not.
        self.assertTrue(paid_work(await self.connect(port, source=ATTACK_SOURCES[0])))
        self.assertFalse(paid_work(await self.connect(port)))

    async def test_a_peer_that_broke_the_protocol_pays_again(self) -> None:
        victim, port = await self.victim(limits())
        await self.connect(port)
        rude = await self.connect(port)
        self.assertFalse(paid_work(rude))
        rude.send_raw(frame(m.Welcome("", "")))   # a handshake message on an open link
        self.assertEqual(await rude.closed_by_victim(), E.UNEXPECTED)
        await eventually(lambda: not victim.net.links)
        self.assertTrue(paid_work(await self.connect(port)))

    async def test_under_load_known_peers_pay_too(self) -> None:
        victim, port = await self.victim(limits(max_handshakes=8))   # busy from 4 in flight
        await self.connect(port)
        for source in ATTACK_SOURCES:   # four silent handshakes, one per prefix
            self.attackers.append(await Attacker.connect("127.0.0.1", port, ATTACKER + 1,
                                                         source=source, stage="tls"))
        await eventually(lambda: victim.net.admission.in_flight >= 4)
        self.assertTrue(paid_work(await self.connect(port)))


class WorkTest(PeerAttackCase):
    """Issue 10.7: a dialer refuses work it cannot finish before its deadline."""

    async def test_a_dialer_refuses_a_challenge_it_cannot_solve_in_time(self) -> None:
        acceptor = hostile_net(2, lambda link, message: _nothing(), difficulty=36)
        self.nets.append(acceptor)
        port = await acceptor.listen("127.0.0.1", 0)
        config = SessionConfig(identity(1), "private", 4, 40, handshake_timeout=2)
        dialer = PeerNet(config, limits(), lambda link, message: _nothing(),
                         lambda link: None, lambda link: None)
        self.nets.append(dialer)
        with self.assertRaisesRegex(DialError, "difficulty 36 is above our limit"):
            await dialer.dial("127.0.0.1", port)


class KitTest(NodeTestCase):
    """The kit itself: it gets in as an honest peer would, and stalls where it is told."""

    async def test_attacker_authenticates_and_is_answered(self) -> None:
        victim = (await self.chain(1))[0]
        attacker = await Attacker.connect("127.0.0.1", victim.port, ATTACKER)
        self.assertEqual(attacker.peer_id, victim.identity.node_id)
        rid = attacker.request(lambda rid: m.FindNode(rid, bytes(32)))
        self.assertIsInstance(await attacker.response(rid), m.Nodes)
        attacker.close()


if __name__ == "__main__":
    unittest.main()
