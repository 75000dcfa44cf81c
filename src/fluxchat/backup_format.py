"""The backup archive: one versioned file, encrypted and authenticated end to end (pure: no I/O).

    "FLUXCHAT-BACKUP\\n"  (16 bytes)
    u32 header length | header (UTF-8 JSON: format, version, node id, created_at, salt,
                                 the storage key file exactly as on disk)
    then chunks:  u32 length | AES-256-GCM ciphertext

Archive key = HKDF-SHA256(storage key, salt from the header, info "fluxchat backup v1"): fresh for
every archive, so the chunk counter can serve as the nonce. Nonce = u64 chunk index | u32 flags
(1 = last chunk); associated data = SHA-256 of magic + header, so no chunk moves to another archive or
position and no header field changes unseen. A chunk's plaintext is `u8 name length | name | data`:
a piece of the named file (a file spans consecutive chunks). The last chunk has an empty name and
a JSON manifest {name: size}, so a truncated archive, a dropped or repeated chunk or trailing
bytes are all refused. Restoring needs the password: it unwraps the storage key in the header.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import StorageError
from .records import record

MAGIC = b"FLUXCHAT-BACKUP\n"
FORMAT = "fluxchat-backup"
VERSION = 1
CHUNK_BYTES = 1 << 20            # plaintext per chunk
MAX_HEADER = 16 * 1024
MAX_FRAME = CHUNK_BYTES + 512     # name, tag and slack
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
_LAST = 1


class ArchiveError(StorageError):
    """The archive is not one of ours, is damaged, truncated, or was made by a newer version."""


@record
class Header:
    node_id: str
    created_at: int
    salt: bytes
    vault: bytes        # the storage key file, wrapped under the password
    raw: bytes          # magic + length + JSON: what the chunks are bound to


def encode_header(node_id: str, created_at: int, salt: bytes, vault: bytes) -> Header:
    record = {"format": FORMAT, "version": VERSION, "node_id": node_id, "created_at": created_at,
              "salt": salt.hex(), "vault": vault.decode("ascii")}
    body = json.dumps(record, sort_keys=True).encode("ascii")
    return Header(node_id, created_at, salt, vault, MAGIC + struct.pack(">I", len(body)) + body)


def header_length(prefix: bytes) -> int:
    """From the first 20 bytes of a file: the length of the JSON header that follows."""
    if len(prefix) < len(MAGIC) + 4 or not prefix.startswith(MAGIC):
        raise ArchiveError("not a FluxChat backup archive")
    (length,) = struct.unpack(">I", prefix[len(MAGIC):len(MAGIC) + 4])
    if not 0 < length <= MAX_HEADER:
        raise ArchiveError("archive header has an impossible length (damaged)")
    return int(length)


def decode_header(prefix: bytes, body: bytes) -> Header:
    try:
        record: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError("archive header is damaged") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ArchiveError("not a FluxChat backup archive")
    if record.get("version") != VERSION:
        raise ArchiveError(f"archive version {record.get('version')!r} is not supported "
                           f"(this FluxChat reads version {VERSION})")
    try:
        salt, vault = bytes.fromhex(record["salt"]), str(record["vault"]).encode("ascii")
        node_id, created_at = str(record["node_id"]), int(record["created_at"])
    except (KeyError, ValueError, TypeError, UnicodeEncodeError):
        raise ArchiveError("archive header is damaged") from None
    if len(salt) != 32:
        raise ArchiveError("archive header is damaged")
    return Header(node_id, created_at, salt, vault, prefix + body)


def archive_key(storage_key: bytes, header: Header) -> AESGCM:
    key = HKDF(hashes.SHA256(), 32, header.salt, b"fluxchat backup v1").derive(storage_key)
    return AESGCM(key)


def _nonce(index: int, last: bool) -> bytes:
    return struct.pack(">QI", index, _LAST if last else 0)


def _bound(header: Header) -> bytes:
    return hashlib.sha256(header.raw).digest()


def seal_chunk(aead: AESGCM, header: Header, index: int, name: str, data: bytes,
               last: bool = False) -> bytes:
    """One framed chunk: a piece of file `name`, or (last) the manifest with an empty name."""
    raw_name = name.encode("ascii")
    sealed = aead.encrypt(_nonce(index, last), bytes([len(raw_name)]) + raw_name + data,
                          _bound(header))
    return struct.pack(">I", len(sealed)) + sealed


def frame_length(prefix: bytes) -> int:
    if len(prefix) < 4:
        raise ArchiveError("archive is truncated (it ends before its last chunk)")
    (length,) = struct.unpack(">I", prefix)
    if not 16 < length <= MAX_FRAME:
        raise ArchiveError("archive chunk has an impossible length (damaged)")
    return int(length)


def open_chunk(aead: AESGCM, header: Header, index: int, sealed: bytes) -> tuple[bool, str, bytes]:
    """(last, name, data) of chunk `index`; ArchiveError if it fails its check."""
    for last in (False, True):
        try:
            plain = aead.decrypt(_nonce(index, last), sealed, _bound(header))
        except InvalidTag:
            continue
        name_len = plain[0]
        name = plain[1:1 + name_len].decode("ascii", "replace")
        if last != (name_len == 0) or (name_len and not SAFE_NAME.fullmatch(name)):
            raise ArchiveError(f"archive chunk {index} is malformed")
        return last, name, plain[1 + name_len:]
    raise ArchiveError(f"archive is damaged: chunk {index} fails its integrity check "
                       "(or the archive belongs to another storage key)")


def encode_manifest(sizes: dict[str, int]) -> bytes:
    return json.dumps(sizes, sort_keys=True).encode("ascii")


def check_manifest(data: bytes, sizes: dict[str, int]) -> None:
    try:
        expected = json.loads(data.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArchiveError("archive manifest is damaged") from None
    if expected != sizes:
        raise ArchiveError("archive contents do not match its manifest (chunks missing)")
