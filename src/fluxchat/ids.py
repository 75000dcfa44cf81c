"""Node IDs: SHA-256 of the DER SubjectPublicKeyInfo, written as `FC_` + base58."""

from __future__ import annotations

import functools
import hashlib

from .errors import FluxError

ID_PREFIX = "FC_"
ID_BYTES = 32
ID_BITS = ID_BYTES * 8
B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(B58_ALPHABET)}


class IdError(FluxError):
    """A string is not a well-formed node ID."""


def b58encode(data: bytes) -> str:
    """Base58 (Bitcoin alphabet); each leading zero byte becomes a leading '1'."""
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, rem = divmod(number, 58)
        digits.append(B58_ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        if char not in _B58_INDEX:
            raise IdError(f"invalid base58 character {char!r}")
        number = number * 58 + _B58_INDEX[char]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return b"\0" * zeros + body


def id_from_spki(spki_der: bytes) -> bytes:
    """The 32-byte node ID of a DER-encoded SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der).digest()


@functools.lru_cache(maxsize=1024)   # every mail's log lines and history name its peer
def format_id(node_id: bytes) -> str:
    if len(node_id) != ID_BYTES:
        raise IdError(f"a node ID has {ID_BYTES} bytes, got {len(node_id)}")
    return ID_PREFIX + b58encode(node_id)


def parse_id(text: str) -> bytes:
    """Parse `FC_…`; raises IdError with a message fit for a user."""
    if not isinstance(text, str) or not text.startswith(ID_PREFIX):
        raise IdError(f"not a node ID (expected {ID_PREFIX}…): {str(text)[:80]!r}")
    raw = b58decode(text[len(ID_PREFIX):])
    if len(raw) != ID_BYTES or format_id(raw) != text:
        raise IdError(f"not a node ID (bad length or encoding): {text[:80]!r}")
    return raw


def short_id(node_id: bytes) -> str:
    """A short form for logs: enough to tell nodes apart, never used for trust."""
    return format_id(node_id)[:11]


def distance(a: bytes, b: bytes) -> int:
    """Kademlia XOR distance between two IDs, as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def fingerprint(node_id: bytes) -> str:
    """Colon-separated lower-case hex, the form `openssl dgst -sha256 -c` prints."""
    return ":".join(f"{b:02x}" for b in node_id)
