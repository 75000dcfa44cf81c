"""The one place that opens SQLite files: SQLCipher through the `sqlcipher3` wheel.

The wheel bundles SQLCipher (SQLite 3.53 with page encryption) and the OpenSSL it uses, so no system
library is needed. With a 32-byte storage key every page of the database, its write-ahead log and
its free pages are encrypted (AES-256-CBC per page, HMAC-SHA512 per page, SQLCipher 4 defaults);
without a key the file is ordinary SQLite, which tests, benchmarks and the migration of an old
plaintext database use. Every other module reaches the driver through `dbapi` below, so the whole
project uses one driver and one `Error` class; `tests/test_vault_store.py` checks no one imports
`sqlite3` or `sqlcipher3` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import StorageError

if TYPE_CHECKING:  # sqlcipher3 is a fork of the stdlib module with the same API; use its types
    import sqlite3 as dbapi
else:
    from sqlcipher3 import dbapi2 as dbapi

__all__ = ["KEY_BYTES", "PLAIN_HEADER", "dbapi", "is_plaintext", "key_pragma", "open_database"]

KEY_BYTES = 32
# SQLite's page cache per connection, in KiB (a negative cache_size). The wheel's default is 8 MiB,
# which a node with 10,000 mails fills with decrypted pages after a few listings; 1 MiB keeps a
# listing of 50 as fast (bench/rss.py measures both) and the process about 3 MiB smaller.
CACHE_KIB = 1024
PLAIN_HEADER = b"SQLite format 3\x00"  # an encrypted file starts with its random salt instead


def key_pragma(key: bytes) -> str:
    """The SQL that keys a connection (or, after ATTACH … KEY, names it) with a raw 256-bit key.

    A raw key skips SQLCipher's own PBKDF2: the key is already random, derived from the password
    only through the Argon2id wrapping in vault.py.
    """
    if len(key) != KEY_BYTES:
        raise StorageError(f"a storage key has {KEY_BYTES} bytes, got {len(key)}")
    return f"\"x'{key.hex()}'\""


def open_database(path: Path, key: bytes | None) -> dbapi.Connection:
    """Connect to `path` in autocommit mode, keyed if `key` is given, and check the key opens it.

    A wrong key (or a file that is not a database) is a StorageError naming the file, never a
    half-open connection.
    """
    try:
        # isolation_level=None: callers issue BEGIN/COMMIT themselves (see store_schema).
        db = dbapi.connect(str(path), isolation_level=None, check_same_thread=False)
    except dbapi.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc
    try:
        # SQLCipher reports decryption failures on stderr by default; we raise them instead.
        db.execute("PRAGMA cipher_log_level = NONE")
        if key is not None:
            db.execute(f"PRAGMA key = {key_pragma(key)}")
        # Reading the schema is the first access that decrypts a page: it fails on a wrong key.
        db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        # Freed pages and cells are overwritten with zeros, so deleted mail leaves no residue
        # (an encrypted file zeroes them before encryption); temporary tables stay in memory.
        db.execute("PRAGMA secure_delete = ON")
        db.execute("PRAGMA temp_store = MEMORY")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    except dbapi.Error as exc:
        db.close()
        what = "wrong storage key or not a FluxChat database" if key is not None else str(exc)
        raise StorageError(f"cannot open database {path}: {what}") from exc
    return db


def is_plaintext(path: Path) -> bool:
    """True if `path` is an unencrypted SQLite database (an old store to migrate)."""
    try:
        with open(path, "rb") as file:
            return file.read(len(PLAIN_HEADER)) == PLAIN_HEADER
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc
