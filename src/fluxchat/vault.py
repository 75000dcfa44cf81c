"""The storage key on disk: create, unlock, keep two copies, change the password crash-safely.

Files in the data directory (all 0600):
- `storage_key.json`: the random storage key wrapped under the password (format: vault_format.py);
- `storage_key.copy.json`: the same bytes, written after it, read only if the first is missing or
  damaged (a torn disk block should not cost the mailbox);
- during a password change, `private_key.pem.new` and `storage_key.json.new`.

A password change touches two files (the wrapped storage key and the encrypted private key), which
no single rename can replace together. So it is a small redo log: both new files are written and
synced first, and the rename that creates `storage_key.json.new` is the commit point. `recover()`
runs before every unlock: with `storage_key.json.new` present it rolls forward (renames, no password
needed); without it, it discards a half-written `private_key.pem.new`. Whenever the process dies,
exactly one password opens both the storage key and the private key afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import IdentityError, StorageError
from .identity import PRIVATE_KEY_FILE, encrypt_private_key, load_identity, write_secret_file
from .vault_format import KEY_BYTES, NONCE_BYTES, SALT_BYTES, KdfParams, seal, unseal

VAULT_FILE = "storage_key.json"
VAULT_COPY = "storage_key.copy.json"
PENDING = ".new"
KDF_MEMORY_ENV = "FLUXCHAT_STORAGE_KDF_MEMORY_KIB"
KDF_ITERATIONS_ENV = "FLUXCHAT_STORAGE_KDF_ITERATIONS"


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` (0600) so that a crash leaves the old or the new content, whole."""
    tmp = path.with_name(path.name + ".tmp")
    write_secret_file(tmp, data)
    os.replace(tmp, path)
    fsync_path(path.parent)


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory so that the renames in it survive a power loss too."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exists(data_dir: Path) -> bool:
    return (data_dir / VAULT_FILE).exists() or (data_dir / VAULT_COPY).exists()


def create(data_dir: Path, password: str, params: KdfParams) -> bytes:
    """A fresh random storage key, wrapped and written twice; returns the key."""
    key = os.urandom(KEY_BYTES)
    content = seal(key, password, params, os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES))
    _write_pair(data_dir, content)
    return key


def read(data_dir: Path) -> bytes:
    """The current wrapped-key file content (the copy if the first file is missing)."""
    for name in (VAULT_FILE, VAULT_COPY):
        try:
            return (data_dir / name).read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StorageError(f"{data_dir / name}: {exc.strerror}") from exc
    raise StorageError(f"{data_dir}: no {VAULT_FILE}")


def unlock(data_dir: Path, password: str) -> bytes:
    """The storage key. Falls back to the copy only when the first file is missing or damaged,
    then repairs the damaged one; a wrong password is WrongPassword either way."""
    recover(data_dir)
    contents = []
    for name in (VAULT_FILE, VAULT_COPY):
        try:
            contents.append((data_dir / name).read_bytes())
        except FileNotFoundError:
            contents.append(b"")
        except OSError as exc:
            raise StorageError(f"{data_dir / name}: {exc.strerror}") from exc
    first, copy = contents
    try:
        key = unseal(first, password)   # WrongPassword (an IdentityError) passes through
    except StorageError as damaged:
        if not copy:
            raise StorageError(f"{data_dir / VAULT_FILE}: {damaged}") from None
        key = unseal(copy, password)
        write_atomic(data_dir / VAULT_FILE, copy)
        return key
    if copy != first:   # the copy lags after a crash between the two writes, or is damaged
        write_atomic(data_dir / VAULT_COPY, first)
    return key


def _write_pair(data_dir: Path, content: bytes) -> None:
    write_atomic(data_dir / VAULT_FILE, content)
    write_atomic(data_dir / VAULT_COPY, content)


def change_password(data_dir: Path, old: str, new: str, params: KdfParams,
                    pkcs8_iterations: int) -> None:
    """Re-wrap the storage key and re-encrypt the private key under `new` (node stopped).

    The storage key itself does not change, so the database is not rewritten."""
    if not new:
        raise IdentityError("an empty key password is not accepted")
    key = unlock(data_dir, old)
    identity = load_identity(data_dir, old)
    sealed = seal(key, new, params, os.urandom(SALT_BYTES), os.urandom(NONCE_BYTES))
    write_atomic(data_dir / (PRIVATE_KEY_FILE + PENDING),
                 encrypt_private_key(identity.private_key, new, pkcs8_iterations))
    write_atomic(data_dir / (VAULT_FILE + PENDING), sealed)   # the commit point
    recover(data_dir)


def recover(data_dir: Path) -> str | None:
    """Finish ("committed") or undo ("rolled back") an interrupted password change; None if
    there was none. Idempotent: a crash during recovery is recovered by the next call."""
    pending_vault = data_dir / (VAULT_FILE + PENDING)
    pending_key = data_dir / (PRIVATE_KEY_FILE + PENDING)
    for leftover in (VAULT_FILE + PENDING + ".tmp", PRIVATE_KEY_FILE + PENDING + ".tmp"):
        (data_dir / leftover).unlink(missing_ok=True)
    if pending_vault.exists():
        if pending_key.exists():
            os.replace(pending_key, data_dir / PRIVATE_KEY_FILE)
        content = pending_vault.read_bytes()
        write_atomic(data_dir / VAULT_COPY, content)
        os.replace(pending_vault, data_dir / VAULT_FILE)
        fsync_path(data_dir)
        return "committed"
    if pending_key.exists():
        pending_key.unlink()
        fsync_path(data_dir)
        return "rolled back"
    return None


def params_from_env(default: KdfParams) -> KdfParams:
    """Argon2id cost for a new key file: the defaults, or the environment's (tests lower them)."""
    values = []
    for name, fallback in ((KDF_MEMORY_ENV, default.memory_kib),
                           (KDF_ITERATIONS_ENV, default.iterations)):
        text = os.environ.get(name)
        try:
            values.append(int(text) if text else fallback)
        except ValueError:
            raise StorageError(f"{name}: expected an integer, got {text!r}") from None
    params = KdfParams(values[0], values[1], default.lanes)
    params.check()
    return params
