"""Fault tests: peers and daemons killed at awkward moments lose nothing acknowledged and
deliver nothing twice.

The nodes under attack run as real `server_app.py` processes (ProcessNode), so SIGKILL is a
real crash; the senders run in this process (LabNode) so the test can read their outbox
directly. Their retry backoff is shortened (mailer.RETRY_BASE) to keep the module fast; the
retry policy itself is not what these tests are about.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import struct
import tempfile
import time
import unittest
import uuid as uuidlib
from pathlib import Path
from typing import Any
from unittest import mock

from fluxchat import mailer as mailer_module
from fluxchat import messages as m
from fluxchat import pow as work
from fluxchat.envelope import MailContent, seal
from fluxchat.framing import encode_frame, encode_prologue
from fluxchat.ids import format_id
from fluxchat.mailer import receipt_uuid
from fluxchat.session import Established, LinkContext, Session, SessionConfig, WorkNeeded
from fluxchat.tls import channel_binding, client_context, peer_certificate
from tests.keys import identity, link_credentials
from tests.lab import WAIT, LabNode, ProcessNode, eventually, write_config

ACKNOWLEDGED = ("handed_over", "stored", "delivered")
FAST_RETRY = 1.0          # seconds before a sender's first retry (5 s in production)
# Mail goes in bursts of mailer.BURST per DeliverMany, acknowledged a burst at a time: the
# crash must come while later bursts are still on their way.
BURST = 5 * mailer_module.BURST
RAW_PEER = 20             # test identity the hand-driven raw peer uses
MAX_PAYLOAD = 1 << 21


# ----- helpers ------------------------------------------------------------------------------


def frame(message: m.Message) -> bytes:
    return encode_frame(*m.encode_message(message), MAX_PAYLOAD)


def abort(writer: asyncio.StreamWriter) -> None:
    """Kill the connection the way a crashed peer does: RST, no close_notify, no FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def uuid_text(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes=raw))


async def ipc(node: ProcessNode, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """A local API call to a process node, off the event loop (the client blocks)."""
    return await asyncio.to_thread(node.call, cmd, args or {})


async def inbox_uuids(node: ProcessNode) -> list[str]:
    """Every uuid in the inbox, duplicates included (a duplicate would be a bug)."""
    listing = await ipc(node, "list", {"limit": 1000})
    uuids = [item["uuid"] for item in listing["items"]]
    assert listing["total"] == len(uuids), listing["total"]
    return uuids


def inbox_on_disk(node: ProcessNode) -> list[str]:
    """The inbox as the dead node's database holds it: what survived the crash."""
    store = node.open_store()
    try:
        _, mails = store.list_inbox(False, 10_000, 0)
    finally:
        store.close()
    return [uuid_text(mail.uuid) for mail in mails]


def outbox_states(lab: LabNode, uuids: list[bytes]) -> dict[bytes, str]:
    assert lab.node is not None and lab.node.store is not None
    store = lab.node.store
    return {u: mail.state for u in uuids if (mail := store.get_outbox(u)) is not None}


def quiet_dead_socket_writes(record: logging.LogRecord) -> bool:
    """asyncio warns when a few writes race a peer's crash; here the crashes are on purpose."""
    return record.getMessage() != "socket.send() raised exception."


def stop_process(node: ProcessNode) -> None:
    """Cleanup: SIGTERM, and SIGKILL if the node does not go."""
    try:
        node.stop()
    except Exception:
        node.kill()


class LabTest(unittest.IsolatedAsyncioTestCase):
    """Owns a temporary lab directory; every node started here is stopped in cleanup."""

    async def asyncSetUp(self) -> None:
        # As NodeTestCase: debug mode slows the nodes and, on a loaded machine, fills the output
        # with "Executing <Task ...> took 0.1 seconds" for callbacks that only waited for a core.
        asyncio.get_running_loop().set_debug(False)
        self.dir = Path(tempfile.mkdtemp(prefix="fluxchat-faults-"))
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.enterContext(mock.patch.object(mailer_module, "RETRY_BASE", FAST_RETRY))
        asyncio_log = logging.getLogger("asyncio")
        asyncio_log.addFilter(quiet_dead_socket_writes)
        self.addCleanup(asyncio_log.removeFilter, quiet_dead_socket_writes)

    async def process(self, index: int, bootstrap: list[str]) -> ProcessNode:
        node = ProcessNode(self.dir, index, bootstrap)
        self.addCleanup(stop_process, node)
        await asyncio.to_thread(node.start)
        return node

    async def lab(self, index: int, bootstrap: list[str]) -> LabNode:
        node = LabNode(self.dir, index, bootstrap)
        self.addAsyncCleanup(node.stop)
        await node.start()
        return node

    async def restart_same_port(self, node: ProcessNode, bootstrap: list[str]) -> None:
        """Start a stopped or killed node again on the port it had, like a fixed config."""
        write_config(self.dir, node.index, bootstrap, {"port": node.runtime["port"]})
        await asyncio.to_thread(node.start)

    async def linked(self, lab: LabNode, other: int, timeout: float = 5.0) -> None:
        assert lab.node is not None
        peer = identity(other).node_id
        await eventually(lambda: peer in lab.node.net.links, timeout)  # type: ignore[union-attr]


# ----- a peer killed mid-frame ---------------------------------------------------------------


class RawPeer:
    """A hand-driven TLS connection to a node, so the test can stop anywhere in a frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: str) -> RawPeer:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=client_context()), 5)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_prologue(self) -> None:
        """The node's prologue arrives once its session runs: it is reading our bytes."""
        prologue = await asyncio.wait_for(self.reader.readexactly(len(encode_prologue())), WAIT)
        assert prologue == encode_prologue(), prologue

    async def handshake(self, index: int) -> Session:
        """A full dialer handshake as test identity `index`; returns the open session."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        config = SessionConfig(identity(index), "private", difficulty=4, max_difficulty=12,
                               link=link_credentials(index))
        context = LinkContext(channel_binding(ssl_object), int(time.time()))
        session = Session.dialer(config, peer_certificate(ssl_object), context,
                                 time.monotonic())
        deadline = time.monotonic() + 5
        while session.established is None:
            await self.send(session.data_to_send())
            remaining = deadline - time.monotonic()
            if remaining <= 0 or session.state.value == "closed":
                raise AssertionError(f"raw handshake failed in state {session.state.value}")
            data = await asyncio.wait_for(self.reader.read(65536), remaining)
            for event in session.receive_data(data, time.monotonic()):
                if isinstance(event, WorkNeeded):
                    session.work_done(work.solve(event.nonce, event.dialer_id,
                                                 event.acceptor_id, event.difficulty))
                elif isinstance(event, Established):
                    break
        await self.send(session.data_to_send())
        return session

    def kill(self) -> None:
        abort(self.writer)


class PeerKilledMidFrameTest(LabTest):
    async def asyncSetUp(self) -> None:
        await super().asyncSetUp()
        self.target = await self.process(0, [])
        self.other = await self.lab(1, [self.target.address])
        await self.linked(self.other, 0)
        assert self.other.node is not None
        self.honest = self.other.node.net.links[identity(0).node_id]

    async def assert_target_healthy(self) -> None:
        """The honest link still answers requests, and the local API still works."""
        reply = await self.honest.request(lambda rid: m.FindNode(rid, bytes(32)))
        self.assertIsInstance(reply, m.Nodes)
        self.assertFalse(self.honest.closed)
        info = await ipc(self.target, "info")
        self.assertEqual(info["id"], identity(0).id_text)
        self.assertIsNone(self.target.proc.poll() if self.target.proc else None)

    async def raw_peer_listed(self) -> bool:
        links = (await ipc(self.target, "peers"))["links"]
        return format_id(identity(RAW_PEER).node_id) in {link["id"] for link in links}

    async def test_killed_during_the_handshake(self) -> None:
        link = link_credentials(RAW_PEER)
        hello = frame(m.Hello(link.node_id, identity(0).node_id, "private", link.encoded,
                              link.identity_der, bytes(64)))
        for cut in (1, 3, 5, 6, len(hello) // 2, len(hello) - 1):
            with self.subTest(cut=cut):
                peer = await RawPeer.connect(self.target.address)
                await peer.read_prologue()
                await peer.send(encode_prologue() + hello[:cut])
                peer.kill()
                await self.assert_target_healthy()

    async def test_killed_on_an_open_link(self) -> None:
        envelope = bytes(range(256)) * 4
        request = frame(m.Deliver(1, envelope))
        for cut in (2, 5, 7, len(request) // 2, len(request) - 1):
            with self.subTest(cut=cut):
                peer = await RawPeer.connect(self.target.address)
                await peer.handshake(RAW_PEER)
                await eventually(self.raw_peer_listed)
                await peer.send(request[:cut])
                peer.kill()
                # The dead link is dropped, not kept half-open with a frame half read.
                await eventually(lambda: not_(self.raw_peer_listed()))
                await self.assert_target_healthy()


async def not_(value: Any) -> bool:
    return not await value


# ----- storers and recipients killed after acknowledging ------------------------------------


class StorerKilledTest(LabTest):
    async def test_other_storers_deliver_exactly_once(self) -> None:
        storers = [await self.process(2, [])]
        for index in (3, 4):
            storers.append(await self.process(index, [storers[-1].address]))
        sender = await self.lab(6, [storers[-1].address])
        recipient = await self.process(5, [storers[-1].address])
        assert sender.node is not None and sender.node.store is not None
        store = sender.node.store
        # The recipient joins, publishes its key, then goes offline.
        await eventually(lambda: store.get_key(identity(5).node_id) is not None)
        await eventually(lambda: len(sender.node.overlay.table) >= 4)  # type: ignore
        await asyncio.to_thread(recipient.stop)

        mail = sender.node.mailer.submit(identity(5).node_id, "held", "for when you are back")
        stored = await eventually(lambda: (o := store.get_outbox(mail.uuid)) is not None
                                  and o.state == "stored" and o)
        self.assertGreaterEqual(stored.stored_on, 2)
        held = [(await ipc(s, "info"))["counts"]["held"] for s in storers]
        holders = [s for s, count in zip(storers, held, strict=True) if count == 1]
        self.assertEqual(len(holders), stored.stored_on, held)

        await asyncio.to_thread(holders[0].kill)       # crashes after acknowledging
        await asyncio.to_thread(recipient.start)

        await eventually(lambda: outbox_states(sender, [mail.uuid]) == {mail.uuid: "delivered"})
        self.assertEqual(await inbox_uuids(recipient), [uuid_text(mail.uuid)])
        read = await ipc(recipient, "read", {"uuid": uuid_text(mail.uuid)})
        self.assertEqual((read["subject"], read["body"]), ("held", "for when you are back"))

        async def storers_emptied() -> bool:
            counts = [(await ipc(s, "info"))["counts"]["held"] for s in holders[1:]]
            return counts == [0] * len(counts)
        await eventually(storers_emptied)   # fetched mail is deleted at the storers
        self.assertEqual(await inbox_uuids(recipient), [uuid_text(mail.uuid)])


class RecipientKilledTest(LabTest):
    async def test_acknowledged_mail_survives_the_crash(self) -> None:
        sender = await self.lab(7, [])
        recipient = await self.process(8, [sender.address])
        await self.linked(sender, 8)
        assert sender.node is not None
        mail = sender.node.mailer.submit(identity(8).node_id, "crash", "right after the ack")

        await eventually(lambda: outbox_states(sender, [mail.uuid])[mail.uuid] in ACKNOWLEDGED,
                         10, interval=0.002)
        await asyncio.to_thread(recipient.kill)
        self.assertEqual(inbox_on_disk(recipient), [uuid_text(mail.uuid)])

        await self.restart_same_port(recipient, [sender.address])
        await eventually(lambda: outbox_states(sender, [mail.uuid]) == {mail.uuid: "delivered"})
        self.assertEqual(await inbox_uuids(recipient), [uuid_text(mail.uuid)])


class DaemonKilledDuringBurstTest(LabTest):
    async def test_burst_survives_a_crash_and_restart(self) -> None:
        sender = await self.lab(9, [])
        recipient = await self.process(10, [sender.address])
        await self.linked(sender, 10)
        assert sender.node is not None
        uuids = [sender.node.mailer.submit(identity(10).node_id, f"burst {i}", f"mail {i}").uuid
                 for i in range(BURST)]

        def some_acknowledged() -> bool:
            states = outbox_states(sender, uuids).values()
            return sum(state in ACKNOWLEDGED for state in states) >= 5
        await eventually(some_acknowledged, 10, interval=0.002)
        await asyncio.to_thread(recipient.kill)
        acknowledged = {u for u, s in outbox_states(sender, uuids).items() if s in ACKNOWLEDGED}
        on_disk = inbox_on_disk(recipient)
        self.assertEqual(len(on_disk), len(set(on_disk)))
        self.assertLessEqual({uuid_text(u) for u in acknowledged}, set(on_disk))
        self.assertLess(len(acknowledged), BURST, "the crash came after the whole burst")

        await self.restart_same_port(recipient, [sender.address])
        await eventually(lambda: set(outbox_states(sender, uuids).values()) == {"delivered"})
        received = await inbox_uuids(recipient)
        self.assertEqual(sorted(received), sorted(uuid_text(u) for u in uuids))


class StopWhileBusyTest(LabTest):
    async def test_stop_right_as_the_outbox_wakes(self) -> None:
        """A stop that lands as the outbox worker is woken must still stop the node."""
        lab = await self.lab(13, [])
        assert lab.node is not None
        lab.node.mailer.wake.set()
        await asyncio.wait_for(lab.stop(), WAIT)


class ReceiptAfterRedeliveryTest(LabTest):
    async def test_mail_arriving_again_sends_a_backed_off_receipt_at_once(self) -> None:
        """The recipient's receipt failed and waits out its backoff; the sender, not knowing,
        delivers the mail again. That proves the sender reachable: the receipt goes now."""
        self.enterContext(mock.patch.object(mailer_module, "RETRY_BASE", 60.0))
        recipient = await self.lab(12, [])
        assert recipient.node is not None and recipient.node.store is not None
        store, now = recipient.node.store, int(time.time())
        sender = identity(11)
        content = MailContent("mail", os.urandom(16), sender.node_id, identity(12).node_id, now,
                              "again", "and again", b"")
        envelope = seal(content, sender, identity(12).public_der, now + 3600, os.urandom(32),
                        os.urandom(12))
        await recipient.node.mailroom.accept(envelope)
        # Nobody can reach the sender: the receipt's first attempt fails and backs off.
        receipt = await eventually(lambda: (r := store.get_outbox(receipt_uuid(content.uuid)))
                                   is not None and r.attempts >= 1 and r, 5)
        self.assertGreater(receipt.next_attempt_at, int(time.time()))

        await recipient.node.mailroom.accept(envelope)    # the sender's retry
        again = store.get_outbox(receipt_uuid(content.uuid))
        assert again is not None
        self.assertEqual((again.state, again.next_attempt_at), ("queued", 0))
        self.assertEqual(store.count_inbox(), (1, 1))


if __name__ == "__main__":
    unittest.main()
