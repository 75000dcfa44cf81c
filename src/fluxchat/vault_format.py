"""The storage key file: a random 256-bit key wrapped under the node password (pure: no I/O).

password ──Argon2id(salt, memory, iterations, lanes)──▶ wrapping key
wrapping key ──AES-256-GCM(nonce, associated data = version, KDF name, parameters, salt)──▶ wrapped key

The file is one JSON object (UTF-8, sorted keys) so a person can see what it is:
`{"format": "fluxchat-storage-key", "version": 1, "kdf": "argon2id", "memory_kib": …,
"iterations": …, "lanes": …, "salt": b64, "nonce": b64, "wrapped": b64}`. The parameters travel with
the key, so they can be raised later without breaking old files; because they are also the associated
data, a file whose parameters were edited fails to open like a wrong password. Parameters outside
sane bounds are refused before any work, so a tampered file cannot make us allocate gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from .errors import IdentityError, StorageError
from .records import record

FORMAT = "fluxchat-storage-key"
VERSION = 1
KEY_BYTES = 32
SALT_BYTES = 16
NONCE_BYTES = 12
MAX_FILE_BYTES = 4096


@record
class KdfParams:
    """Argon2id cost (RFC 9106): memory in KiB, passes over it, parallel lanes."""

    memory_kib: int
    iterations: int
    lanes: int = 1

    def check(self) -> None:
        if not 8 * 1024 <= self.memory_kib <= 1024 * 1024:
            raise StorageError(f"Argon2id memory must be 8192..1048576 KiB, got {self.memory_kib}")
        if not 1 <= self.iterations <= 64:
            raise StorageError(f"Argon2id iterations must be 1..64, got {self.iterations}")
        if not 1 <= self.lanes <= 16:
            raise StorageError(f"Argon2id lanes must be 1..16, got {self.lanes}")


# RFC 9106's second recommended setting (64 MiB, 3 passes), one lane: about 0.2 s on an idle core of
# the development machine, 0.4-0.5 s under the load of a shared one (bench/storage.py measures it),
# so that with the private key's PBKDF2 a start stays under 1 s.
DEFAULT_KDF = KdfParams(memory_kib=64 * 1024, iterations=3, lanes=1)


class WrongPassword(IdentityError):
    """The password does not unwrap the storage key (or the file's parameters were altered)."""

    def __init__(self) -> None:
        super().__init__("wrong key password (the storage key does not open)")


def wrapping_key(password: str, params: KdfParams, salt: bytes) -> bytes:
    params.check()
    kdf = Argon2id(salt=salt, length=KEY_BYTES, iterations=params.iterations, lanes=params.lanes,
                   memory_cost=params.memory_kib)
    return kdf.derive(password.encode("utf-8"))


def _associated_data(params: KdfParams, salt: bytes) -> bytes:
    return (f"{FORMAT}|{VERSION}|argon2id|{params.memory_kib}|{params.iterations}|{params.lanes}|"
            .encode("ascii") + salt)


def seal(storage_key: bytes, password: str, params: KdfParams, salt: bytes, nonce: bytes) -> bytes:
    """The file content wrapping `storage_key`; salt and nonce are fresh random bytes."""
    if len(storage_key) != KEY_BYTES or len(salt) != SALT_BYTES or len(nonce) != NONCE_BYTES:
        raise StorageError("storage key, salt or nonce has the wrong length")
    if not password:
        raise IdentityError("an empty key password is not accepted")
    wrapped = AESGCM(wrapping_key(password, params, salt)).encrypt(
        nonce, storage_key, _associated_data(params, salt))
    record = {"format": FORMAT, "version": VERSION, "kdf": "argon2id",
              "memory_kib": params.memory_kib, "iterations": params.iterations,
              "lanes": params.lanes, "salt": _b64(salt), "nonce": _b64(nonce),
              "wrapped": _b64(wrapped)}
    return (json.dumps(record, sort_keys=True) + "\n").encode("ascii")


def unseal(content: bytes, password: str) -> bytes:
    """The storage key; StorageError if the file is damaged, WrongPassword if it does not open."""
    params, salt, nonce, wrapped = parse(content)
    try:
        return AESGCM(wrapping_key(password, params, salt)).decrypt(
            nonce, wrapped, _associated_data(params, salt))
    except InvalidTag:
        raise WrongPassword() from None


def parse(content: bytes) -> tuple[KdfParams, bytes, bytes, bytes]:
    """(parameters, salt, nonce, wrapped key) of a well-formed file, else StorageError."""
    if len(content) > MAX_FILE_BYTES:
        raise StorageError("storage key file is too large")
    try:
        record: Any = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StorageError("storage key file is not JSON (damaged)") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise StorageError("not a FluxChat storage key file")
    if record.get("version") != VERSION or record.get("kdf") != "argon2id":
        raise StorageError(f"storage key file version {record.get('version')!r} is not supported")
    numbers = [record.get(name) for name in ("memory_kib", "iterations", "lanes")]
    if not all(type(n) is int for n in numbers):
        raise StorageError("storage key file: KDF parameters must be integers")
    params = KdfParams(*(int(n) for n in numbers if n is not None))
    params.check()
    salt, nonce, wrapped = (_unb64(record.get(name), name) for name in ("salt", "nonce", "wrapped"))
    if len(salt) != SALT_BYTES or len(nonce) != NONCE_BYTES or len(wrapped) != KEY_BYTES + 16:
        raise StorageError("storage key file: salt, nonce or wrapped key has the wrong length")
    return params, salt, nonce, wrapped


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise StorageError(f"storage key file: {name} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise StorageError(f"storage key file: {name} is not base64") from None
