"""Opening the node database: file mode, pragmas, transactions, and `PRAGMA user_version` migrations.

Durability: WAL mode with `synchronous=NORMAL`. When a COMMIT returns, the transaction is in the WAL file
(at least in the OS page cache), so it survives the process being killed at any instant; only a power loss
or OS crash may lose the last few commits, never corrupting the file. FULL would fsync every commit to
cover power loss too, at a large cost per write; DESIGN §6 asks for the process-kill guarantee.

Each migration is a tuple of SQL statements applied in one transaction together with the new
`user_version`, so a crash mid-migration leaves the previous version intact. Append new migrations;
never edit a released one. CHECK constraints keep malformed ids (wrong type or length) out even if a
caller slips, since a bad uuid in `seen` would silently break duplicate detection.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import StorageError
from .held import MIGRATION as _HELD_TOTALS
from .outbox_states import OutboxState
from .sqldb import dbapi, open_database

BUSY_TIMEOUT_MS = 5000

OUTBOX_STATES = tuple(OutboxState)

_UUID = "CHECK (typeof({c}) = 'blob' AND length({c}) = 16)"
_NODE = "CHECK (typeof({c}) = 'blob' AND length({c}) = 32)"
# The states of the first schema, frozen with it; later states come with their migration.
_STATES = ", ".join(f"'{s}'" for s in ("queued", "stored", "handed_over", "delivered", "expired", "failed"))

_V1: tuple[str, ...] = (
    f"""CREATE TABLE inbox (
        uuid BLOB PRIMARY KEY {_UUID.format(c='uuid')},
        sender BLOB NOT NULL {_NODE.format(c='sender')},
        recipient BLOB NOT NULL {_NODE.format(c='recipient')},
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        is_new INTEGER NOT NULL DEFAULT 1 CHECK (is_new IN (0, 1)))""",
    "CREATE INDEX inbox_received ON inbox (received_at)",
    f"""CREATE TABLE seen (
        uuid BLOB PRIMARY KEY {_UUID.format(c='uuid')},
        created_at INTEGER NOT NULL,
        seen_at INTEGER NOT NULL)""",
    "CREATE INDEX seen_at ON seen (seen_at)",
    f"""CREATE TABLE outbox (
        uuid BLOB PRIMARY KEY {_UUID.format(c='uuid')},
        recipient BLOB NOT NULL {_NODE.format(c='recipient')},
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({_STATES})),
        reason TEXT,
        envelope BLOB,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        stored_on INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        kind TEXT NOT NULL DEFAULT 'mail' CHECK (kind IN ('mail', 'receipt')))""",
    "CREATE INDEX outbox_due ON outbox (state, next_attempt_at)",
    "CREATE INDEX outbox_created ON outbox (created_at)",
    f"""CREATE TABLE outbox_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid BLOB NOT NULL REFERENCES outbox (uuid) ON DELETE CASCADE,
        at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({_STATES})),
        detail TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX outbox_history_uuid ON outbox_history (uuid, id)",
    f"""CREATE TABLE held (
        uuid BLOB PRIMARY KEY {_UUID.format(c='uuid')},
        recipient BLOB NOT NULL {_NODE.format(c='recipient')},
        sender_peer BLOB NOT NULL {_NODE.format(c='sender_peer')},
        expires_at INTEGER NOT NULL,
        size INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        stored_at INTEGER NOT NULL)""",
    "CREATE INDEX held_recipient ON held (recipient, stored_at)",
    "CREATE INDEX held_peer ON held (sender_peer)",
    "CREATE INDEX held_expires ON held (expires_at)",
    f"""CREATE TABLE contacts (
        alias TEXT PRIMARY KEY,
        node_id BLOB NOT NULL {_NODE.format(c='node_id')})""",
    "CREATE INDEX contacts_node ON contacts (node_id)",
    f"""CREATE TABLE keys (
        node_id BLOB PRIMARY KEY {_NODE.format(c='node_id')},
        public_der BLOB NOT NULL,
        stored_at INTEGER NOT NULL,
        published_by_owner INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX keys_stored ON keys (stored_at)",
    f"""CREATE TABLE routing (
        node_id BLOB PRIMARY KEY {_NODE.format(c='node_id')},
        host TEXT NOT NULL,
        port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        last_seen INTEGER NOT NULL)""",
)



# The columns of the outbox and its history as the first schema made them: the copies below
# name them, so a column added by a later migration can never land in the wrong place.
_OUTBOX_COLS = ("uuid, recipient, subject, body, created_at, expires_at, state, reason, envelope, "
                "attempts, next_attempt_at, stored_on, updated_at, kind")
_HISTORY_COLS = "id, uuid, at, state, detail"


def _outbox_tables(states: str) -> tuple[str, ...]:
    """The outbox and its history with `states` in their CHECKs (SQLite cannot alter a CHECK).

    The history is copied aside and its table dropped first: dropping `outbox` while a table still
    references it would cascade and delete the history rows."""
    outbox = f"""CREATE TABLE outbox_new (
        uuid BLOB PRIMARY KEY {_UUID.format(c='uuid')},
        recipient BLOB NOT NULL {_NODE.format(c='recipient')},
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({states})),
        reason TEXT,
        envelope BLOB,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL DEFAULT 0,
        stored_on INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        kind TEXT NOT NULL DEFAULT 'mail' CHECK (kind IN ('mail', 'receipt')))"""
    history = f"""CREATE TABLE outbox_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        uuid BLOB NOT NULL REFERENCES outbox (uuid) ON DELETE CASCADE,
        at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ({states})),
        detail TEXT NOT NULL DEFAULT '')"""
    return (
        f"CREATE TEMP TABLE outbox_history_copy AS SELECT {_HISTORY_COLS} FROM outbox_history",
        "DROP TABLE outbox_history",
        outbox,
        f"INSERT INTO outbox_new ({_OUTBOX_COLS}) SELECT {_OUTBOX_COLS} FROM outbox",
        "DROP TABLE outbox",
        "ALTER TABLE outbox_new RENAME TO outbox",
        "CREATE INDEX outbox_due ON outbox (state, next_attempt_at)",
        "CREATE INDEX outbox_created ON outbox (created_at)",
        history,
        f"INSERT INTO outbox_history ({_HISTORY_COLS}) SELECT {_HISTORY_COLS} FROM outbox_history_copy",
        "DROP TABLE outbox_history_copy",
        "CREATE INDEX outbox_history_uuid ON outbox_history (uuid, id)",
    )


# The outbox state machine gains `waiting_for_key` (outbox_states.py); frozen like _V1.
_WAITING_FOR_KEY = _outbox_tables(", ".join(f"'{s}'" for s in (
    "queued", "waiting_for_key", "stored", "handed_over", "delivered", "expired", "failed")))

# Mail key records (mailkeys.py): our own, with their secrets wrapped (AES-256-GCM under a key
# derived from the identity key) until erase_at; and other nodes' records (cache and directory).
_MAIL_KEYS: tuple[str, ...] = (
    """CREATE TABLE own_mail_keys (
        prekey_id BLOB PRIMARY KEY CHECK (typeof(prekey_id) = 'blob' AND length(prekey_id) = 16),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        erase_at INTEGER NOT NULL,
        record BLOB NOT NULL,
        secret BLOB NOT NULL)""",
    f"""CREATE TABLE mail_keys (
        node_id BLOB PRIMARY KEY {_NODE.format(c='node_id')},
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        record BLOB NOT NULL,
        stored_at INTEGER NOT NULL)""",
    "CREATE INDEX mail_keys_expires ON mail_keys (expires_at)",
    # 1: RSA (v1 envelope), 2: forward-secret post-quantum (v2).
    "ALTER TABLE inbox ADD COLUMN envelope_version INTEGER NOT NULL DEFAULT 1",
)


# Conversations: the mail a message replies to, the sender's display name (a hint), and
# indexes that list the mail exchanged with one peer without scanning the mailbox.
_CONVERSATIONS: tuple[str, ...] = (
    "ALTER TABLE inbox ADD COLUMN ref BLOB CHECK (ref IS NULL OR (typeof(ref) = 'blob' AND length(ref) = 16))",
    "ALTER TABLE inbox ADD COLUMN sender_name TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE outbox ADD COLUMN ref BLOB CHECK (ref IS NULL OR (typeof(ref) = 'blob' AND length(ref) = 16))",
    "CREATE INDEX inbox_sender ON inbox (sender, received_at)",
    "CREATE INDEX inbox_new ON inbox (is_new, sender)",
    "CREATE INDEX outbox_recipient ON outbox (recipient, created_at)",
)

# The sealed envelope of an outbox mail in a table of its own: a state change then rewrites a
# small row, not one whose 5 KB envelope spills into overflow pages (about half of a mail's
# store work at the sender before). Written once, when the mail is first sent.
_OUTBOX_ENVELOPES: tuple[str, ...] = (
    f"""CREATE TABLE outbox_envelopes (
        uuid BLOB PRIMARY KEY {_UUID.format(c='uuid')} REFERENCES outbox (uuid) ON DELETE CASCADE,
        envelope BLOB NOT NULL)""",
    "INSERT INTO outbox_envelopes (uuid, envelope) "
    "SELECT uuid, envelope FROM outbox WHERE envelope IS NOT NULL",
    "ALTER TABLE outbox DROP COLUMN envelope",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _HELD_TOTALS, _WAITING_FOR_KEY, _MAIL_KEYS, _CONVERSATIONS,
                                           _OUTBOX_ENVELOPES)
SCHEMA_VERSION = len(MIGRATIONS)


def fail(exc: BaseException) -> StorageError:
    return StorageError(f"database error: {exc}")


def connect(path: Path, key: bytes | None = None) -> dbapi.Connection:
    """Open `path` (created 0600; encrypted with `key` if given, see sqldb), set the pragmas and
    migrate; every failure is a StorageError."""
    try:
        _create_private(path)
    except OSError as exc:
        raise StorageError(f"cannot create database {path}: {exc}") from exc
    # Autocommit: we issue BEGIN/COMMIT ourselves, because Python 3.11's implicit transactions
    # do not cover DDL and would make migrations non-atomic.
    db = open_database(path, key)
    try:
        _configure(db)
        migrate(db)
    except BaseException as exc:
        db.close()
        if isinstance(exc, dbapi.Error):
            raise fail(exc) from exc
        raise
    return db


@contextmanager
def transaction(db: dbapi.Connection) -> Iterator[dbapi.Connection]:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception; sqlite3 errors become StorageError.

    IMMEDIATE takes the write lock up front, so a check-then-write (quotas, migrations) cannot
    interleave with another writer and never fails half-way on a lock upgrade.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
    except dbapi.Error as exc:
        raise fail(exc) from exc
    try:
        yield db
        db.execute("COMMIT")
    except BaseException as exc:
        if db.in_transaction:  # SQLite may already have rolled back on its own
            db.execute("ROLLBACK")
        if isinstance(exc, dbapi.Error):
            raise fail(exc) from exc
        raise


def _create_private(path: Path) -> None:
    # Create the file ourselves so it is 0600 from its first byte (sqlite would use 0644 minus umask).
    # SQLite gives the -wal and -shm files the database file's mode.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also tightens a pre-existing file
    finally:
        os.close(fd)


def _configure(db: dbapi.Connection) -> None:
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StorageError(f"database cannot use WAL journal mode (got {mode!r})")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")


def migrate(db: dbapi.Connection) -> int:
    """Bring `db` (autocommit mode) up to SCHEMA_VERSION; return the version it had before.

    A database written by a newer FluxChat is refused (StorageError) rather than misread or corrupted.
    """
    start = _user_version(db)
    if start > SCHEMA_VERSION:
        raise StorageError(
            f"database schema version {start} is newer than this FluxChat supports ({SCHEMA_VERSION})"
        )
    for version in range(start + 1, SCHEMA_VERSION + 1):
        _apply(db, version)
    return start


def _apply(db: dbapi.Connection, version: int) -> None:
    with transaction(db):
        # Re-read under the write lock: another process may have migrated since we looked.
        if _user_version(db) < version:
            for statement in MIGRATIONS[version - 1]:
                db.execute(statement)
            # PRAGMA takes no bound parameters; `version` is our own int.
            db.execute(f"PRAGMA user_version = {int(version)}")


def _user_version(db: dbapi.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])
