"""At start: unlock (or create) the storage key and encrypt an old plaintext database in place.

The migration never has a moment where the mailbox exists only half-written:
1. the plaintext database folds its write-ahead log into the file (journal_mode DELETE), so no
   stray `-wal` file can later be replayed onto the new database;
2. SQLCipher's `sqlcipher_export` copies every table into `fluxchat.db.encrypting`, which is then
   checked (row counts of every table, page HMACs) and synced;
3. one rename puts it in place of the plaintext file: before it the old file is whole and the next
   start simply begins again; after it the encrypted file is whole;
4. the old file's blocks are overwritten with zeros through a second name made before the rename
   (best effort: a copy-on-write or flash file system may keep old blocks; see docs/STORAGE.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import StorageError
from .sqldb import dbapi, is_plaintext, key_pragma, open_database
from .vault import create, exists, fsync_path, unlock
from .vault_format import KdfParams

log = logging.getLogger("fluxchat.vault")

ENCRYPTING = ".encrypting"
OLD_PLAINTEXT = ".plaintext"
_SIDE_FILES = ("", "-journal", "-wal", "-shm")


def unlock_storage(data_dir: Path, db_path: Path, password: str, params: KdfParams) -> bytes:
    """The storage key for this node, creating it on first use, with `db_path` encrypted under it.

    Call after the private key opened with `password`, so a typo never creates a second key."""
    if exists(data_dir):
        key = unlock(data_dir, password)
    elif db_path.exists() and not is_plaintext(db_path) and db_path.stat().st_size > 0:
        raise StorageError(f"{db_path} is encrypted but {data_dir}/storage_key.json is missing; "
                           "restore the data directory from a backup")
    else:
        key = create(data_dir, password, params)
        log.info("created a new storage key")
    if encrypt_in_place(db_path, key):
        log.info("encrypted the existing plaintext database")
    for leftover in db_path.parent.glob(db_path.name + ".backup-*"):   # from a killed backup
        leftover.unlink()
    return key


def encrypt_in_place(db_path: Path, key: bytes) -> bool:
    """Replace a plaintext SQLite database at `db_path` by an encrypted copy; False if there was
    nothing to do (no file, an empty one, or already encrypted)."""
    _wipe_old_plaintext(db_path)
    if not is_plaintext(db_path):
        return False
    tmp = db_path.with_name(db_path.name + ENCRYPTING)
    for suffix in _SIDE_FILES:
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    counts = _export(db_path, tmp, key)
    _verify(tmp, key, counts)
    fsync_path(tmp)
    old = db_path.with_name(db_path.name + OLD_PLAINTEXT)
    old.unlink(missing_ok=True)
    os.link(db_path, old)
    os.replace(tmp, db_path)
    fsync_path(db_path.parent)
    _wipe_old_plaintext(db_path)
    return True


def _export(db_path: Path, tmp: Path, key: bytes) -> dict[str, int]:
    plain = open_database(db_path, None)
    try:
        plain.execute("PRAGMA journal_mode = DELETE")   # checkpoints and removes the -wal file
        version = int(plain.execute("PRAGMA user_version").fetchone()[0])
        counts = _counts(plain)
        plain.execute(f"ATTACH DATABASE ? AS encrypted KEY {key_pragma(key)}", (str(tmp),))
        plain.execute("SELECT sqlcipher_export('encrypted')")
        plain.execute(f"PRAGMA encrypted.user_version = {version}")   # export skips it
        plain.execute("DETACH DATABASE encrypted")
        return counts
    except dbapi.Error as exc:
        raise StorageError(f"encrypting {db_path} failed: {exc}") from exc
    finally:
        plain.close()


def _verify(tmp: Path, key: bytes, expected: dict[str, int]) -> None:
    db = open_database(tmp, key)
    try:
        problems = db.execute("PRAGMA cipher_integrity_check").fetchall()
        if problems or _counts(db) != expected:
            raise StorageError(f"the encrypted copy {tmp} does not match the original; "
                               "the plaintext database is left as it was")
    except dbapi.Error as exc:
        raise StorageError(f"checking {tmp} failed: {exc}") from exc
    finally:
        db.close()


def _counts(db: dbapi.Connection) -> dict[str, int]:
    tables = [row[0] for row in db.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    # Table names come from the schema itself, quoted as identifiers.
    return {t: int(db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]) for t in tables}


def _wipe_old_plaintext(db_path: Path) -> None:
    """Zero and remove the second name of a replaced plaintext file (left by a crash too).
    If the rename had not happened, the name still points at the live database: only unlink."""
    old = db_path.with_name(db_path.name + OLD_PLAINTEXT)
    if not old.exists():
        return
    if not (db_path.exists() and os.path.samefile(old, db_path)):
        size = old.stat().st_size
        with open(old, "r+b") as file:
            chunk = b"\0" * 65536
            file.writelines(chunk for _ in range(0, size, len(chunk)))
            file.flush()
            os.fsync(file.fileno())
    old.unlink()
    fsync_path(db_path.parent)
