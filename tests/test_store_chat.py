"""Store: conversations, reply references, display names, uuid prefixes, observers, the v1→v2 migration."""

from __future__ import annotations

import tempfile
import unittest
from contextlib import closing
from pathlib import Path

from fluxchat.sqldb import open_database
from fluxchat.store import InboxMail, OutboxMail, Store
from fluxchat.store_schema import MIGRATIONS

from .test_store import StoreCase, nid, uid


class ConversationTest(StoreCase):
    def fill(self) -> None:
        # Peer 1 writes to us at 100 and 300; we answer at 200; peer 3 writes at 250.
        self.store.add_inbox(InboxMail(uid(1), nid(1), nid(9), "hi", "b1", 90, 100, sender_name="Ann"))
        self.store.add_outbox(OutboxMail(uid(2), nid(1), "Re: hi", "b2", 200, 999, ref=uid(1)), 200)
        self.store.add_inbox(InboxMail(uid(3), nid(3), nid(9), "yo", "b3", 240, 250))
        self.store.add_inbox(InboxMail(uid(4), nid(1), nid(9), "again", "b4", 290, 300, ref=uid(2)))

    def test_conversation_merges_both_directions_in_order(self) -> None:
        self.fill()
        mails = self.store.conversation(nid(1), 10)
        self.assertEqual([m.uuid for m in mails], [uid(1), uid(2), uid(4)])
        self.assertIsInstance(mails[1], OutboxMail)
        self.assertEqual(mails[1].ref, uid(1))
        self.assertEqual([m.uuid for m in self.store.conversation(nid(1), 2)], [uid(2), uid(4)])
        self.assertEqual(self.store.conversation(nid(7), 10), [])

    def test_conversations_count_unread_and_sort_by_activity(self) -> None:
        self.fill()
        self.assertEqual(self.store.conversations(10), [(nid(1), 300, 2, 3), (nid(3), 250, 1, 1)])
        self.assertEqual(self.store.mark_conversation_read(nid(1)), 2)
        self.assertEqual(self.store.conversations(1), [(nid(1), 300, 0, 3)])

    def test_read_state_both_ways_and_latest_name(self) -> None:
        self.fill()
        self.assertTrue(self.store.mark_read(uid(3)))
        self.assertFalse(self.store.read_inbox(uid(3)).is_new)  # type: ignore[union-attr]
        self.assertTrue(self.store.mark_read(uid(3), read=False))
        self.assertTrue(self.store.read_inbox(uid(3)).is_new)  # type: ignore[union-attr]
        self.assertEqual(self.store.latest_name(nid(1)), "Ann")
        self.assertEqual(self.store.latest_name(nid(3)), "")

    def test_uuid_ranges_cover_inbox_and_sent_mail_only(self) -> None:
        self.fill()
        receipt = OutboxMail(uid(5), nid(1), "", "", 1, 999, kind="receipt")
        self.store.add_outbox(receipt, 1)
        self.assertEqual(sorted(self.store.uuids_between(uid(0), uid(9), 10)), [uid(n) for n in (1, 2, 3, 4)])
        self.assertEqual(self.store.uuids_between(uid(2), uid(2), 10), [uid(2)])
        self.assertEqual(len(self.store.uuids_between(uid(0), uid(9), 2)), 2)

    def test_observers_hear_committed_changes(self) -> None:
        heard: list[tuple[str, bytes]] = []
        self.store.observers.append(lambda topic, uuid: heard.append((topic, uuid)))
        self.fill()
        self.store.add_inbox(InboxMail(uid(1), nid(1), nid(9), "dup", "", 90, 100))  # a duplicate: silent
        self.store.set_outbox_state(uid(2), "delivered", 210)
        self.assertEqual(self.store.expire_outbox(10**6), [])
        self.assertEqual(heard, [("inbox", uid(1)), ("outbox", uid(2)), ("inbox", uid(3)),
                                 ("inbox", uid(4)), ("outbox", uid(2))])


class MigrationTest(unittest.TestCase):
    def test_a_first_release_database_keeps_its_mail(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "old.db"
            with closing(open_database(path, None)) as raw:
                for statement in MIGRATIONS[0]:
                    raw.execute(statement)
                raw.execute("PRAGMA user_version = 1")
                raw.execute("INSERT INTO inbox VALUES (?, ?, ?, 's', 'b', 1, 2, 1)", (uid(1), nid(1), nid(2)))
            store = Store.open(path)
            self.addCleanup(store.close)
            mail = store.read_inbox(uid(1))
            assert mail is not None
            self.assertEqual((mail.subject, mail.ref, mail.sender_name), ("s", None, ""))
            self.assertEqual(store.conversations(5), [(nid(1), 2, 1, 1)])


if __name__ == "__main__":
    unittest.main()
