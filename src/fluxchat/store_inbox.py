"""The inbox and the uuids we have seen (duplicate and replay detection).

The writes are functions of an open transaction (`insert_inbox`, `insert_seen`), so the
methods below and a group commit (store_batch) run the very same statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .records import record
from .sqldb import dbapi
from .store_base import StoreBase


@record
class InboxMail:
    uuid: bytes
    sender: bytes
    recipient: bytes
    subject: str
    body: str
    created_at: int
    received_at: int
    is_new: bool = True
    ref: bytes | None = None  # the uuid of the mail this one replies to
    sender_name: str = ""     # the display name the sender signed: a hint, not an identity


# A uuid is seen if it is in `seen` or in the inbox. A mail in the inbox has no `seen` row: that
# row would cost its commit three more b-tree pages (the table and its two indexes), each one
# encrypted and authenticated, on the path of every mail received. Deleting the mail writes it
# (delete_inbox), dated as the arrival was, so forget_seen_before treats it the same either way.
SEEN_SQL = ("SELECT EXISTS (SELECT 1 FROM seen WHERE uuid = ?1) "
            "OR EXISTS (SELECT 1 FROM inbox WHERE uuid = ?1)")
INBOX_COLS = "uuid, sender, recipient, subject, body, created_at, received_at, is_new, ref, sender_name"
# One statement that is also the check that the uuid was never seen: NOT EXISTS for a `seen`
# row, the primary key's DO NOTHING for a mail already in the inbox. Being a single statement,
# it is atomic on its own (a failed constraint undoes just this statement), so a batch of
# arrivals needs no savepoint around it (store_batch).
_INSERT_INBOX = (f"INSERT INTO inbox ({INBOX_COLS}, envelope_version) "
                 "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 "
                 "WHERE NOT EXISTS (SELECT 1 FROM seen WHERE uuid = ?1) "
                 "ON CONFLICT (uuid) DO NOTHING")


def inbox_row(row: Sequence[Any]) -> InboxMail:
    uuid, sender, recipient, subject, body, created_at, received_at, is_new, ref, name = row
    return InboxMail(uuid, sender, recipient, subject, body, created_at, received_at,
                     bool(is_new), ref, name)


def seen_in(db: dbapi.Connection, uuid: bytes) -> bool:
    return bool(db.execute(SEEN_SQL, (uuid,)).fetchone()[0])


def insert_seen(db: dbapi.Connection, uuid: bytes, created_at: int, now: int) -> bool:
    """Within the caller's transaction: record a uuid; False if it was already seen."""
    # OR IGNORE: one statement that is also the check (a uuid only in the inbox is checked
    # by the caller where it matters, see insert_inbox).
    return db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?, ?)",
                      (uuid, created_at, now)).rowcount > 0


def insert_inbox(db: dbapi.Connection, mail: InboxMail, envelope_version: int) -> bool:
    """Within the caller's transaction: store a received mail; False (nothing written) if its
    uuid was already seen. One statement (see _INSERT_INBOX)."""
    return db.execute(_INSERT_INBOX, (mail.uuid, mail.sender, mail.recipient, mail.subject,
                                      mail.body, mail.created_at, mail.received_at,
                                      int(mail.is_new), mail.ref, mail.sender_name,
                                      envelope_version)).rowcount > 0
    # ... and seen as long as it stays in the inbox (SEEN_SQL)


class InboxStore(StoreBase):
    def add_inbox(self, mail: InboxMail, envelope_version: int = 1) -> bool:
        """Store a received mail; False (and nothing written) if its uuid was already seen.
        `envelope_version` says how it was protected (1: RSA, 2: mail keys)."""
        with self._tx() as db:
            added = insert_inbox(db, mail, envelope_version)
        if added:
            self._changed("inbox", mail.uuid)
        return added

    def list_inbox(self, new_only: bool, limit: int, offset: int) -> tuple[int, list[InboxMail]]:
        where = "WHERE is_new = 1" if new_only else ""
        total = self._value(f"SELECT count(*) FROM inbox {where}")
        rows = self._rows(
            f"SELECT {INBOX_COLS} FROM inbox {where} "
            "ORDER BY received_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return int(total), [inbox_row(r) for r in rows]

    def read_inbox(self, uuid: bytes) -> InboxMail | None:
        rows = self._rows(f"SELECT {INBOX_COLS} FROM inbox WHERE uuid = ?", (uuid,))
        return inbox_row(rows[0]) if rows else None

    def inbox_envelope_version(self, uuid: bytes) -> int | None:
        value = self._value("SELECT envelope_version FROM inbox WHERE uuid = ?", (uuid,))
        return None if value is None else int(value)

    def mark_read(self, uuid: bytes, read: bool = True) -> bool:
        with self._tx() as db:
            sql = "UPDATE inbox SET is_new = ? WHERE uuid = ?"
            return db.execute(sql, (int(not read), uuid)).rowcount > 0

    def delete_inbox(self, uuid: bytes) -> bool:
        # The uuid moves to `seen` (see SEEN_SQL), so a replay of a deleted mail is still dropped.
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO seen SELECT uuid, created_at, received_at FROM inbox "
                       "WHERE uuid = ?", (uuid,))
            return db.execute("DELETE FROM inbox WHERE uuid = ?", (uuid,)).rowcount > 0

    def count_inbox(self) -> tuple[int, int]:
        row = self._rows("SELECT count(*), coalesce(sum(is_new), 0) FROM inbox")[0]
        return int(row[0]), int(row[1])

    def mark_conversation_read(self, peer: bytes) -> int:
        with self._tx() as db:
            return db.execute("UPDATE inbox SET is_new = 0 WHERE sender = ? AND is_new = 1",
                              (peer,)).rowcount

    def latest_name(self, peer: bytes) -> str:
        """The display name `peer` signed most recently, or ""."""
        name = self._value("SELECT sender_name FROM inbox WHERE sender = ? AND sender_name != '' "
                           "ORDER BY received_at DESC LIMIT 1", (peer,))
        return str(name or "")

    # --- seen uuids ----------------------------------------------------------------------------

    def is_seen(self, uuid: bytes) -> bool:
        return bool(self._value(SEEN_SQL, (uuid,)))

    def remember_seen(self, uuid: bytes, created_at: int, now: int) -> bool:
        """Record a uuid (e.g. of a receipt) without an inbox row; False if it was already seen."""
        with self._tx() as db:
            if seen_in(db, uuid):
                return False
            return insert_seen(db, uuid, created_at, now)

    def forget_seen_before(self, cutoff: int) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM seen WHERE seen_at < ?", (cutoff,)).rowcount
