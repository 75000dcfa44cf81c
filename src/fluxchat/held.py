"""Envelopes held for other nodes: quotas with running totals and fair eviction.

The usage tables (`held_pair`, `held_rcpt`, `held_sender`, `held_total`) are kept by
triggers on `held` (store_schema, version 2), in the same transaction as the change, so a
Store costs a few indexed lookups instead of a `SUM(size)` over every envelope.

Fairness: one storing peer may hold at most `per_pair_bytes` for one recipient, well below
the recipient's quota. When the recipient's quota (or the total) is full, room is made by
dropping the oldest envelopes of the peer that holds the most, but only while that peer
holds more than the newcomer would: so no single sender can keep a recipient's mail out,
and an attacker needs many authenticated identities to fill a quota at all.
"""

from __future__ import annotations

from .errors import StorageError
from .records import record
from .sqldb import dbapi


class QuotaExceeded(StorageError):
    """A held envelope was refused because it would pass one of the storage quotas."""


@record
class Quotas:
    per_recipient_bytes: int
    per_peer_bytes: int
    total_bytes: int
    per_pair_bytes: int = 2**62   # one storing peer, one recipient


@record
class Held:
    uuid: bytes
    recipient: bytes
    sender_peer: bytes
    expires_at: int
    envelope: bytes


def _one(db: dbapi.Connection, sql: str, params: tuple[object, ...]) -> int:
    row = db.execute(sql, params).fetchone()
    return int(row[0]) if row else 0


def hold(db: dbapi.Connection, item: Held, now: int, quotas: Quotas) -> str:
    """Within the caller's transaction: "stored", "duplicate", or QuotaExceeded."""
    size = len(item.envelope)
    if db.execute("SELECT 1 FROM held WHERE uuid = ?", (item.uuid,)).fetchone():
        return "duplicate"
    # Expired envelopes must not count against anyone's quota (indexed on expires_at).
    db.execute("DELETE FROM held WHERE expires_at <= ?", (now,))
    pair = _one(db, "SELECT bytes FROM held_pair WHERE recipient = ? AND sender_peer = ?",
                (item.recipient, item.sender_peer))
    _check("per sender and recipient bytes", pair, size, quotas.per_pair_bytes)
    peer = _one(db, "SELECT bytes FROM held_sender WHERE sender_peer = ?", (item.sender_peer,))
    _check("per sender peer bytes", peer, size, quotas.per_peer_bytes)
    _make_room_for_recipient(db, item, pair + size, quotas.per_recipient_bytes)
    _make_room_in_total(db, item, peer + size, quotas.total_bytes)
    db.execute("INSERT INTO held VALUES (?, ?, ?, ?, ?, ?, ?)",
               (item.uuid, item.recipient, item.sender_peer, item.expires_at, size,
                item.envelope, now))
    return "stored"


def _exceeded(name: str, used: int, size: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(f"storage quota exceeded ({name}): {used} bytes held + {size} "
                         f"would pass the limit of {limit}")


def _check(name: str, used: int, size: int, limit: int) -> None:
    if used + size > limit:
        raise _exceeded(name, used, size, limit)


def _make_room_for_recipient(db: dbapi.Connection, item: Held, ours_after: int,
                             limit: int) -> None:
    size = len(item.envelope)
    while True:
        used = _one(db, "SELECT bytes FROM held_rcpt WHERE recipient = ?", (item.recipient,))
        if used + size <= limit:
            return
        row = db.execute("SELECT sender_peer, bytes FROM held_pair WHERE recipient = ? "
                         "ORDER BY bytes DESC, sender_peer LIMIT 1", (item.recipient,)).fetchone()
        if row is None or size > limit or int(row[1]) <= ours_after:
            raise _exceeded("per recipient bytes", used, size, limit)
        _evict_oldest(db, "recipient = ? AND sender_peer = ?", (item.recipient, row[0]))


def _make_room_in_total(db: dbapi.Connection, item: Held, ours_after: int,
                        limit: int) -> None:
    size = len(item.envelope)
    while True:
        used = _one(db, "SELECT bytes FROM held_total WHERE id = 0", ())
        if used + size <= limit:
            return
        row = db.execute("SELECT sender_peer, bytes FROM held_sender "
                         "ORDER BY bytes DESC, sender_peer LIMIT 1").fetchone()
        if row is None or size > limit or int(row[1]) <= ours_after:
            raise _exceeded("total bytes", used, size, limit)
        _evict_oldest(db, "sender_peer = ?", (row[0],))


def _evict_oldest(db: dbapi.Connection, where: str, params: tuple[object, ...]) -> None:
    db.execute(f"DELETE FROM held WHERE rowid = (SELECT rowid FROM held WHERE {where} "
               "ORDER BY stored_at, rowid LIMIT 1)", params)


def usage(db: dbapi.Connection) -> tuple[int, int]:
    """(envelopes, bytes) held, from the running totals."""
    row = db.execute("SELECT count, bytes FROM held_total WHERE id = 0").fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


# Schema version 2: running totals kept by triggers, and indexes for fair eviction.
MIGRATION: tuple[str, ...] = (
    """CREATE TABLE held_pair (
        recipient BLOB NOT NULL, sender_peer BLOB NOT NULL, bytes INTEGER NOT NULL,
        PRIMARY KEY (recipient, sender_peer))""",
    "CREATE INDEX held_pair_bytes ON held_pair (recipient, bytes)",
    "CREATE TABLE held_rcpt (recipient BLOB PRIMARY KEY, bytes INTEGER NOT NULL)",
    "CREATE TABLE held_sender (sender_peer BLOB PRIMARY KEY, bytes INTEGER NOT NULL)",
    "CREATE INDEX held_peer_bytes ON held_sender (bytes)",
    """CREATE TABLE held_total (
        id INTEGER PRIMARY KEY CHECK (id = 0), count INTEGER NOT NULL, bytes INTEGER NOT NULL)""",
    "CREATE INDEX held_pair_age ON held (recipient, sender_peer, stored_at)",
    "CREATE INDEX held_peer_age ON held (sender_peer, stored_at)",
    "INSERT INTO held_pair SELECT recipient, sender_peer, sum(size) FROM held GROUP BY 1, 2",
    "INSERT INTO held_rcpt SELECT recipient, sum(size) FROM held GROUP BY 1",
    "INSERT INTO held_sender SELECT sender_peer, sum(size) FROM held GROUP BY 1",
    "INSERT INTO held_total SELECT 0, count(*), coalesce(sum(size), 0) FROM held",
    """CREATE TRIGGER held_added AFTER INSERT ON held BEGIN
        INSERT INTO held_pair VALUES (new.recipient, new.sender_peer, new.size)
            ON CONFLICT DO UPDATE SET bytes = bytes + excluded.bytes;
        INSERT INTO held_rcpt VALUES (new.recipient, new.size)
            ON CONFLICT DO UPDATE SET bytes = bytes + excluded.bytes;
        INSERT INTO held_sender VALUES (new.sender_peer, new.size)
            ON CONFLICT DO UPDATE SET bytes = bytes + excluded.bytes;
        UPDATE held_total SET count = count + 1, bytes = bytes + new.size WHERE id = 0;
    END""",
    """CREATE TRIGGER held_removed AFTER DELETE ON held BEGIN
        UPDATE held_pair SET bytes = bytes - old.size
            WHERE recipient = old.recipient AND sender_peer = old.sender_peer;
        DELETE FROM held_pair WHERE recipient = old.recipient AND sender_peer = old.sender_peer
            AND bytes <= 0;
        UPDATE held_rcpt SET bytes = bytes - old.size WHERE recipient = old.recipient;
        DELETE FROM held_rcpt WHERE recipient = old.recipient AND bytes <= 0;
        UPDATE held_sender SET bytes = bytes - old.size WHERE sender_peer = old.sender_peer;
        DELETE FROM held_sender WHERE sender_peer = old.sender_peer AND bytes <= 0;
        UPDATE held_total SET count = count - 1, bytes = bytes - old.size WHERE id = 0;
    END""",
)
