"""The node's SQLite database: inbox, outbox, envelopes held for others, seen uuids, contacts, keys, routing.

An adapter: it does SQLite I/O but reads no clock; callers pass `now` (unix seconds). Every dbapi.Error
becomes a StorageError here. Every state change runs in one `BEGIN IMMEDIATE … COMMIT` transaction, so a
crash never leaves half a change behind.

Durability (see store_schema.connect): WAL with `synchronous=NORMAL`, so a method that returned has its
commit in the WAL file and survives the process being killed the next instant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import StorageError
from .held import Held, QuotaExceeded, Quotas, hold, usage
from .outbox_states import PENDING, RESENDABLE, OutboxState, allowed, parse_state
from .sqldb import dbapi
from .store_schema import connect, fail, transaction

__all__ = ["InboxMail", "OutboxMail", "QuotaExceeded", "Quotas", "RoutingEntry", "Store"]

_PENDING = tuple(sorted(PENDING))  # outbox states that still need work
_IN_PENDING = ", ".join("?" * len(_PENDING))

RoutingEntry = tuple[bytes, str, int, int]  # (node_id, host, port, last_seen)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class OutboxMail:
    uuid: bytes
    recipient: bytes
    subject: str
    body: str
    created_at: int
    expires_at: int
    state: str = OutboxState.QUEUED
    reason: str | None = None
    envelope: bytes | None = None
    attempts: int = 0
    next_attempt_at: int = 0  # due once this is <= now; 0 means "at once"
    stored_on: int = 0  # how many storing nodes accepted the envelope
    updated_at: int = 0
    kind: str = "mail"  # "receipt": our signed receipt on its way back; hidden from listings
    ref: bytes | None = None  # the uuid of the mail this one replies to


# Inbox counts too: forget_seen_before may drop a uuid whose mail is still in the inbox.
_SEEN_SQL = "SELECT EXISTS (SELECT 1 FROM seen WHERE uuid = ?) OR EXISTS (SELECT 1 FROM inbox WHERE uuid = ?)"
_INBOX_COLS = "uuid, sender, recipient, subject, body, created_at, received_at, is_new, ref, sender_name"
_OUTBOX_COLS = (
    "uuid, recipient, subject, body, created_at, expires_at, state, reason, envelope, "
    "attempts, next_attempt_at, stored_on, updated_at, kind, ref"
)
# One row per peer we exchanged mail with: (peer, last activity, unread, total).
_CONVERSATIONS_SQL = (
    "SELECT peer, max(at), sum(unread), count(*) FROM ("
    " SELECT sender AS peer, received_at AS at, is_new AS unread FROM inbox"
    " UNION ALL SELECT recipient, created_at, 0 FROM outbox WHERE kind = 'mail')"
    " GROUP BY peer ORDER BY max(at) DESC LIMIT ?"
)

# Told (topic "inbox" or "outbox", uuid) after each committed change to a mail.
StoreObserver = Callable[[str, bytes], None]


def _inbox(row: Sequence[Any]) -> InboxMail:
    uuid, sender, recipient, subject, body, created_at, received_at, is_new, ref, name = row
    return InboxMail(uuid, sender, recipient, subject, body, created_at, received_at,
                     bool(is_new), ref, name)


def _outbox(row: Sequence[Any]) -> OutboxMail:
    return OutboxMail(*row)


class Store:
    """One SQLite database per node. Not thread-safe: use it from the event loop thread only."""

    def __init__(self, db: dbapi.Connection) -> None:
        self._db = db
        self.observers: list[StoreObserver] = []
        self._closed = False

    @classmethod
    def open(cls, path: Path, key: bytes | None = None) -> Store:
        """Open (creating it 0600 if needed) and migrate the database at `path`, encrypted with the
        32-byte storage `key` (see vault.py); without one the file is plain SQLite (tests only)."""
        return cls(connect(Path(path), key))

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and empty it, so pages that deleted rows
        left in the log do not linger (secure_delete then has zeroed them in the database)."""
        self._rows("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                self._db.close()
        except dbapi.Error as exc:
            raise fail(exc) from exc

    # --- plumbing -------------------------------------------------------------------------------

    def _tx(self) -> AbstractContextManager[dbapi.Connection]:
        return transaction(self._db)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, params).fetchall()
        except dbapi.Error as exc:
            raise fail(exc) from exc

    def _value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    def _changed(self, topic: str, uuid: bytes) -> None:
        """Called after a commit: observers (the live event stream) never see a rolled-back change."""
        for observer in self.observers:
            observer(topic, uuid)

    # --- inbox and seen ------------------------------------------------------------------------

    def add_inbox(self, mail: InboxMail, envelope_version: int = 1) -> bool:
        """Store a received mail; False (and nothing written) if its uuid was already seen.
        `envelope_version` says how it was protected (1: RSA, 2: mail keys)."""
        with self._tx() as db:
            if self._seen_in(db, mail.uuid):
                return False
            db.execute(
                f"INSERT INTO inbox ({_INBOX_COLS}, envelope_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (mail.uuid, mail.sender, mail.recipient, mail.subject, mail.body,
                 mail.created_at, mail.received_at, int(mail.is_new), mail.ref, mail.sender_name,
                 envelope_version),
            )
            db.execute("INSERT INTO seen VALUES (?, ?, ?)", (mail.uuid, mail.created_at, mail.received_at))
        self._changed("inbox", mail.uuid)
        return True

    def list_inbox(self, new_only: bool, limit: int, offset: int) -> tuple[int, list[InboxMail]]:
        where = "WHERE is_new = 1" if new_only else ""
        total = self._value(f"SELECT count(*) FROM inbox {where}")
        rows = self._rows(
            f"SELECT {_INBOX_COLS} FROM inbox {where} "
            "ORDER BY received_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return int(total), [_inbox(r) for r in rows]

    def read_inbox(self, uuid: bytes) -> InboxMail | None:
        rows = self._rows(f"SELECT {_INBOX_COLS} FROM inbox WHERE uuid = ?", (uuid,))
        return _inbox(rows[0]) if rows else None

    def inbox_envelope_version(self, uuid: bytes) -> int | None:
        value = self._value("SELECT envelope_version FROM inbox WHERE uuid = ?", (uuid,))
        return None if value is None else int(value)

    def mark_read(self, uuid: bytes, read: bool = True) -> bool:
        with self._tx() as db:
            sql = "UPDATE inbox SET is_new = ? WHERE uuid = ?"
            return db.execute(sql, (int(not read), uuid)).rowcount > 0

    def delete_inbox(self, uuid: bytes) -> bool:
        # The uuid stays in `seen`, so a replay of a deleted mail is still dropped.
        with self._tx() as db:
            return db.execute("DELETE FROM inbox WHERE uuid = ?", (uuid,)).rowcount > 0

    def count_inbox(self) -> tuple[int, int]:
        row = self._rows("SELECT count(*), coalesce(sum(is_new), 0) FROM inbox")[0]
        return int(row[0]), int(row[1])

    def is_seen(self, uuid: bytes) -> bool:
        return bool(self._value(_SEEN_SQL, (uuid, uuid)))

    def remember_seen(self, uuid: bytes, created_at: int, now: int) -> bool:
        """Record a uuid (e.g. of a receipt) without an inbox row; False if it was already seen."""
        with self._tx() as db:
            if self._seen_in(db, uuid):
                return False
            db.execute("INSERT INTO seen VALUES (?, ?, ?)", (uuid, created_at, now))
            return True

    def forget_seen_before(self, cutoff: int) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM seen WHERE seen_at < ?", (cutoff,)).rowcount

    @staticmethod
    def _seen_in(db: dbapi.Connection, uuid: bytes) -> bool:
        return bool(db.execute(_SEEN_SQL, (uuid, uuid)).fetchone()[0])

    # --- outbox --------------------------------------------------------------------------------

    def add_outbox(self, mail: OutboxMail, now: int) -> None:
        _check_state(mail.state)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO outbox ({_OUTBOX_COLS}) VALUES ({', '.join('?' * 15)})",
                (mail.uuid, mail.recipient, mail.subject, mail.body, mail.created_at, mail.expires_at,
                 mail.state, mail.reason, mail.envelope, mail.attempts, mail.next_attempt_at,
                 mail.stored_on, now, mail.kind, mail.ref),
            )
            self._history(db, mail.uuid, now, mail.state, "")
        self._changed("outbox", mail.uuid)

    def set_outbox_state(
        self, uuid: bytes, state: str, now: int, detail: str = "", reason: str | None = None,
        stored_on: int | None = None, next_attempt_at: int | None = None,
        envelope: bytes | None = None, attempted: bool = False,
    ) -> bool:
        """Move a mail to `state` and append a history row, if outbox_states allows the move from the
        state the mail is in; False (nothing written) when it does not, e.g. a receipt marked the
        mail delivered or the user deleted it while a delivery attempt was under way. None keeps a
        field's current value; `attempted` adds one to `attempts`."""
        _check_state(state)
        with self._tx() as db:
            row = db.execute("SELECT state FROM outbox WHERE uuid = ?", (uuid,)).fetchone()
            if row is None or not allowed(row[0], state):
                return False
            db.execute(
                "UPDATE outbox SET state = ?, updated_at = ?, reason = coalesce(?, reason), "
                "stored_on = coalesce(?, stored_on), next_attempt_at = coalesce(?, next_attempt_at), "
                "envelope = coalesce(?, envelope), attempts = attempts + ? WHERE uuid = ?",
                (state, now, reason, stored_on, next_attempt_at, envelope, int(attempted), uuid),
            )
            self._history(db, uuid, now, state, detail)
        self._changed("outbox", uuid)
        return True

    def hurry_outbox(self, recipient: bytes | None = None,
                     states: frozenset[OutboxState] = PENDING) -> int:
        """Make pending mail (to `recipient`, or all) due at once; returns how many rows changed."""
        wanted = tuple(sorted(states & PENDING))
        if not wanted:
            return 0
        where = f"state IN ({', '.join('?' * len(wanted))}) AND next_attempt_at > 0"
        params: tuple[Any, ...] = wanted
        if recipient is not None:
            where, params = where + " AND recipient = ?", (*wanted, recipient)
        with self._tx() as db:
            return db.execute(f"UPDATE outbox SET next_attempt_at = 0 WHERE {where}", params).rowcount

    def resend_outbox(self, uuid: bytes, now: int, expires_at: int) -> bool:
        """Queue a failed or expired mail again, dated `now` (an old date would be refused as a replay)
        and sealed afresh; False if there is no such mail or it is not in a resendable state."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM outbox WHERE uuid = ? AND kind = 'mail'", (uuid,)).fetchone()
            if row is None or row[0] not in RESENDABLE:
                return False
            db.execute(
                "UPDATE outbox SET state = ?, reason = NULL, envelope = NULL, attempts = 0, "
                "next_attempt_at = 0, stored_on = 0, created_at = ?, expires_at = ?, updated_at = ? "
                "WHERE uuid = ?", (OutboxState.QUEUED, now, expires_at, now, uuid))
            self._history(db, uuid, now, OutboxState.QUEUED, "resent by the user")
        self._changed("outbox", uuid)
        return True

    def keep_outbox_envelope(self, uuid: bytes, envelope: bytes) -> None:
        """Record the sealed envelope of a mail that has none yet, leaving its state alone."""
        with self._tx() as db:
            db.execute("UPDATE outbox SET envelope = ? WHERE uuid = ? AND envelope IS NULL",
                       (envelope, uuid))

    def due_outbox(self, now: int, limit: int) -> list[OutboxMail]:
        """Mail still needing work whose retry time has come (queued, or stored/handed over and
        awaiting a receipt), not yet past its expiry; most overdue first."""
        rows = self._rows(
            f"SELECT {_OUTBOX_COLS} FROM outbox WHERE state IN ({_IN_PENDING}) AND next_attempt_at <= ? "
            "AND expires_at > ? ORDER BY next_attempt_at, created_at LIMIT ?",
            (*_PENDING, now, now, limit),
        )
        return [_outbox(r) for r in rows]

    def get_outbox(self, uuid: bytes) -> OutboxMail | None:
        rows = self._rows(f"SELECT {_OUTBOX_COLS} FROM outbox WHERE uuid = ?", (uuid,))
        return _outbox(rows[0]) if rows else None

    def outbox_history(self, uuid: bytes) -> list[tuple[int, str, str]]:
        rows = self._rows("SELECT at, state, detail FROM outbox_history WHERE uuid = ? ORDER BY id", (uuid,))
        return [(int(at), state, detail) for at, state, detail in rows]

    def list_outbox(self, limit: int, offset: int) -> tuple[int, list[OutboxMail]]:
        total = self._value("SELECT count(*) FROM outbox WHERE kind = 'mail'")
        rows = self._rows(
            f"SELECT {_OUTBOX_COLS} FROM outbox WHERE kind = 'mail' "
            "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return int(total), [_outbox(r) for r in rows]

    def delete_outbox(self, uuid: bytes) -> bool:
        with self._tx() as db:  # history rows go with it (ON DELETE CASCADE)
            return db.execute("DELETE FROM outbox WHERE uuid = ?", (uuid,)).rowcount > 0

    def count_outbox(self) -> dict[str, int]:
        counts = dict.fromkeys([str(state) for state in OutboxState], 0)
        counts.update(self._rows("SELECT state, count(*) FROM outbox WHERE kind = 'mail' GROUP BY state"))
        return counts

    def expire_outbox(self, now: int) -> list[bytes]:
        with self._tx() as db:
            uuids = [r[0] for r in db.execute(
                f"SELECT uuid FROM outbox WHERE state IN ({_IN_PENDING}) AND expires_at <= ?", (*_PENDING, now))]
            for uuid in uuids:
                db.execute("UPDATE outbox SET state = ?, updated_at = ? WHERE uuid = ?",
                           (OutboxState.EXPIRED, now, uuid))
                self._history(db, uuid, now, OutboxState.EXPIRED, "retention time ended")
        for uuid in uuids:
            self._changed("outbox", uuid)
        return uuids

    @staticmethod
    def _history(db: dbapi.Connection, uuid: bytes, now: int, state: str, detail: str) -> None:
        db.execute("INSERT INTO outbox_history (uuid, at, state, detail) VALUES (?, ?, ?, ?)",
                   (uuid, now, state, detail))

    # --- conversations -------------------------------------------------------------------------

    def conversations(self, limit: int) -> list[tuple[bytes, int, int, int]]:
        """(peer, last activity, unread, total) per peer we exchanged mail with, latest first."""
        rows = self._rows(_CONVERSATIONS_SQL, (limit,))
        return [(peer, int(at), int(unread), int(total)) for peer, at, unread, total in rows]

    def conversation(self, peer: bytes, limit: int) -> list[InboxMail | OutboxMail]:
        """The last `limit` mails exchanged with `peer`, oldest first (ours by creation time,
        theirs by arrival: our own clock orders both)."""
        got = self._rows(f"SELECT {_INBOX_COLS} FROM inbox WHERE sender = ? "
                         "ORDER BY received_at DESC, rowid DESC LIMIT ?", (peer, limit))
        sent = self._rows(f"SELECT {_OUTBOX_COLS} FROM outbox WHERE recipient = ? AND kind = 'mail' "
                          "ORDER BY created_at DESC, rowid DESC LIMIT ?", (peer, limit))
        mails: list[InboxMail | OutboxMail] = [_inbox(r) for r in got] + [_outbox(r) for r in sent]
        # Times are whole seconds: within one second, a reply goes after the mail it answers.
        refs = {m.uuid: m.ref for m in mails}
        depth: dict[bytes, int] = {}

        def hops(uuid: bytes) -> int:
            """How many replies deep `uuid` is among these mails (a forged cycle just ends)."""
            path: list[bytes] = []
            cur: bytes | None = uuid
            while cur is not None and cur in refs and cur not in depth and cur not in path:
                path.append(cur)
                cur = refs[cur]
            known = depth.get(cur, -1) if cur is not None else -1
            for step in reversed(path):
                known += 1
                depth[step] = known
            return depth[uuid]

        mails.sort(key=lambda m: (m.received_at if isinstance(m, InboxMail) else m.created_at, hops(m.uuid)))
        return mails[-limit:]

    def mark_conversation_read(self, peer: bytes) -> int:
        with self._tx() as db:
            return db.execute("UPDATE inbox SET is_new = 0 WHERE sender = ? AND is_new = 1",
                              (peer,)).rowcount

    def latest_name(self, peer: bytes) -> str:
        """The display name `peer` signed most recently, or ""."""
        name = self._value("SELECT sender_name FROM inbox WHERE sender = ? AND sender_name != '' "
                           "ORDER BY received_at DESC LIMIT 1", (peer,))
        return str(name or "")

    def uuids_between(self, low: bytes, high: bytes, limit: int) -> list[bytes]:
        """Mail uuids (inbox or sent) in [low, high]: how a uuid prefix finds its mail."""
        rows = self._rows("SELECT uuid FROM inbox WHERE uuid BETWEEN ?1 AND ?2 UNION "
                          "SELECT uuid FROM outbox WHERE uuid BETWEEN ?1 AND ?2 AND kind = 'mail' "
                          "LIMIT ?3", (low, high, limit))
        return [r[0] for r in rows]

    # --- envelopes held for other nodes --------------------------------------------------------

    def hold(
        self, uuid: bytes, recipient: bytes, sender_peer: bytes, expires_at: int,
        envelope: bytes, now: int, quotas: Quotas,
    ) -> str:
        """Keep an envelope for `recipient`: "stored", "duplicate", or QuotaExceeded
        (fair eviction and running totals: see held.py)."""
        with self._tx() as db:
            return hold(db, Held(uuid, recipient, sender_peer, expires_at, envelope), now, quotas)

    def held_for(self, recipient: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        rows = self._rows(
            "SELECT uuid, envelope FROM held WHERE recipient = ? ORDER BY stored_at, rowid LIMIT ?",
            (recipient, limit),
        )
        return [(u, e) for u, e in rows]

    def held_sizes(self, recipient: bytes, limit: int) -> list[tuple[bytes, int]]:
        """(uuid, size) of the oldest envelopes held for `recipient`, without their bytes."""
        rows = self._rows(
            "SELECT uuid, size FROM held WHERE recipient = ? ORDER BY stored_at, rowid LIMIT ?",
            (recipient, limit),
        )
        return [(u, int(n)) for u, n in rows]

    def delete_held(self, recipient: bytes, uuids: Sequence[bytes]) -> int:
        """Delete only `recipient`'s envelopes: a link authenticated as one node cannot drop another's."""
        with self._tx() as db:
            sql = "DELETE FROM held WHERE recipient = ? AND uuid = ?"
            return sum(db.execute(sql, (recipient, u)).rowcount for u in uuids)

    def expire_held(self, now: int) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM held WHERE expires_at <= ?", (now,)).rowcount

    def held_stats(self) -> tuple[int, int]:
        """(envelopes, bytes) held for others, from running totals (no scan)."""
        try:
            return usage(self._db)
        except dbapi.Error as exc:
            raise fail(exc) from exc

    def held_page(self, after: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """(rowid, uuid, recipient) of held envelopes after rowid `after`, without their bytes:
        keyset paging stays right when rows come and go between pages."""
        rows = self._rows("SELECT rowid, uuid, recipient FROM held WHERE rowid > ? ORDER BY rowid "
                          "LIMIT ?", (after, limit))
        return [(int(i), u, r) for i, u, r in rows]

    def held_envelope(self, uuid: bytes) -> bytes | None:
        """One held envelope, or None once it was fetched, evicted or expired."""
        envelope = self._value("SELECT envelope FROM held WHERE uuid = ?", (uuid,))
        return None if envelope is None else bytes(envelope)

    # --- contacts ------------------------------------------------------------------------------

    def add_contact(self, alias: str, node_id: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO contacts VALUES (?, ?)", (alias, node_id))

    def remove_contact(self, alias: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM contacts WHERE alias = ?", (alias,)).rowcount > 0

    def contacts(self) -> list[tuple[str, bytes]]:
        return [(a, n) for a, n in self._rows("SELECT alias, node_id FROM contacts ORDER BY alias")]

    def resolve_alias(self, alias: str) -> bytes | None:
        node_id: bytes | None = self._value("SELECT node_id FROM contacts WHERE alias = ?", (alias,))
        return node_id

    def alias_of(self, node_id: bytes) -> str | None:
        alias: str | None = self._value("SELECT alias FROM contacts WHERE node_id = ? ORDER BY alias LIMIT 1",
                                        (node_id,))
        return alias

    # --- public keys (cache and key directory) -------------------------------------------------

    def put_key(self, node_id: bytes, der: bytes, now: int, published_by_owner: bool = False) -> None:
        """Store or refresh a key the caller has checked hashes to `node_id`. The owner flag is sticky."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "public_der = excluded.public_der, stored_at = excluded.stored_at, "
                "published_by_owner = max(published_by_owner, excluded.published_by_owner)",
                (node_id, der, now, int(published_by_owner)),
            )

    def get_key(self, node_id: bytes) -> bytes | None:
        der: bytes | None = self._value("SELECT public_der FROM keys WHERE node_id = ?", (node_id,))
        return der

    def count_keys(self) -> int:
        return int(self._value("SELECT count(*) FROM keys"))

    def expire_keys(self, cutoff: int) -> int:
        """Forget keys not refreshed since `cutoff`, except those of our contacts and of the
        recipients of mail still on its way (those we need, and a lookup finds them again)."""
        with self._tx() as db:
            return db.execute(
                "DELETE FROM keys WHERE stored_at < ? "
                "AND node_id NOT IN (SELECT node_id FROM contacts) "
                f"AND node_id NOT IN (SELECT recipient FROM outbox WHERE state IN ({_IN_PENDING}))",
                (cutoff, *_PENDING)).rowcount

    # --- mail key records: others' (cache and directory) and our own (secrets) ---------------

    def put_mail_key(self, node_id: bytes, created_at: int, expires_at: int, record: bytes,
                     now: int) -> bool:
        """Keep a checked record unless one created later is held; True if it was kept."""
        with self._tx() as db:
            return db.execute(
                "INSERT INTO mail_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "created_at = excluded.created_at, expires_at = excluded.expires_at, "
                "record = excluded.record, stored_at = excluded.stored_at "
                "WHERE excluded.created_at >= mail_keys.created_at",
                (node_id, created_at, expires_at, record, now)).rowcount > 0

    def get_mail_key(self, node_id: bytes) -> bytes | None:
        record: bytes | None = self._value("SELECT record FROM mail_keys WHERE node_id = ?",
                                           (node_id,))
        return record

    def count_mail_keys(self) -> int:
        return int(self._value("SELECT count(*) FROM mail_keys"))

    def expire_mail_keys(self, now: int) -> int:
        with self._tx() as db:
            return db.execute("DELETE FROM mail_keys WHERE expires_at <= ?", (now,)).rowcount

    def add_own_mail_key(self, key_id: bytes, created_at: int, expires_at: int, erase_at: int,
                         record: bytes, wrapped_secret: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO own_mail_keys VALUES (?, ?, ?, ?, ?, ?)",
                       (key_id, created_at, expires_at, erase_at, record, wrapped_secret))

    def own_mail_keys(self) -> list[tuple[bytes, bytes, bytes]]:
        """(prekey id, record, wrapped secret), oldest first."""
        return [(bytes(k), bytes(r), bytes(w)) for k, r, w in self._rows(
            "SELECT prekey_id, record, secret FROM own_mail_keys ORDER BY created_at, prekey_id")]

    def erase_own_mail_keys(self, now: int) -> list[bytes]:
        """Delete our mail keys due for erasure, so that no copy stays readable on disk:
        secure_delete zeroes the freed bytes, the checkpoint empties the WAL of old pages."""
        due = [bytes(r[0]) for r in self._rows(
            "SELECT prekey_id FROM own_mail_keys WHERE erase_at <= ?", (now,))]
        if not due:
            return []
        previous = int(self._value("PRAGMA secure_delete"))
        try:
            self._db.execute("PRAGMA secure_delete = ON")
            with self._tx() as db:
                db.executemany("DELETE FROM own_mail_keys WHERE prekey_id = ?",
                               [(k,) for k in due])
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.execute(f"PRAGMA secure_delete = {previous}")
        except dbapi.Error as exc:
            raise fail(exc) from exc
        return due

    # --- routing table -------------------------------------------------------------------------

    def save_routing(self, entries: Sequence[RoutingEntry]) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM routing")
            db.executemany("INSERT INTO routing VALUES (?, ?, ?, ?)", entries)

    def load_routing(self) -> list[RoutingEntry]:
        # Oldest first: re-inserting in this order rebuilds each bucket's least-recently-seen order.
        rows = self._rows("SELECT node_id, host, port, last_seen FROM routing ORDER BY last_seen, node_id")
        return [(n, h, int(p), int(s)) for n, h, p, s in rows]


def _check_state(state: str) -> None:
    try:
        parse_state(state)
    except ValueError as exc:
        raise StorageError(str(exc)) from None
