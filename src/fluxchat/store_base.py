"""The plumbing every part of the node's store shares: the connection, transactions, queries,
and the observers told about committed changes.

An adapter: it does SQLite I/O but reads no clock; callers pass `now` (unix seconds). Every
dbapi.Error becomes a StorageError here. Every state change runs in one `BEGIN IMMEDIATE …
COMMIT` transaction (or inside a group commit, see store_batch), so a crash never leaves half a
change behind.

Durability (see store_schema.connect): WAL with `synchronous=NORMAL`, so a method that returned
has its commit in the WAL file and survives the process being killed the next instant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar

from .sqldb import dbapi
from .store_schema import connect, fail, transaction

# Told (topic "inbox" or "outbox", uuid) after each committed change to a mail.
StoreObserver = Callable[[str, bytes], None]

S = TypeVar("S", bound="StoreBase")


class StoreBase:
    """One SQLite database per node. Not thread-safe: use it from the event loop thread only."""

    def __init__(self, db: dbapi.Connection) -> None:
        self._db = db
        self.observers: list[StoreObserver] = []
        self._closed = False

    @classmethod
    def open(cls: type[S], path: Path, key: bytes | None = None) -> S:
        """Open (creating it 0600 if needed) and migrate the database at `path`, encrypted with the
        32-byte storage `key` (see vault.py); without one the file is plain SQLite (tests only)."""
        return cls(connect(Path(path), key))

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database and empty it, so pages that deleted rows
        left in the log do not linger (secure_delete then has zeroed them in the database)."""
        self._rows("PRAGMA wal_checkpoint(TRUNCATE)")

    def release_memory(self) -> None:
        """Give back SQLite's page cache (the decrypted pages; the next reads decrypt them
        again) and whatever else SQLite holds unused: after a burst it held 0.8 MiB more
        than an idle node (bench/README.md, "A node after a burst of mail")."""
        self._rows("PRAGMA shrink_memory")

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
