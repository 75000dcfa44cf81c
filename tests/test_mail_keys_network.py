"""Mail keys between real in-process nodes: v2 mail and receipts by default, v1 with a node
that publishes no record, the key directory's refusals, rotation, and erasure of prekeys."""

from __future__ import annotations

import time
import uuid as uuidlib
from pathlib import Path

from fluxchat import messages as m
from fluxchat.envelope2 import open_any, version_of
from fluxchat.errors import EnvelopeError
from fluxchat.identity import load_identity
from fluxchat.mailer import receipt_uuid
from fluxchat.mailkeyring import MailKeyring
from fluxchat.mailkeys import MailKeySecrets, RecordCache, make_record
from fluxchat.node import Node
from fluxchat.store import Store
from fluxchat.wire_fields import ErrorCode as E
from tests.keys import TEST_PASSWORD, identity
from tests.lab import NodeTestCase, eventually


def state(node: Node, uuid: bytes) -> str:
    assert node.store is not None
    mail = node.store.get_outbox(uuid)
    return mail.state if mail else "missing"


def sent_version(node: Node, uuid: bytes) -> int:
    assert node.store is not None
    mail = node.store.get_outbox(uuid)
    assert mail is not None and mail.envelope is not None
    return version_of(mail.envelope, len(mail.envelope))


async def ipc(node: Node, cmd: str, **args: object) -> dict[str, object]:
    reply = await node.api.call(cmd, dict(args))   # the node's API, arguments checked as over IPC
    assert isinstance(reply, dict)
    return reply


class MailKeysNetworkTest(NodeTestCase):
    async def test_v2_mail_and_receipt_by_default(self) -> None:
        a, b = await self.chain(2)
        assert a.store is not None and b.store is not None
        mail = a.mailer.submit(b.identity.node_id, "pq", "forward secret")
        await eventually(lambda: state(a, mail.uuid) == "delivered")
        self.assertEqual(sent_version(a, mail.uuid), 2)
        self.assertEqual(b.store.inbox_envelope_version(mail.uuid), 2)
        self.assertEqual(sent_version(b, receipt_uuid(mail.uuid)), 2)   # the receipt too
        uuid_text = str(uuidlib.UUID(bytes=mail.uuid))
        self.assertEqual((await ipc(a, "status", uuid=uuid_text))["protection"],
                         "forward-secret-pq")
        self.assertEqual((await ipc(b, "read", uuid=uuid_text))["protection"],
                         "forward-secret-pq")
        # Each learned the other's record from the envelopes.
        self.assertIsNotNone(a.store.get_mail_key(b.identity.node_id))
        self.assertIsNotNone(b.store.get_mail_key(a.identity.node_id))

    async def test_v1_with_a_node_that_publishes_no_record(self) -> None:
        (a,) = await self.chain(1)
        b = (await self.start(1, [self.labs[0].address], mail_keys={"enabled": False})).node
        assert b is not None and b.store is not None and b.keyring.current is None
        mail = a.mailer.submit(b.identity.node_id, "old style", "rsa")
        await eventually(lambda: state(a, mail.uuid) == "delivered")
        self.assertEqual(sent_version(a, mail.uuid), 1)
        self.assertEqual(b.store.inbox_envelope_version(mail.uuid), 1)
        back = b.mailer.submit(a.identity.node_id, "reply", "also rsa")
        await eventually(lambda: state(b, back.uuid) == "delivered")
        self.assertEqual(sent_version(b, back.uuid), 1)
        uuid_text = str(uuidlib.UUID(bytes=mail.uuid))
        self.assertEqual((await ipc(a, "status", uuid=uuid_text))["protection"], "rsa")
        self.assertEqual((await ipc(b, "read", uuid=uuid_text))["protection"], "rsa")

    async def test_record_found_in_the_directory(self) -> None:
        a, _, c = await self.chain(3)
        # The last node published its record; the first finds it by lookup, hash-checked.
        assert c.keyring.current is not None
        found = await eventually(lambda: a.overlay.find_mail_key(c.identity.node_id))
        self.assertEqual(found, c.keyring.current.encode())
        record = await a.keyring.record_for(c.identity.node_id, c.identity.public_der)
        self.assertEqual(record, c.keyring.current)

    async def test_a_linked_recipient_is_asked_for_its_record_first(self) -> None:
        a, b = await self.chain(2)
        assert b.keyring.current is not None
        # b closed its join's links; once a has seen that, a links to b.
        await eventually(lambda: b.identity.node_id not in a.net.links)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        self.assertEqual(await a.keyring._ask_directly(b.identity.node_id),
                         b.keyring.current.encode())
        self.assertIsNone(await a.keyring._ask_directly(identity(7).node_id))   # not linked

    async def test_directory_refuses_foreign_expired_and_replayed_records(self) -> None:
        a, b = await self.chain(2)
        host, port = "127.0.0.1", b.port
        me = a.identity

        async def offer(data: bytes) -> m.Message:
            return await a.net.request(host, port, b.identity.node_id,
                                       lambda rid: m.StoreMailKey(rid, data))

        now = int(time.time())
        secrets = MailKeySecrets(bytes(range(128)))
        newer = make_record(me, secrets, now - 10, now + 3600)
        older = make_record(me, secrets, now - 20, now + 3600)
        expired = make_record(me, secrets, now - 7200, now - 3600)
        other = make_record(identity(5), secrets, now - 10, now + 3600)
        self.assertIsInstance(await offer(newer.encode()), m.Ok)
        for bad in (older, expired):
            reply = await offer(bad.encode())
            self.assertIsInstance(reply, m.Fail, bad)
        # A record naming A but signed by node 5.
        forged = newer.__class__(me.node_id, other.created_at, other.expires_at,
                                 other.sign_key, other.prekey, other.signature)
        self.assertIsInstance(await offer(forged.encode()), m.Fail)
        self.assertIsInstance(await offer(b"\x80"), m.Fail)
        # A valid record, but of another node than the one at the other end of the link.
        assert b.keyring.current is not None
        reply = await offer(b.keyring.current.encode())
        self.assertIsInstance(reply, m.Fail)
        self.assertEqual(reply.code, int(E.FORBIDDEN))   # type: ignore[union-attr]
        assert b.store is not None
        self.assertEqual(b.store.get_mail_key(me.node_id), newer.encode())

    async def test_rotation_publishes_a_new_record_and_old_prekeys_still_open(self) -> None:
        a, b = await self.chain(2)
        assert a.store is not None
        first = b.keyring.current
        assert first is not None
        mail = a.mailer.submit(b.identity.node_id, "before", "rotation")
        await eventually(lambda: state(a, mail.uuid) == "delivered")
        envelope = a.store.get_outbox(mail.uuid).envelope   # type: ignore[union-attr]
        later = time.time() + b.keyring.schedule.rotation + 5
        b.keyring.clock = lambda: later
        fresh = b.keyring.upkeep()
        assert fresh is not None and b.keyring.current == fresh
        self.assertNotEqual(fresh.prekey_id, first.prekey_id)
        self.assertIn(first.prekey_id, b.keyring.prekeys)   # kept until its erase time
        await b.keyring.publish()
        assert envelope is not None
        opened = await b.mailroom._open(envelope)   # sealed to the previous prekey
        self.assertEqual(opened[1].uuid, mail.uuid)

    async def test_mail_captured_in_transit_cannot_be_opened_after_its_prekey_was_erased(
            self) -> None:
        a, b = await self.chain(2)
        assert a.store is not None and b.store is not None
        record = b.keyring.current
        assert record is not None
        mail = a.mailer.submit(b.identity.node_id, "secret", "for now only")
        await eventually(lambda: state(a, mail.uuid) == "delivered")
        captured = a.store.get_outbox(mail.uuid).envelope   # type: ignore[union-attr]
        assert captured is not None and version_of(captured, len(captured)) == 2
        data_dir = b.config.data_dir
        wrapped = [w for k, _, w in b.store.own_mail_keys() if k == record.prekey_id][0]
        # Time passes beyond the record's life plus retention: the prekey is erased.
        later = b.keyring.schedule.erase_at(record) + 1
        b.keyring.clock = lambda: later
        b.keyring.upkeep()
        self.assertNotIn(record.prekey_id, b.keyring.prekeys)
        self.assertNotIn(record.prekey_id, [k for k, _, _ in b.store.own_mail_keys()])
        with self.assertRaises(EnvelopeError):
            await b.mailroom._open(captured)
        await self.labs[1].stop()
        # The thief holds the data directory, the RSA key and its password: still nothing.
        for path in data_dir.iterdir():
            if path.is_file():
                self.assertNotIn(wrapped, path.read_bytes(), path.name)
        thief = load_identity(data_dir, TEST_PASSWORD)
        store = Store.open(data_dir / "fluxchat.db")
        try:
            ring = MailKeyring(thief, store, a.overlay, b.config.mail_keys,
                               b.keyring.schedule.retention, clock=lambda: later)
            ring.load()
            self.assertNotIn(record.prekey_id, ring.prekeys)
            with self.assertRaises(EnvelopeError):
                open_any(captured, thief, ring.prekeys, RecordCache())
        finally:
            store.close()

    async def test_secrets_at_rest_are_wrapped_and_survive_a_restart(self) -> None:
        (b,) = await self.chain(1)
        assert b.store is not None and b.keyring.current is not None
        current = b.keyring.current
        secrets_row = b.store.own_mail_keys()[-1]
        signer = b.keyring.signer
        assert signer is not None
        seed = signer.signing_key.private_bytes_raw()
        db_bytes = b"".join(p.read_bytes() for p in Path(b.config.data_dir).iterdir()
                            if p.name.startswith("fluxchat.db"))
        self.assertNotIn(seed, db_bytes)
        self.assertIn(secrets_row[2], db_bytes)
        await self.labs[0].stop()
        again = await self.labs[0].start()
        self.assertEqual(again.keyring.current, current)
        self.assertIn(current.prekey_id, again.keyring.prekeys)
