"""The outbox state machine: the table, the store enforcing it, the v1 → v2 schema migration,
resend, and mail that waits for its recipient's key instead of failing (real nodes on loopback)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import unittest
import uuid as uuidlib
from contextlib import closing
from pathlib import Path

from fluxchat import messages as m
from fluxchat.envelope import MailContent, seal
from fluxchat.errors import IpcError
from fluxchat.ipc_client import IpcClient, read_token_file
from fluxchat.mail_rules import MAX_SUBJECT_CHARS, body_problem, subject_problem
from fluxchat.mailer import receipt_uuid
from fluxchat.outbox_states import FINAL, PENDING, TRANSITIONS, OutboxState, allowed
from fluxchat.sqldb import dbapi, open_database
from fluxchat.store import OutboxMail, Store
from fluxchat.store_schema import MIGRATIONS, SCHEMA_VERSION, migrate
from tests.keys import identity
from tests.lab import NodeTestCase, eventually

S = OutboxState


def uid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def mail(n: int, expires_at: int = 1000) -> OutboxMail:
    return OutboxMail(uid(n), bytes([2]) * 32, f"s{n}", f"b{n}", 100, expires_at)


class TableTest(unittest.TestCase):
    def test_every_state_has_a_row_and_delivered_is_final(self) -> None:
        self.assertEqual(set(TRANSITIONS), set(OutboxState))
        self.assertEqual(PENDING | FINAL, set(OutboxState))
        self.assertEqual(TRANSITIONS[S.DELIVERED], frozenset())
        for state in OutboxState:
            self.assertFalse(allowed(S.DELIVERED, state))

    def test_only_resend_or_a_late_receipt_leave_expired_and_failed(self) -> None:
        for final in (S.EXPIRED, S.FAILED):
            moves = {state for state in OutboxState if allowed(final, state)}
            self.assertEqual(moves, {S.QUEUED, S.DELIVERED})

    def test_pending_states_may_wait_for_a_key_and_unknown_names_never_move(self) -> None:
        for state in PENDING:
            self.assertTrue(allowed(state, S.WAITING_FOR_KEY))
            self.assertTrue(allowed(state, S.EXPIRED))
        self.assertFalse(allowed("queued", "lost"))
        self.assertFalse(allowed("lost", "queued"))

    def test_limits_in_one_place(self) -> None:
        self.assertIsNone(subject_problem("s" * MAX_SUBJECT_CHARS))
        self.assertIn("at most 255", subject_problem("s" * 256) or "")
        self.assertIsNone(body_problem("é" * 5, 10))
        self.assertIn("11 bytes", body_problem("é" * 5 + "x", 10) or "")


class StoreTransitionsTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.path = Path(self._tmp.name) / "db"
        self.store = Store.open(self.path)

    def tearDown(self) -> None:
        self.store.close()
        self._tmp.cleanup()

    def test_a_delivered_mail_is_not_overwritten(self) -> None:
        self.store.add_outbox(mail(1), 100)
        self.assertTrue(self.store.set_outbox_state(uid(1), "delivered", 110))
        self.assertFalse(self.store.set_outbox_state(uid(1), "stored", 120, stored_on=3))
        got = self.store.get_outbox(uid(1))
        assert got is not None
        self.assertEqual((got.state, got.stored_on), ("delivered", 0))
        self.assertEqual([s for _, s, _ in self.store.outbox_history(uid(1))], ["queued", "delivered"])

    def test_hurry_makes_pending_mail_due(self) -> None:
        for n in (1, 2, 3):
            self.store.add_outbox(mail(n), 100)
        self.store.set_outbox_state(uid(1), "waiting_for_key", 100, next_attempt_at=900)
        self.store.set_outbox_state(uid(2), "stored", 100, next_attempt_at=900)
        self.store.set_outbox_state(uid(3), "delivered", 100, next_attempt_at=900)
        self.assertEqual(self.store.due_outbox(200, 10), [])
        self.assertEqual(self.store.hurry_outbox(states=frozenset({S.WAITING_FOR_KEY})), 1)
        self.assertEqual([m.uuid for m in self.store.due_outbox(200, 10)], [uid(1)])
        self.assertEqual(self.store.hurry_outbox(bytes([2]) * 32), 1)   # the stored one; not delivered
        self.assertEqual(sorted(m.uuid for m in self.store.due_outbox(200, 10)), [uid(1), uid(2)])
        self.assertEqual(self.store.hurry_outbox(bytes([9]) * 32), 0)

    def test_resend_only_failed_or_expired_mail_and_date_it_anew(self) -> None:
        self.store.add_outbox(mail(1, expires_at=150), 100)
        self.store.set_outbox_state(uid(1), "stored", 110, envelope=b"old", attempted=True, stored_on=2)
        self.assertFalse(self.store.resend_outbox(uid(1), 120, 2000))   # still on its way
        self.store.expire_outbox(150)
        self.assertTrue(self.store.resend_outbox(uid(1), 160, 2000))
        got = self.store.get_outbox(uid(1))
        assert got is not None
        self.assertEqual((got.state, got.envelope, got.attempts, got.stored_on, got.created_at, got.expires_at),
                         ("queued", None, 0, 0, 160, 2000))
        self.assertEqual(self.store.outbox_history(uid(1))[-1], (160, "queued", "resent by the user"))
        self.assertEqual([m.uuid for m in self.store.due_outbox(170, 10)], [uid(1)])
        self.assertFalse(self.store.resend_outbox(uid(9), 160, 2000))

    def test_count_has_every_state(self) -> None:
        self.assertEqual(set(self.store.count_outbox()), {str(state) for state in OutboxState})


class MigrationTest(unittest.TestCase):
    def test_v1_outbox_and_history_survive_and_accept_the_new_state(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "db"
            with closing(open_database(path, None)) as raw:
                raw.execute("PRAGMA foreign_keys = ON")
                for statement in MIGRATIONS[0]:
                    raw.execute(statement)
                raw.execute("PRAGMA user_version = 1")
                raw.execute("INSERT INTO outbox (uuid, recipient, subject, body, created_at, expires_at, "
                            "state, updated_at, envelope) VALUES (?, ?, 's', 'b', 1, 99, 'stored', 5, "
                            "x'8282')", (uid(1), bytes([2]) * 32))
                raw.execute("INSERT INTO outbox_history (uuid, at, state, detail) VALUES (?, 1, 'queued', '')",
                            (uid(1),))
                raw.execute("INSERT INTO outbox_history (uuid, at, state, detail) VALUES (?, 5, 'stored', 'x')",
                            (uid(1),))
                with self.assertRaises(dbapi.IntegrityError):   # v1 knows no waiting_for_key
                    raw.execute("UPDATE outbox SET state = 'waiting_for_key'")
                self.assertEqual(migrate(raw), 1)
                self.assertEqual(raw.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)
                self.assertEqual(raw.execute("PRAGMA foreign_key_check").fetchall(), [])
            store = Store.open(path)
            try:
                self.assertEqual(store.outbox_history(uid(1)), [(1, "queued", ""), (5, "stored", "x")])
                mail = store.get_outbox(uid(1))   # its envelope moved to a table of its own
                assert mail is not None
                self.assertEqual(mail.envelope, b"\x82\x82")
                self.assertTrue(store.set_outbox_state(uid(1), "waiting_for_key", 6))
                self.assertEqual(len(store.outbox_history(uid(1))), 3)
                self.assertTrue(store.delete_outbox(uid(1)))   # the history still cascades
                self.assertEqual(store.outbox_history(uid(1)), [])
                self.assertEqual(store._rows("SELECT count(*) FROM outbox_envelopes"), [(0,)])
            finally:
                store.close()


class WaitingForKeyTest(NodeTestCase):
    async def test_mail_waits_for_an_unknown_key_and_goes_when_the_recipient_links(self) -> None:
        (a,) = await self.chain(1)
        absent = identity(1).node_id   # a friend who has not started a node yet
        sent = a.mailer.submit(absent, "hello", "are you there?")
        assert a.store is not None
        store = a.store
        await eventually(lambda: (got := store.get_outbox(sent.uuid)) is not None and got.attempts >= 2,
                         timeout=30)
        waiting = store.get_outbox(sent.uuid)
        assert waiting is not None
        self.assertEqual(waiting.state, "waiting_for_key")
        self.assertGreater(waiting.next_attempt_at, int(a.clock()))   # backing off, not failed
        # The friend starts and links to us: the mail goes now, not after the backoff.
        await self.start(1, [self.labs[0].address])
        await eventually(lambda: (got := store.get_outbox(sent.uuid)) is not None
                         and got.state == "delivered", timeout=10)

    async def test_a_receipt_lost_in_a_crash_is_written_when_the_mail_comes_again(self) -> None:
        a, b = await self.chain(2)
        assert b.store is not None
        now = int(a.clock())
        content = MailContent("mail", os.urandom(16), a.identity.node_id, b.identity.node_id, now, "s", "b", b"")
        envelope = seal(content, a.identity, b.identity.public_der, now + 3600, os.urandom(32), os.urandom(12))
        link = await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        self.assertIsInstance(await link.request(lambda rid: m.Deliver(rid, envelope)), m.Ok)
        rid = receipt_uuid(content.uuid)
        store = b.store
        await eventually(lambda: store.get_outbox(rid))   # written right after the Ok
        b.store.delete_outbox(rid)   # as if killed between the inbox commit and the receipt's
        self.assertIsInstance(await link.request(lambda rid: m.Deliver(rid, envelope)), m.Ok)
        await eventually(lambda: store.get_outbox(rid))
        self.assertEqual(len(b.store.list_inbox(False, 10, 0)[1]), 1)

    async def test_resend_through_the_local_api(self) -> None:
        (a,) = await self.chain(1)
        assert a.store is not None
        sent = a.mailer.submit(identity(1).node_id, "s", "b")
        now = int(a.clock())
        a.store.set_outbox_state(sent.uuid, "failed", now, reason="test")
        uuid = str(uuidlib.UUID(bytes=sent.uuid))
        token = read_token_file(a.config.data_dir)

        def resend() -> object:   # the client blocks: run it off the node's event loop
            with IpcClient("127.0.0.1", a.ipc_port, token) as client:
                return client.call("resend", {"uuid": uuid})

        self.assertEqual(await asyncio.to_thread(resend), {"uuid": uuid, "state": "queued"})
        with self.assertRaisesRegex(IpcError, "failed or expired"):
            await asyncio.to_thread(resend)
        got = a.store.get_outbox(sent.uuid)
        assert got is not None
        self.assertIn(got.state, {"queued", "waiting_for_key"})


if __name__ == "__main__":
    unittest.main()
