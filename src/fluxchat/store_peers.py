"""What the node keeps about and for other nodes: envelopes held for them, their public keys
and mail key records, our own mail keys, contacts, and the routing table."""

from __future__ import annotations

from collections.abc import Sequence

from .held import Held, Quotas, hold, usage
from .sqldb import dbapi
from .store_base import StoreBase
from .store_outbox import IN_PENDING, PENDING_STATES
from .store_schema import fail

RoutingEntry = tuple[bytes, str, int, int]  # (node_id, host, port, last_seen)
KEY_CACHE = 256   # public keys kept in memory: every mail in or out needs its peer's


class PeerStore(StoreBase):
    def __init__(self, db: dbapi.Connection) -> None:
        super().__init__(db)
        # node ID -> public key DER (None: known absent), so a burst of mail to or from
        # one node reads its key once; every write to `keys` goes through this class.
        self._keys: dict[bytes, bytes | None] = {}

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
        self._keys.pop(node_id, None)   # before the write: a failed write leaves no stale entry
        with self._tx() as db:
            db.execute(
                "INSERT INTO keys VALUES (?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
                "public_der = excluded.public_der, stored_at = excluded.stored_at, "
                "published_by_owner = max(published_by_owner, excluded.published_by_owner)",
                (node_id, der, now, int(published_by_owner)),
            )

    def get_key(self, node_id: bytes) -> bytes | None:
        if node_id in self._keys:
            return self._keys[node_id]
        der: bytes | None = self._value("SELECT public_der FROM keys WHERE node_id = ?", (node_id,))
        if len(self._keys) >= KEY_CACHE:
            self._keys.clear()
        self._keys[node_id] = der
        return der

    def count_keys(self) -> int:
        return int(self._value("SELECT count(*) FROM keys"))

    def expire_keys(self, cutoff: int) -> int:
        """Forget keys not refreshed since `cutoff`, except those of our contacts and of the
        recipients of mail still on its way (those we need, and a lookup finds them again)."""
        self._keys.clear()
        with self._tx() as db:
            return db.execute(
                "DELETE FROM keys WHERE stored_at < ? "
                "AND node_id NOT IN (SELECT node_id FROM contacts) "
                f"AND node_id NOT IN (SELECT recipient FROM outbox WHERE state IN ({IN_PENDING}))",
                (cutoff, *PENDING_STATES)).rowcount

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
