"""Write a backup archive of a node (running) and restore one into an empty data directory.

The archive (format: backup_format.py) holds the identity files, the bootstrap list if any, and a
consistent snapshot of the database taken by SQLCipher's export inside one read transaction, so
mail arriving meanwhile is either wholly in it or not at all. The snapshot is encrypted under the
storage key like the live database, and the archive once more under a key derived from it.

Restoring reads and checks the whole archive into a staging directory beside the target, opens
the private key and the database there with the password, and only then renames the staging
directory into place: a wrong password, a damaged or truncated archive, or a crash leaves the
target as it was (a crash at most leaves a `.restoring-PID` directory, removed by the next try).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .backup_format import (
    CHUNK_BYTES,
    MAGIC,
    ArchiveError,
    Header,
    archive_key,
    check_manifest,
    decode_header,
    encode_header,
    encode_manifest,
    frame_length,
    header_length,
    open_chunk,
    seal_chunk,
)
from .errors import StorageError
from .identity import CERTIFICATE_FILE, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, load_identity
from .sqldb import dbapi, key_pragma, open_database
from .vault import VAULT_COPY, VAULT_FILE, fsync_path, read, write_atomic
from .vault_format import unseal

DB_NAME = "fluxchat.db"
FILES = (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, CERTIFICATE_FILE, "bootstrap.json")


def write_backup(data_dir: Path, storage_key: bytes, target: Path, node_id: str,
                 now: int) -> int:
    """Write the archive to `target` (which must not exist; created 0600); returns its size."""
    if target.exists():
        raise StorageError(f"{target} exists; choose a new file name")
    _remove_dead(target.parent, f"{target.name}.partial-*")
    header = encode_header(node_id, now, os.urandom(32), read(data_dir))
    snapshot = data_dir / f"{DB_NAME}.backup-{os.getpid()}"
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    try:
        _snapshot(data_dir / DB_NAME, snapshot, storage_key)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(header.raw)
            _write_chunks(out, header, storage_key, data_dir, snapshot)
            out.flush()
            os.fsync(out.fileno())
        os.link(partial, target)   # fails rather than overwrite a file made meanwhile
        fsync_path(target.parent)
        return target.stat().st_size
    except OSError as exc:
        raise StorageError(f"cannot write backup {target}: {exc.strerror or exc}") from exc
    finally:
        for leftover in (snapshot, partial):
            leftover.unlink(missing_ok=True)


def _snapshot(db_path: Path, snapshot: Path, key: bytes) -> None:
    db = open_database(db_path, key)
    try:
        db.execute(f"ATTACH DATABASE ? AS snapshot KEY {key_pragma(key)}", (str(snapshot),))
        db.execute("BEGIN")   # one read transaction: the export sees one moment
        db.execute("SELECT sqlcipher_export('snapshot')")
        version = int(db.execute("PRAGMA main.user_version").fetchone()[0])
        db.execute(f"PRAGMA snapshot.user_version = {version}")
        db.execute("COMMIT")
        db.execute("DETACH DATABASE snapshot")
    except dbapi.Error as exc:
        raise StorageError(f"database snapshot failed: {exc}") from exc
    finally:
        db.close()


def _write_chunks(out: BinaryIO, header: Header, storage_key: bytes, data_dir: Path,
                  snapshot: Path) -> None:
    aead, index = archive_key(storage_key, header), 0
    sizes: dict[str, int] = {}
    sources = [(name, data_dir / name) for name in FILES if (data_dir / name).exists()]
    for name, path in [*sources, (DB_NAME, snapshot)]:
        sizes[name] = 0
        for piece in _pieces(path):
            out.write(seal_chunk(aead, header, index, name, piece))
            index, sizes[name] = index + 1, sizes[name] + len(piece)
    out.write(seal_chunk(aead, header, index, "", encode_manifest(sizes), last=True))


def _pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as file:
        while piece := file.read(CHUNK_BYTES):
            yield piece


def restore(archive: Path, data_dir: Path, password: str) -> str:
    """Restore `archive` into `data_dir` (missing or empty); returns the node ID it holds."""
    if data_dir.exists() and (not data_dir.is_dir() or any(data_dir.iterdir())):
        raise StorageError(f"{data_dir} is not empty; restore only into a new, empty data directory")
    _remove_dead(data_dir.parent, f"{data_dir.name}.restoring-*")
    staging = data_dir.with_name(f"{data_dir.name}.restoring-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)   # a stale one from an earlier process with our pid
    staging.mkdir(mode=0o700, parents=True)
    try:
        node_id = _unpack(archive, staging, password)
        if data_dir.exists():
            data_dir.rmdir()   # empty, checked above
        os.replace(staging, data_dir)
        fsync_path(data_dir.parent)
        return node_id
    except OSError as exc:
        raise StorageError(f"cannot restore {archive}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_dead(directory: Path, pattern: str) -> None:
    """Partial archives and staging directories (NAME-PID) of killed processes."""
    for leftover in directory.glob(pattern):
        pid = leftover.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unpack(archive: Path, staging: Path, password: str) -> str:
    with open(archive, "rb") as src:
        prefix = src.read(len(MAGIC) + 4)
        body = src.read(header_length(prefix))
        header = decode_header(prefix, body)
        storage_key = unseal(header.vault, password)   # WrongPassword says so clearly
        aead, index = archive_key(storage_key, header), 0
        sizes: dict[str, int] = {}
        while True:
            length = frame_length(src.read(4))
            sealed = src.read(length)
            if len(sealed) != length:
                raise ArchiveError("archive is truncated (it ends inside a chunk)")
            last, name, data = open_chunk(aead, header, index, sealed)
            if last:
                check_manifest(data, sizes)
                break
            if name not in sizes and name not in (*FILES, DB_NAME):
                raise ArchiveError(f"archive holds an unexpected file {name!r}")
            _append(staging / name, data)
            sizes[name] = sizes.get(name, 0) + len(data)
            index += 1
        if src.read(1):
            raise ArchiveError("archive has bytes after its last chunk (damaged)")
    for name in (VAULT_FILE, VAULT_COPY):
        write_atomic(staging / name, header.vault)
    identity = load_identity(staging, password)
    if identity.id_text != header.node_id:
        raise ArchiveError("archive's private key does not match the node ID in its header")
    open_database(staging / DB_NAME, storage_key).close()
    _sync_all(staging)
    return identity.id_text


def _append(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as file:
        file.write(data)


def _sync_all(directory: Path) -> None:
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_path(directory)

