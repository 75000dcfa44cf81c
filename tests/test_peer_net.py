"""Peer links over real TLS sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
import tempfile
import unittest
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fluxchat import messages as m
from fluxchat import pow as work
from fluxchat import tls_stream
from fluxchat.framing import Frame, FrameDecoder, encode_frame, encode_prologue
from fluxchat.link import Link
from fluxchat.peer_net import DialError, NetLimits, PeerNet
from fluxchat.session import SessionConfig
from fluxchat.tls import channel_binding, client_context, link_certificate
from tests.adversary import Attacker
from tests.keys import identity, link_credentials
from tests.lab import WAIT, eventually

RECORD_OVERHEAD = 22   # TLS 1.3: header 5, content type 1, AEAD tag 16

LIMITS = NetLimits(auth_timeout=2, request_timeout=2, max_links=16, max_handshakes=8,
                   connections_per_second=1000)


class Peer:
    """A PeerNet with a tiny request handler: answers FIND_NODE with no nodes."""

    def __init__(self, index: int, limits: NetLimits = LIMITS) -> None:
        self.index = index
        self.up: list[Link] = []
        self.down: list[Link] = []
        self.requests: list[m.Message] = []
        self.hold: asyncio.Event | None = None
        config = SessionConfig(identity(index), "public:1", difficulty=4, max_difficulty=10,
                               handshake_timeout=2, idle_timeout=30, ping_interval=10)
        self.net = PeerNet(config, limits, self.handle, self.up.append, self.down.append)

    async def handle(self, link: Link, message: m.Message) -> m.Message | None:
        self.requests.append(message)
        if self.hold is not None:
            await self.hold.wait()
        if isinstance(message, m.FindNode):
            return m.Nodes(message.rid, ())
        return None


class PeerNetTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.peers: list[Peer] = []

    async def asyncTearDown(self) -> None:
        for peer in self.peers:
            await peer.net.close()

    async def start(self, index: int, **kwargs: object) -> tuple[Peer, int]:
        peer = Peer(index, **kwargs)  # type: ignore[arg-type]
        self.peers.append(peer)
        return peer, await peer.net.listen("127.0.0.1", 0)

    async def test_two_nodes_authenticate_and_exchange_requests(self) -> None:
        a, _ = await self.start(0)
        b, port_b = await self.start(1)
        link = await a.net.dial("127.0.0.1", port_b, identity(1).node_id)
        self.assertEqual(link.peer_id, identity(1).node_id)
        replies = await asyncio.gather(*(link.request(lambda rid: m.FindNode(rid, bytes(32)))
                                         for _ in range(5)))
        self.assertTrue(all(isinstance(r, m.Nodes) for r in replies))
        self.assertEqual(len({r.rid for r in replies}), 5)
        await eventually(lambda: b.up)
        self.assertEqual([link.peer_id for link in b.up], [identity(0).node_id])
        self.assertEqual(b.up[0].peer_key, identity(0).public_der)
        self.assertEqual(b.up[0].contact, "public:1")
        # A second dial reuses the link: one link per peer.
        self.assertIs(await a.net.dial("127.0.0.1", port_b, identity(1).node_id), link)

    async def test_links_read_into_one_small_shared_tls_buffer(self) -> None:
        """A read buffer per link (asyncio's TLS streams had 256 KiB each) would cost a node
        with 50 links megabytes; the links of a thread read into one of 16 KiB (tls_stream)."""
        a, _ = await self.start(0)
        b, port_b = await self.start(1)
        link = await a.net.dial("127.0.0.1", port_b, identity(1).node_id)
        await eventually(lambda: b.up)
        buffers = [end._stream.get_buffer(-1)   # type: ignore[attr-defined]
                   for end in (link, b.up[0])]
        self.assertEqual(len(buffers[0]), tls_stream.READ_BUFFER)
        self.assertIs(buffers[0].obj, buffers[1].obj)
        big = await link.request(lambda rid: m.FindNode(rid, bytes(32)))   # still one link
        self.assertIsInstance(big, m.Nodes)

    async def test_links_sharing_the_read_buffer_carry_big_frames_intact(self) -> None:
        # Three links deliver 300 KiB each at once, every TLS record read into one buffer.
        b, port_b = await self.start(1)
        senders = [(await self.start(index))[0] for index in (0, 2, 3)]
        bodies = [os.urandom(300 * 1024) for _ in senders]

        links = [await p.net.dial("127.0.0.1", port_b, identity(1).node_id) for p in senders]
        await asyncio.gather(*(link.request(lambda rid, body=body: m.Deliver(rid, body))
                               for link, body in zip(links, bodies, strict=True)),
                             return_exceptions=True)   # the tiny handler answers nothing
        got = [hashlib.sha256(r.envelope).hexdigest() for r in b.requests
               if isinstance(r, m.Deliver)]
        self.assertEqual(sorted(got), sorted(hashlib.sha256(body).hexdigest() for body in bodies))

    async def test_big_frames_reach_the_tls_layer_a_record_at_a_time(self) -> None:
        """OpenSSL's memory BIO that asyncio encrypts each write into never shrinks: a 1 MiB
        frame written at once left 1 MiB on its link for as long as the link stayed open
        (bench/README.md, "Memory per node"). Links encrypt a TLS record's payload at a time
        and hand each record to the socket's transport at once."""
        a, _ = await self.start(0)
        b, port_b = await self.start(1)
        link = await a.net.dial("127.0.0.1", port_b, identity(1).node_id)
        transport = link._stream._transport  # type: ignore[attr-defined]
        sizes: list[int] = []
        write = transport.write

        def recording_write(data: bytes | memoryview) -> None:
            sizes.append(len(data))
            write(data)

        transport.write = recording_write
        body = os.urandom(1024 * 1024)
        asking = asyncio.ensure_future(link.request(lambda rid: m.Deliver(rid, body)))
        await eventually(lambda: b.requests)   # arrived whole (the tiny handler answers nothing)
        asking.cancel()
        self.assertEqual(b.requests, [m.Deliver(1, body)])
        self.assertGreaterEqual(sum(sizes), len(body))
        self.assertLessEqual(max(sizes), tls_stream.RECORD + RECORD_OVERHEAD)

    async def test_bare_address_learns_the_id_and_pin_mismatch_fails(self) -> None:
        a, _ = await self.start(0)
        _, port_b = await self.start(1)
        with self.assertRaises(DialError):
            await a.net.dial("127.0.0.1", port_b, identity(2).node_id)
        link = await a.net.dial("127.0.0.1", port_b)
        self.assertEqual(link.peer_id, identity(1).node_id)

    async def test_simultaneous_dials_end_with_one_link(self) -> None:
        a, port_a = await self.start(0)
        b, port_b = await self.start(1)
        await asyncio.gather(a.net.dial("127.0.0.1", port_b), b.net.dial("127.0.0.1", port_a),
                             return_exceptions=True)

        def live(peer: Peer) -> list[Link]:
            return [link for link in peer.net.links.values() if not link.closed]

        # Both ends settle on the same single link (the duplicate closes on both sides).
        await eventually(lambda: len(live(a)) == 1 and len(live(b)) == 1
                         and live(a)[0].direction != live(b)[0].direction)
        live_a = live(a)
        reply = await live_a[0].request(lambda rid: m.FindNode(rid, bytes(32)))
        self.assertIsInstance(reply, m.Nodes)

    async def test_copied_certificate_without_its_key_is_useless(self) -> None:
        # TLS 1.3 makes the server sign the handshake with the certificate's key (the link
        # key), and ssl will not even pair node 1's link certificate with node 3's link key.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        key = link_credentials(3).private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "cert.pem").write_bytes(link_certificate(link_credentials(1)) + key)
            with self.assertRaises(ssl.SSLError):
                context.load_cert_chain(Path(tmp) / "cert.pem")

    async def test_dialer_with_a_copied_identity_is_refused(self) -> None:
        # Node 3 dials claiming node 1's ID, record and public key, but can only sign the
        # TLS session with its own link key.
        _, port_a = await self.start(0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_a, ssl=client_context())
        binding = channel_binding(writer.get_extra_info("ssl_object"))
        claimed, acceptor = identity(1).node_id, identity(0).node_id
        copied = link_credentials(1)
        hello = m.Hello(claimed, acceptor, "private", copied.encoded, copied.identity_der,
                        link_credentials(3).prove(binding, claimed, acceptor))
        writer.write(encode_prologue() + frame(hello))
        decoder = FrameDecoder(1 << 20)
        items: list = []
        while not any(isinstance(i, Frame) for i in items):
            items += decoder.feed(await asyncio.wait_for(reader.read(4096), WAIT))
        challenge = m.decode_message(items[1].type, items[1].payload)
        counter = work.solve(challenge.nonce, claimed, acceptor, challenge.difficulty)
        writer.write(frame(m.Work(counter)))
        rest = decoder.feed(await asyncio.wait_for(reader.read(4096), WAIT))
        error = m.decode_message(rest[0].type, rest[0].payload)
        self.assertEqual(error.code, m.ErrorCode.AUTH_FAILED)
        writer.close()

    async def test_garbage_and_tls12_clients_refused_honest_peer_unharmed(self) -> None:
        a, port_a = await self.start(0)
        b, _ = await self.start(1)
        link = await b.net.dial("127.0.0.1", port_a)
        reader, writer = await asyncio.open_connection("127.0.0.1", port_a)
        writer.write(os.urandom(4096))
        await writer.drain()
        self.assertEqual(await asyncio.wait_for(reader.read(), WAIT), b"")
        writer.close()
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            await asyncio.open_connection("127.0.0.1", port_a, ssl=old)
        reply = await link.request(lambda rid: m.FindNode(rid, bytes(32)))
        self.assertIsInstance(reply, m.Nodes)

    async def test_garbage_inside_tls_closes_only_that_link(self) -> None:
        a, port_a = await self.start(0)
        b, _ = await self.start(1)
        honest = await b.net.dial("127.0.0.1", port_a)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", port_a, ssl=client)
        writer.write(b"FLUXCHAT\x00\x01" + b"\xff\xff\xff\xff\x01")   # oversize frame
        await writer.drain()
        items = FrameDecoder(1 << 20).feed(await asyncio.wait_for(reader.read(), WAIT))
        error = m.decode_message(items[1].type, items[1].payload)   # after the prologue
        self.assertEqual(error.code, m.ErrorCode.TOO_LARGE)
        writer.close()
        reply = await honest.request(lambda rid: m.FindNode(rid, bytes(32)))
        self.assertIsInstance(reply, m.Nodes)

    async def test_at_the_link_cap_the_idle_link_makes_room(self) -> None:
        limits = NetLimits(2, 2, max_links=1, max_handshakes=1, connections_per_second=1000)
        a, port_a = await self.start(0, limits=limits)
        b, _ = await self.start(1)
        c, _ = await self.start(2)
        old = await b.net.dial("127.0.0.1", port_a)
        new = await c.net.dial("127.0.0.1", port_a)
        self.assertIsInstance(await new.request(lambda rid: m.FindNode(rid, bytes(32))), m.Nodes)
        self.assertEqual(list(a.net.links), [identity(2).node_id])
        await eventually(lambda: old.closed)

    async def test_at_the_link_cap_busy_links_are_kept(self) -> None:
        limits = NetLimits(2, 2, max_links=1, max_handshakes=1, connections_per_second=1000)
        a, port_a = await self.start(0, limits=limits)
        b, _ = await self.start(1)
        c, _ = await self.start(2)
        link = await b.net.dial("127.0.0.1", port_a)
        a.hold = asyncio.Event()          # a's handler now waits: b's request stays in flight
        pending = asyncio.ensure_future(link.request(lambda rid: m.FindNode(rid, bytes(32))))
        await eventually(lambda: a.requests)
        # The newcomer proves its ID, finds no idle link to replace, and is refused before
        # Welcome; an unauthenticated connection could not even get that far.
        with self.assertRaisesRegex(DialError, "link cap"):
            await c.net.dial("127.0.0.1", port_a)
        self.assertEqual(list(a.net.links), [identity(1).node_id])
        a.hold.set()
        self.assertIsInstance(await pending, m.Nodes)

    async def test_known_peers_request_travels_with_its_hello(self) -> None:
        a, _ = await self.start(0)
        b, port_b = await self.start(1)
        b_id = identity(1).node_id
        self.assertIsInstance(await a.net.request("127.0.0.1", port_b, b_id, find), m.Nodes)
        first = a.net.links[b_id]
        # a did not know b: b demanded work, and the request went behind a's Work.
        self.assertEqual(first._session.early, "with-work")   # noqa: SLF001
        first.close(m.ErrorCode.SHUTDOWN, "done")
        await eventually(lambda: b.down)
        self.assertIsInstance(await a.net.request("127.0.0.1", port_b, b_id, find), m.Nodes)
        second = a.net.links[b_id]
        self.assertIsNot(second, first)
        # Sent in the Hello's flight and never again; b read it with the Hello and served
        # it on the link that Hello opened: one round trip after TLS.
        self.assertEqual(second._session.early, "sent")   # noqa: SLF001
        await eventually(lambda: len(b.up) == 2)
        self.assertEqual(b.up[1]._session.early, "served")   # noqa: SLF001
        self.assertEqual(len(b.requests), 2)

    async def test_early_requests_of_unauthenticated_dialers_are_never_served(self) -> None:
        a, port_a = await self.start(0)
        b, _ = await self.start(1)
        await b.net.dial("127.0.0.1", port_a)   # a knows node 1 now: its claim asks no work
        # Node 3 claims node 1's ID and current record, but can only sign with its own link key.
        reader, writer = await asyncio.open_connection("127.0.0.1", port_a, ssl=client_context())
        binding = channel_binding(writer.get_extra_info("ssl_object"))
        claimed, acceptor = identity(1).node_id, identity(0).node_id
        copied = b.net.tls.current()[0]
        hello = m.Hello(claimed, acceptor, "private", copied.encoded, copied.identity_der,
                        link_credentials(3).prove(binding, claimed, acceptor))
        writer.write(encode_prologue() + frame(hello) + frame(find(1)))
        items = FrameDecoder(1 << 20).feed(await asyncio.wait_for(reader.read(), WAIT))
        self.assertEqual(m.decode_message(items[1].type, items[1].payload),
                         m.Error(m.ErrorCode.AUTH_FAILED, "bad signature"))
        writer.close()
        # An unknown node is challenged: its early request is dropped unread, not served
        # once it has paid; a second early request, or a big one, closes the link.
        attacker = await Attacker.connect("127.0.0.1", port_a, 20, stage="hello")
        attacker.send(find(1))
        await attacker._finish_handshake()   # noqa: SLF001
        self.assertEqual(a.requests, [])
        rid = attacker.request(find)
        self.assertEqual(await attacker.response(rid), m.Nodes(rid, ()))
        self.assertEqual(a.requests, [find(rid)])
        attacker.close()
        for index, extra, code in ((21, frame(find(1)) + frame(find(2)), m.ErrorCode.UNEXPECTED),
                                   (22, frame(m.Store(1, bytes(5000))), m.ErrorCode.TOO_LARGE)):
            attacker = await Attacker.connect("127.0.0.1", port_a, index, stage="hello")
            attacker.send_raw(extra)
            self.assertEqual(await asyncio.wait_for(attacker.closed_by_victim(), WAIT), code)
        self.assertEqual(len(a.requests), 1)

    async def test_slow_loris_handshake_times_out(self) -> None:
        _, port_a = await self.start(0)
        sock = socket.create_connection(("127.0.0.1", port_a))
        sock.settimeout(8)
        try:
            self.assertEqual(await asyncio.get_running_loop().run_in_executor(
                None, sock.recv, 100), b"")   # closed by the TLS handshake timeout
        finally:
            sock.close()


def frame(message: m.Message) -> bytes:
    return encode_frame(*m.encode_message(message), 1 << 20)


def find(rid: int) -> m.FindNode:
    return m.FindNode(rid, bytes(32))


if __name__ == "__main__":
    unittest.main()
