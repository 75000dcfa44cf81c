"""Records certified by a node's RSA identity: the one signing rule they all share.

A certified record (mail key record, link key record) is a canonical CBOR array signed with
RSA-PSS-SHA256 by the identity key, over its own domain-separation context followed by the
CBOR encoding of the fields without the signature:

    signature = RSA-PSS-SHA256(context ‖ CBOR([field, …]))

It is worth as much as the key that hashes to the node ID it names: `verify` checks both.
Checking costs one RSA public-key operation; `VerifiedCache` keeps records already checked so
each distinct record costs it once. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from .cbor import dumps
from .cbor_flat import loads_flat
from .errors import FluxError
from .identity import Identity, load_public_key, verify_signature
from .ids import ID_BYTES, id_from_spki
from .records import record

MAX_TIME = 2**63 - 1
_FAILURES = (FluxError, ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm)
T = TypeVar("T")


def signed_payload(context: bytes, fields: list[object]) -> bytes:
    """The bytes an identity signs for a record with these fields."""
    return context + dumps(fields)


def certify(identity: Identity, context: bytes, fields: list[object]) -> bytes:
    return identity.sign(signed_payload(context, fields))


def verify(identity_der: bytes, node_id: bytes, context: bytes, fields: list[object],
           signature: bytes) -> bool:
    """Whether `identity_der` hashes to `node_id` and signed these fields under `context`.
    False for every failure (bad key, wrong ID, bad signature): no detail for an attacker."""
    if id_from_spki(identity_der) != node_id:
        return False
    try:
        return verify_signature(load_public_key(identity_der), signature,
                                signed_payload(context, fields))
    except _FAILURES:
        return False


def is_time(value: object) -> bool:
    """A record time: an int of seconds since the epoch within CBOR's unsigned range."""
    return type(value) is int and 0 <= value <= MAX_TIME


@record
class RecordFields:
    """The fields every certified record has, around its own public keys."""

    node_id: bytes
    created_at: int
    expires_at: int
    keys: tuple[bytes, ...]
    signature: bytes


def decode_fields(data: bytes, version: int, key_sizes: tuple[int, ...],
                  max_lifetime: int) -> RecordFields | None:
    """`[version, node_id, created_at, expires_at, *keys, signature]` with keys of exactly
    `key_sizes` bytes, shape-checked; None if malformed. The signature is NOT checked here."""
    count = 5 + len(key_sizes)
    try:
        fields = loads_flat(data, max_items=count + 1)
    except FluxError:
        return None
    if len(fields) != count:
        return None
    head, node_id, created_at, expires_at, *keys, signature = fields
    ok = (type(head) is int and head == version
          and isinstance(node_id, bytes) and len(node_id) == ID_BYTES
          and is_time(created_at) and is_time(expires_at)
          and created_at < expires_at <= created_at + max_lifetime
          and all(isinstance(key, bytes) and len(key) == size for key, size in zip(keys, key_sizes, strict=True))
          and isinstance(signature, bytes) and 0 < len(signature) <= 1024)
    return RecordFields(node_id, created_at, expires_at, tuple(keys), signature) if ok else None


class VerifiedCache(Generic[T]):
    """Records whose identity signature we already checked, keyed by their exact bytes and
    the exact identity key they were checked under, least recently used dropped first
    (bounded). Exact bytes, not a digest: another record or key never hits, and looking up
    costs one pass of Python's own hash, cheaper than SHA-256 for every envelope. The price:
    each entry keeps the record's bytes and the key (a mail key record and an RSA-4096 key:
    about 2.4 KB, 2.4 MB for 1,024 entries)."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, tuple[bytes, T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def get(self, data: bytes, identity_der: bytes) -> T | None:
        found = self._seen.get(data)
        if found is None or found[0] != identity_der:
            return None
        self._seen.move_to_end(data)
        return found[1]

    def put(self, data: bytes, identity_der: bytes, value: T) -> None:
        """Only for a record that verified under `identity_der`. A record verifies under
        one key alone (the one hashing to the node ID it names), so one entry per record."""
        self._seen[data] = (identity_der, value)
        self._seen.move_to_end(data)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
