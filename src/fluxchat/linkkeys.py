"""Link keys: a short-lived Ed25519 key per node, certified by its RSA identity, that
authenticates peer links so a new link costs no RSA private-key operation.

The acceptor's TLS certificate carries the Ed25519 link key, and TLS 1.3 makes it sign the
handshake with it; the dialer signs the TLS session's channel binding with its own link key.
Each side shows its link key record, which ties the link key to the node ID:

    record    = [version=1, node_id bstr32, created_at uint, expires_at uint,
                 link_key bstr32 (Ed25519), signature]
    signature = RSA-PSS-SHA256(LINK_CONTEXT ‖ CBOR(record without its signature))
    dialer's proof = Ed25519(link_key, AUTH_CONTEXT ‖ CBOR([binding, dialer_id, acceptor_id]))

The link key never leaves memory: a node makes a new one at start and whenever its record
has lived half its life. Pure: no I/O, no clock; the caller passes `now` and the seed.
"""

from __future__ import annotations

import functools

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import certified
from .cbor import dumps
from .errors import FluxError
from .identity import Identity
from .ids import id_from_spki
from .records import record

RECORD_VERSION = 1
LINK_CONTEXT = b"fluxchat-linkkey-v1\x00"
AUTH_CONTEXT = b"fluxchat-link-auth-v2\x00"
LINK_KEY_BYTES = 32
SIGNATURE_BYTES = 64
MAX_RECORD_BYTES = 1200      # RSA-8192 identity: 1,024-byte signature + 70 bytes of fields
MAX_LIFETIME = 7 * 86400     # a record may not claim validity beyond this
LIFETIME = 2 * 86400         # what our own records claim; renewed after half of it
CLOCK_SKEW = 600             # a record may be dated this far ahead of our clock


class LinkKeyError(FluxError):
    """A link key record is malformed, not signed by its node, or not valid now."""


@record
class LinkKeyRecord:
    node_id: bytes
    created_at: int
    expires_at: int
    link_key: bytes
    signature: bytes

    def fields(self) -> list[object]:
        """The signed fields, in wire order."""
        return [RECORD_VERSION, self.node_id, self.created_at, self.expires_at, self.link_key]

    def encode(self) -> bytes:
        return dumps([*self.fields(), self.signature])

    def valid_at(self, now: int) -> bool:
        return self.created_at - CLOCK_SKEW <= now < self.expires_at


@record
class LinkCredentials:
    """What a node shows and signs with on its links: its identity key (SPKI DER), its
    current link key record (encoded) and the record's Ed25519 private key."""

    identity_der: bytes
    node_id: bytes
    record: LinkKeyRecord
    encoded: bytes
    private_key: ed25519.Ed25519PrivateKey

    @classmethod
    def issue(cls, identity: Identity, seed: bytes, now: int,
              lifetime: int = LIFETIME) -> LinkCredentials:
        """A new link key from a 32-byte `seed`, certified by `identity` (one RSA signature)."""
        if not 0 < lifetime <= MAX_LIFETIME:
            raise ValueError(f"a link key record lives 1 s .. {MAX_LIFETIME} s")
        private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        unsigned = LinkKeyRecord(identity.node_id, now, now + lifetime,
                                 private.public_key().public_bytes_raw(), b"")
        signature = certified.certify(identity, LINK_CONTEXT, unsigned.fields())
        record = LinkKeyRecord(unsigned.node_id, now, now + lifetime, unsigned.link_key,
                               signature)
        return cls(identity.public_der, identity.node_id, record, record.encode(), private)

    def renewal_due(self, now: int) -> bool:
        """After half its life (or a clock that jumped back), a record is replaced."""
        record = self.record
        return not record.created_at <= now < (record.created_at + record.expires_at) // 2

    def prove(self, binding: bytes, dialer_id: bytes, acceptor_id: bytes) -> bytes:
        return self.private_key.sign(auth_payload(binding, dialer_id, acceptor_id))


def auth_payload(binding: bytes, dialer_id: bytes, acceptor_id: bytes) -> bytes:
    """What a dialer signs: this TLS session (so the proof is useless on any other link)
    and both identities."""
    return AUTH_CONTEXT + dumps([binding, dialer_id, acceptor_id])


def decode_record(data: bytes) -> LinkKeyRecord:
    """The record's fields, shape-checked; the signature is NOT checked here."""
    if len(data) > MAX_RECORD_BYTES:
        raise LinkKeyError("link key record too large")
    fields = certified.decode_fields(data, RECORD_VERSION, (LINK_KEY_BYTES,), MAX_LIFETIME)
    if fields is None:
        raise LinkKeyError("malformed link key record")
    return LinkKeyRecord(fields.node_id, fields.created_at, fields.expires_at, fields.keys[0],
                         fields.signature)


class RecordCheck:
    """Checks link key records against the identity key they name; each distinct record
    costs one RSA verification (cached, bounded), its validity time is checked every use."""

    def __init__(self, size: int = 4096) -> None:
        self._verified: certified.VerifiedCache[LinkKeyRecord] = certified.VerifiedCache(size)

    def check(self, data: bytes, identity_der: bytes, now: int) -> LinkKeyRecord:
        """The record of the node whose identity key is `identity_der`, valid at `now`."""
        record = self._verified.get(data, identity_der)
        if record is None:
            record = decode_record(data)
            if not certified.verify(identity_der, record.node_id, LINK_CONTEXT,
                                    record.fields(), record.signature):
                raise LinkKeyError("link key record does not verify")
            if not _loads(record.link_key):
                raise LinkKeyError("link key record holds no Ed25519 key")
            self._verified.put(data, identity_der, record)
        if not record.valid_at(now):
            raise LinkKeyError("link key record expired or dated in the future")
        return record

    def node_id(self, data: bytes, identity_der: bytes, now: int) -> bytes:
        self.check(data, identity_der, now)
        return id_from_spki(identity_der)


def verify_proof(record: LinkKeyRecord, signature: bytes, binding: bytes, dialer_id: bytes,
                 acceptor_id: bytes) -> bool:
    try:
        _public(record.link_key).verify(signature, auth_payload(binding, dialer_id,
                                                                acceptor_id))
    except (InvalidSignature, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=1024)
def _public(link_key: bytes) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(link_key)


def _loads(link_key: bytes) -> bool:
    try:
        _public(link_key)
    except ValueError:
        return False
    return True
