"""Store: every table's methods on real SQLite files, migrations, file mode, WAL and crash safety."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
import unittest
from contextlib import closing
from pathlib import Path

from fluxchat.errors import StorageError
from fluxchat.sqldb import open_database
from fluxchat.store import InboxMail, OutboxMail, QuotaExceeded, Quotas, Store
from fluxchat.store_schema import SCHEMA_VERSION

SRC = Path(__file__).resolve().parent.parent / "src"
BIG = Quotas(per_recipient_bytes=10**6, per_peer_bytes=10**6, total_bytes=10**6)


def uid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def nid(n: int) -> bytes:
    return bytes([n]) * 32


def inbox_mail(n: int, received_at: int = 100, is_new: bool = True) -> InboxMail:
    return InboxMail(uid(n), nid(1), nid(2), f"s{n}", f"b{n}", 90, received_at, is_new)


def outbox_mail(n: int, expires_at: int = 1000, next_attempt_at: int = 0) -> OutboxMail:
    return OutboxMail(uid(n), nid(2), f"s{n}", f"b{n}", 100 + n, expires_at, next_attempt_at=next_attempt_at)


class StoreCase(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.path = Path(tmp.name) / "node.db"
        self.store = Store.open(self.path)
        self.addCleanup(self.store.close)


class OpenTest(StoreCase):
    def test_file_is_private_and_wal(self) -> None:
        self.store.add_contact("a", nid(1))
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        wal = self.path.with_name("node.db-wal")
        self.assertEqual(stat.S_IMODE(wal.stat().st_mode), 0o600)
        with closing(open_database(self.path, None)) as raw:
            self.assertEqual(raw.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            self.assertEqual(raw.execute("PRAGMA user_version").fetchone()[0], SCHEMA_VERSION)

    def test_reopen_keeps_data_and_version(self) -> None:
        self.store.add_contact("a", nid(1))
        self.store.close()
        again = Store.open(self.path)
        self.addCleanup(again.close)
        self.assertEqual(again.resolve_alias("a"), nid(1))

    def test_future_schema_refused(self) -> None:
        self.store.close()
        raw = open_database(self.path, None)
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        raw.close()
        with self.assertRaisesRegex(StorageError, "newer"):
            Store.open(self.path)

    def test_garbage_file_and_closed_store(self) -> None:
        bad = self.path.with_name("bad.db")
        bad.write_bytes(b"not a database" * 100)
        with self.assertRaises(StorageError):
            Store.open(bad)
        self.store.close()
        with self.assertRaises(StorageError):
            self.store.count_inbox()


class InboxTest(StoreCase):
    def test_add_list_read_delete(self) -> None:
        self.assertTrue(self.store.add_inbox(inbox_mail(1, received_at=100)))
        self.assertTrue(self.store.add_inbox(inbox_mail(2, received_at=200, is_new=False)))
        self.assertTrue(self.store.add_inbox(inbox_mail(3, received_at=300)))
        total, items = self.store.list_inbox(new_only=False, limit=2, offset=0)
        self.assertEqual((total, [m.uuid for m in items]), (3, [uid(3), uid(2)]))
        total, items = self.store.list_inbox(new_only=True, limit=10, offset=1)
        self.assertEqual((total, [m.uuid for m in items]), (2, [uid(1)]))
        self.assertEqual(self.store.read_inbox(uid(1)), inbox_mail(1, received_at=100))
        self.assertIsNone(self.store.read_inbox(uid(9)))
        self.assertEqual(self.store.count_inbox(), (3, 2))
        self.assertTrue(self.store.mark_read(uid(1)))
        self.assertFalse(self.store.read_inbox(uid(1)).is_new)
        self.assertEqual(self.store.count_inbox(), (3, 1))
        self.assertTrue(self.store.delete_inbox(uid(1)))
        self.assertFalse(self.store.delete_inbox(uid(1)))
        self.assertEqual(self.store.count_inbox(), (2, 1))

    def test_duplicates_dropped_even_after_delete(self) -> None:
        self.assertFalse(self.store.is_seen(uid(1)))
        self.assertTrue(self.store.add_inbox(inbox_mail(1)))
        self.assertTrue(self.store.is_seen(uid(1)))
        self.assertFalse(self.store.add_inbox(inbox_mail(1, received_at=500)))
        self.store.delete_inbox(uid(1))
        self.assertFalse(self.store.add_inbox(inbox_mail(1)))
        self.assertEqual(self.store.count_inbox(), (0, 0))

    def test_seen_forgetting_and_receipts(self) -> None:
        self.assertTrue(self.store.remember_seen(uid(5), created_at=10, now=50))
        self.assertFalse(self.store.remember_seen(uid(5), created_at=10, now=60))
        self.store.add_inbox(inbox_mail(1, received_at=100))
        self.store.add_inbox(inbox_mail(2, received_at=100))
        self.store.add_inbox(inbox_mail(3, received_at=200))
        self.store.delete_inbox(uid(2))   # remembered as seen at its arrival, 100
        self.store.delete_inbox(uid(3))   # at 200
        self.assertEqual(self.store.forget_seen_before(101), 2)
        self.assertFalse(self.store.is_seen(uid(5)))
        self.assertFalse(self.store.is_seen(uid(2)))
        self.assertTrue(self.store.is_seen(uid(3)))
        self.assertTrue(self.store.is_seen(uid(1)))  # still in the inbox, still a duplicate
        self.assertFalse(self.store.add_inbox(inbox_mail(1)))

    def test_malformed_uuid_refused(self) -> None:
        with self.assertRaises(StorageError):
            self.store.add_inbox(InboxMail(b"short", nid(1), nid(2), "s", "b", 1, 2))
        self.assertEqual(self.store.count_inbox(), (0, 0))


class OutboxTest(StoreCase):
    def test_add_and_state_changes(self) -> None:
        self.store.add_outbox(outbox_mail(1), now=100)
        self.store.set_outbox_state(uid(1), "stored", 110, detail="on 3 nodes", stored_on=3,
                                    next_attempt_at=170, envelope=b"env", attempted=True)
        self.store.set_outbox_state(uid(1), "failed", 120, reason="no key")
        mail = self.store.get_outbox(uid(1))
        assert mail is not None
        self.assertEqual((mail.state, mail.reason, mail.stored_on, mail.next_attempt_at),
                         ("failed", "no key", 3, 170))
        self.assertEqual((mail.envelope, mail.attempts, mail.updated_at), (b"env", 1, 120))
        self.assertEqual(self.store.outbox_history(uid(1)),
                         [(100, "queued", ""), (110, "stored", "on 3 nodes"), (120, "failed", "")])
        self.assertIsNone(self.store.get_outbox(uid(2)))

    def test_unknown_uuid_or_state_writes_nothing(self) -> None:
        self.assertFalse(self.store.set_outbox_state(uid(7), "stored", 110))
        self.store.add_outbox(outbox_mail(1), now=100)
        with self.assertRaisesRegex(StorageError, "unknown outbox state"):
            self.store.set_outbox_state(uid(1), "lost", 110)
        with self.assertRaises(StorageError):  # duplicate uuid: insert fails, no second history row
            self.store.add_outbox(outbox_mail(1), now=105)
        self.assertEqual(self.store.outbox_history(uid(1)), [(100, "queued", "")])
        self.assertEqual(self.store.outbox_history(uid(7)), [])

    def test_due_outbox(self) -> None:
        self.store.add_outbox(outbox_mail(1), now=100)  # queued, due at once
        self.store.add_outbox(outbox_mail(2, next_attempt_at=500), now=100)  # queued, backing off
        self.store.add_outbox(outbox_mail(3), now=100)
        self.store.set_outbox_state(uid(3), "stored", 100, next_attempt_at=150)
        self.store.add_outbox(outbox_mail(4), now=100)
        self.store.set_outbox_state(uid(4), "handed_over", 100, next_attempt_at=300)
        self.store.add_outbox(outbox_mail(5), now=100)
        self.store.set_outbox_state(uid(5), "delivered", 100)
        self.store.add_outbox(outbox_mail(6, expires_at=150), now=100)  # expired by 200
        due = self.store.due_outbox(now=200, limit=10)
        self.assertEqual([m.uuid for m in due], [uid(1), uid(3)])
        self.assertEqual(len(self.store.due_outbox(now=200, limit=1)), 1)

    def test_expire_list_count_delete(self) -> None:
        self.store.add_outbox(outbox_mail(1, expires_at=150), now=100)
        self.store.add_outbox(outbox_mail(2, expires_at=150), now=100)
        self.store.set_outbox_state(uid(2), "delivered", 120)
        self.store.add_outbox(outbox_mail(3, expires_at=900), now=100)
        self.assertEqual(self.store.expire_outbox(now=150), [uid(1)])
        self.assertEqual(self.store.expire_outbox(now=160), [])
        self.assertEqual(self.store.outbox_history(uid(1))[-1], (150, "expired", "retention time ended"))
        counts = self.store.count_outbox()
        self.assertEqual((counts["expired"], counts["delivered"], counts["queued"], counts["failed"]),
                         (1, 1, 1, 0))
        total, items = self.store.list_outbox(limit=2, offset=0)
        self.assertEqual((total, [m.uuid for m in items]), (3, [uid(3), uid(2)]))
        self.assertTrue(self.store.delete_outbox(uid(1)))
        self.assertFalse(self.store.delete_outbox(uid(1)))
        self.assertEqual(self.store.outbox_history(uid(1)), [])  # cascaded


class HeldTest(StoreCase):
    def hold(self, n: int, recipient: int = 2, peer: int = 3, size: int = 10,
             quotas: Quotas = BIG, expires_at: int = 1000, now: int = 100) -> str:
        return self.store.hold(uid(n), nid(recipient), nid(peer), expires_at, bytes([n]) * size, now, quotas)

    def test_store_duplicate_fetch(self) -> None:
        self.assertEqual(self.hold(1, now=100), "stored")
        self.assertEqual(self.hold(1, now=101), "duplicate")
        self.assertEqual(self.hold(2, now=102), "stored")
        self.assertEqual(self.hold(3, recipient=4, now=103), "stored")
        self.assertEqual(self.store.held_for(nid(2), limit=10),
                         [(uid(1), b"\x01" * 10), (uid(2), b"\x02" * 10)])
        self.assertEqual(self.store.held_for(nid(2), limit=1), [(uid(1), b"\x01" * 10)])
        self.assertEqual(self.store.held_stats(), (3, 30))
        page = self.store.held_page(after=0, limit=2)
        self.assertEqual([(u, r) for _, u, r in page], [(uid(1), nid(2)), (uid(2), nid(2))])
        self.store.delete_held(nid(2), [uid(2)])   # rows going away between pages skip nothing
        self.assertEqual([u for _, u, _ in self.store.held_page(after=page[-1][0], limit=2)], [uid(3)])
        self.assertEqual(self.store.held_envelope(uid(1)), b"\x01" * 10)
        self.assertIsNone(self.store.held_envelope(uid(2)))

    def test_quotas(self) -> None:
        cases = [
            (Quotas(15, 100, 100), dict(peer=9), "per recipient bytes"),
            (Quotas(100, 15, 100), dict(recipient=9), "per sender peer bytes"),
            (Quotas(100, 100, 15), dict(recipient=9, peer=9), "total bytes"),
        ]
        self.assertEqual(self.hold(1), "stored")  # 10 bytes for recipient 2 from peer 3
        for n, (quotas, who, name) in enumerate(cases, start=10):
            with self.subTest(name), self.assertRaisesRegex(QuotaExceeded, name):
                self.hold(n, quotas=quotas, **{"recipient": 2, "peer": 3, **who})
        self.assertEqual(self.hold(20, quotas=Quotas(20, 20, 20)), "stored")  # exactly at the limit
        self.assertEqual(self.store.held_stats(), (2, 20))

    def test_one_sender_cannot_fill_a_recipient_quota(self) -> None:
        quotas = Quotas(per_recipient_bytes=100, per_peer_bytes=1000, total_bytes=1000,
                        per_pair_bytes=40)
        for n in range(1, 5):
            self.hold(n, peer=3, quotas=quotas)
        with self.assertRaisesRegex(QuotaExceeded, "per sender and recipient bytes"):
            self.hold(5, peer=3, quotas=quotas)
        self.assertEqual(self.store.held_stats(), (4, 40))

    def test_full_recipient_quota_evicts_the_heaviest_sender_fairly(self) -> None:
        quotas = Quotas(per_recipient_bytes=100, per_peer_bytes=1000, total_bytes=1000,
                        per_pair_bytes=40)
        n = 0
        for peer in (5, 6):              # two attacker identities at their pair cap
            for _ in range(4):
                n += 1
                self.hold(n, peer=peer, quotas=quotas)
        self.hold(20, peer=7, size=20, quotas=quotas)   # 100 of 100 bytes now
        # An honest sender gets in by pushing out the oldest envelope of the heaviest peer.
        self.assertEqual(self.hold(30, peer=8, quotas=quotas), "stored")
        self.assertIsNone(self.store.held_envelope(uid(1)))
        self.assertEqual(self.store.held_stats(), (9, 100))
        # Peer 7 would then hold 30, and 5 and 6 hold 30 and 40: 6 still gives way.
        self.assertEqual(self.hold(31, peer=7, quotas=quotas), "stored")
        self.assertIsNone(self.store.held_envelope(uid(5)))
        # Nobody may push out a sender holding no more than it would itself.
        with self.assertRaisesRegex(QuotaExceeded, "per recipient bytes"):
            self.hold(32, peer=7, quotas=quotas)
        self.assertEqual(self.store.held_stats()[1], 100)

    def test_full_total_quota_evicts_the_heaviest_peer(self) -> None:
        quotas = Quotas(per_recipient_bytes=1000, per_peer_bytes=1000, total_bytes=50)
        for n in range(1, 6):
            self.hold(n, recipient=n + 10, peer=3, quotas=quotas)
        self.assertEqual(self.hold(9, recipient=30, peer=4, quotas=quotas), "stored")
        self.assertEqual(self.store.held_stats(), (5, 50))
        self.assertIsNone(self.store.held_envelope(uid(1)))

    def test_running_totals_follow_every_change(self) -> None:
        for n in range(1, 30):
            self.hold(n, recipient=n % 3, peer=n % 4, size=n, expires_at=100 + n * 10, now=50)
        self.store.delete_held(nid(1), [uid(n) for n in range(0, 30, 2)])
        self.store.expire_held(now=250)
        with closing(open_database(self.path, None)) as db:
            expected = db.execute("SELECT count(*), coalesce(sum(size), 0) FROM held").fetchone()
            by_pair = db.execute("SELECT recipient, sender_peer, sum(size) FROM held "
                                 "GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
            pairs = db.execute("SELECT * FROM held_pair ORDER BY 1, 2").fetchall()
        self.assertEqual(self.store.held_stats(), tuple(expected))
        self.assertEqual(pairs, by_pair)

    def test_migration_to_running_totals_counts_what_is_held(self) -> None:
        from fluxchat.store_schema import MIGRATIONS, _apply
        path = self.path.with_name("v1.db")
        with closing(open_database(path, None)) as raw:
            for statement in MIGRATIONS[0]:
                raw.execute(statement)
            raw.execute("PRAGMA user_version = 1")
            raw.execute("INSERT INTO held VALUES (?, ?, ?, 1000, 7, ?, 1)", (uid(1), nid(2), nid(3), b"x" * 7))
            raw.execute("INSERT INTO held VALUES (?, ?, ?, 1000, 5, ?, 2)", (uid(2), nid(2), nid(4), b"y" * 5))
            _apply(raw, 2)
        store = Store.open(path)
        self.addCleanup(store.close)
        self.assertEqual(store.held_stats(), (2, 12))
        quotas = Quotas(per_recipient_bytes=22, per_peer_bytes=100, total_bytes=100)
        self.assertEqual(store.hold(uid(3), nid(2), nid(5), 1000, b"z" * 10, 50, quotas), "stored")
        with self.assertRaises(QuotaExceeded):
            store.hold(uid(4), nid(2), nid(5), 1000, b"z", 50, quotas)

    def test_expired_envelopes_free_quota(self) -> None:
        self.hold(1, expires_at=150)
        self.assertEqual(self.hold(2, quotas=Quotas(10, 10, 10), now=150), "stored")
        self.assertEqual(self.store.held_stats(), (1, 10))

    def test_delete_only_own_and_expire(self) -> None:
        self.hold(1, recipient=2)
        self.hold(2, recipient=4, expires_at=200)
        self.assertEqual(self.store.delete_held(nid(4), [uid(1), uid(2)]), 1)
        self.assertEqual(self.store.held_for(nid(2), 10), [(uid(1), b"\x01" * 10)])
        self.hold(3, recipient=4, expires_at=200)
        self.assertEqual(self.store.expire_held(now=199), 0)
        self.assertEqual(self.store.expire_held(now=200), 1)
        self.assertEqual(self.store.held_stats(), (1, 10))


class DirectoryTest(StoreCase):
    def test_contacts(self) -> None:
        self.store.add_contact("bob", nid(1))
        self.store.add_contact("ann", nid(2))
        self.store.add_contact("bob", nid(3))  # replaces
        self.assertEqual(self.store.contacts(), [("ann", nid(2)), ("bob", nid(3))])
        self.assertEqual(self.store.resolve_alias("bob"), nid(3))
        self.assertIsNone(self.store.resolve_alias("eve"))
        self.assertEqual(self.store.alias_of(nid(2)), "ann")
        self.assertIsNone(self.store.alias_of(nid(1)))
        self.assertTrue(self.store.remove_contact("ann"))
        self.assertFalse(self.store.remove_contact("ann"))

    def test_keys(self) -> None:
        self.store.put_key(nid(1), b"der1", now=100, published_by_owner=True)
        self.store.put_key(nid(1), b"der1", now=300)  # refreshed from a lookup
        self.store.put_key(nid(2), b"der2", now=100)
        self.assertEqual((self.store.get_key(nid(1)), self.store.get_key(nid(9))), (b"der1", None))
        self.assertEqual(self.store.count_keys(), 2)
        self.assertEqual(self.store.expire_keys(cutoff=200), 1)
        self.assertIsNone(self.store.get_key(nid(2)))

    def test_keys_of_contacts_and_pending_recipients_do_not_expire(self) -> None:
        self.store.put_key(nid(1), b"der1", now=100)
        self.store.put_key(nid(2), b"der2", now=100)
        self.store.put_key(nid(3), b"der3", now=100)
        self.store.add_contact("ann", nid(1))
        self.store.add_outbox(outbox_mail(1), now=100)   # to nid(2), queued
        self.assertEqual(self.store.expire_keys(cutoff=200), 1)
        self.assertEqual(self.store.count_keys(), 2)

    def test_routing_replaced_atomically(self) -> None:
        old = [(nid(1), "10.0.0.1", 4000, 50), (nid(2), "10.0.0.2", 4001, 20)]
        self.store.save_routing(old)
        self.assertEqual(self.store.load_routing(), [old[1], old[0]])  # least recently seen first
        bad = [(nid(3), "h", 1, 1), (nid(3), "h", 2, 2)]  # duplicate id fails after the DELETE ran
        with self.assertRaises(StorageError):
            self.store.save_routing(bad)
        self.assertEqual(self.store.load_routing(), [old[1], old[0]])
        self.store.save_routing([])
        self.assertEqual(self.store.load_routing(), [])


CHILD = """
import sys, time
from pathlib import Path
from fluxchat.store import InboxMail, Store
store = Store.open(Path(sys.argv[1]))
store.add_inbox(InboxMail(bytes(16), bytes(32), bytes([1]) * 32, "hi", "body", 1, 2))
print("committed", flush=True)
time.sleep(30)
"""


class CrashTest(StoreCase):
    def test_commit_survives_sigkill(self) -> None:
        self.store.close()
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(self.path)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(child.stdout.readline().strip(), "committed")
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        self.assertEqual(child.returncode, -signal.SIGKILL)
        again = Store.open(self.path)
        self.addCleanup(again.close)
        mail = again.read_inbox(bytes(16))
        self.assertIsNotNone(mail)
        self.assertTrue(again.is_seen(bytes(16)))


if __name__ == "__main__":
    unittest.main()
