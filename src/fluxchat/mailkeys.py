"""Mail key records: the node's rotating mail keys, certified by its RSA identity.

A record holds an Ed25519 signing key (envelope v2 signatures) and an HPKE prekey
(`MLKEM768_X25519`: ML-KEM-768 and X25519 combined, so mail stays secret unless both break),
with the times it is valid. The RSA identity signs it, so a record is worth exactly as much
as the key that hashes to the node ID. Erasing a prekey's private half after the mail sealed
to it can no longer arrive gives forward secrecy: a later theft of the RSA key and password
opens nothing sealed to an erased prekey.

Byte layout (canonical CBOR, see cbor.py):
    record    = [version=1, node_id bstr32, created_at uint, expires_at uint,
                 sign_key bstr32 (Ed25519), prekey bstr1216 (ML-KEM-768 ‖ X25519), signature]
    signature = RSA-PSS-SHA256(RECORD_CONTEXT ‖ CBOR(record without its signature))
    prekey_id = SHA-256(prekey)[:16]          (names the prekey in envelope v2 headers)

Pure: no I/O, no clock; the caller passes `now` and the secret seeds (os.urandom).
"""

from __future__ import annotations

import functools
import hashlib

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import certified
from .cbor import dumps
from .errors import FluxError
from .identity import Identity
from .ids import id_from_spki
from .pkcs8 import rsa_private_key_info
from .prekey_keys import mlkem_private, mlkem_public, x25519_private, x25519_public  # see there
from .records import record

RECORD_VERSION = 1
# Domain separation: a record signature is neither a mail nor a handshake signature.
RECORD_CONTEXT = b"fluxchat-mailkey-v1\x00"
SIGN_KEY_BYTES = 32
MLKEM_PUBLIC_BYTES = 1184
X25519_BYTES = 32
PREKEY_BYTES = MLKEM_PUBLIC_BYTES + X25519_BYTES
MLKEM_SEED_BYTES = 64
SECRET_BYTES = SIGN_KEY_BYTES + MLKEM_SEED_BYTES + X25519_BYTES   # what a record's owner keeps
PREKEY_ID_BYTES = 16
MAX_RECORD_BYTES = 2048
MAX_LIFETIME = 31 * 86400   # a record may not claim validity beyond this
CLOCK_SKEW = 600            # a record may be dated this far ahead of our clock
_FAILURES = (FluxError, ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm)


class MailKeyError(FluxError):
    """A mail key record is malformed, not signed by its node, expired, or out of date."""


@record
class MailKeyRecord:
    node_id: bytes
    created_at: int
    expires_at: int
    sign_key: bytes
    prekey: bytes
    signature: bytes

    @functools.cached_property
    def prekey_id(self) -> bytes:
        return prekey_id(self.prekey)

    def encode(self) -> bytes:
        return dumps([*_signed_fields(self.node_id, self.created_at, self.expires_at,
                                      self.sign_key, self.prekey), self.signature])

    def valid_at(self, moment: int) -> bool:
        """Whether the owner may have used this record at `moment` (skew allowed)."""
        return self.created_at - CLOCK_SKEW <= moment < self.expires_at


@record
class MailKeySecrets:
    """The private halves of one record: the Ed25519 seed and the prekey seeds."""
    raw: bytes   # SECRET_BYTES: sign seed ‖ ML-KEM seed ‖ X25519 private

    def __post_init__(self) -> None:
        if len(self.raw) != SECRET_BYTES:
            raise ValueError(f"mail key secrets must be {SECRET_BYTES} bytes")

    def signing_key(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.from_private_bytes(self.raw[:SIGN_KEY_BYTES])

    def prekey_private(self) -> hpke.MLKEM768X25519PrivateKey:
        seed = self.raw[SIGN_KEY_BYTES:SIGN_KEY_BYTES + MLKEM_SEED_BYTES]
        dh = self.raw[SIGN_KEY_BYTES + MLKEM_SEED_BYTES:]
        return hpke.MLKEM768X25519PrivateKey(mlkem_private(seed), x25519_private(dh))

    def public_halves(self) -> tuple[bytes, bytes]:
        """(Ed25519 public key, prekey public bytes) as a record carries them."""
        sign_key = self.signing_key().public_key().public_bytes_raw()
        seed = self.raw[SIGN_KEY_BYTES:SIGN_KEY_BYTES + MLKEM_SEED_BYTES]
        kem = mlkem_private(seed).public_key().public_bytes_raw()
        dh = x25519_private(self.raw[SIGN_KEY_BYTES + MLKEM_SEED_BYTES:]).public_key().public_bytes_raw()
        return sign_key, kem + dh


@functools.lru_cache(maxsize=256)
def sign_key_public(sign_key: bytes) -> ed25519.Ed25519PublicKey:
    return ed25519.Ed25519PublicKey.from_public_bytes(sign_key)


def prekey_id(prekey: bytes) -> bytes:
    return hashlib.sha256(prekey).digest()[:PREKEY_ID_BYTES]


def _signed_fields(node_id: bytes, created_at: int, expires_at: int, sign_key: bytes,
                   prekey: bytes) -> list[object]:
    return [RECORD_VERSION, node_id, created_at, expires_at, sign_key, prekey]


def _fields_of(record: MailKeyRecord) -> list[object]:
    return _signed_fields(record.node_id, record.created_at, record.expires_at,
                          record.sign_key, record.prekey)


def signed_bytes(record: MailKeyRecord) -> bytes:
    """What the RSA identity signs."""
    return certified.signed_payload(RECORD_CONTEXT, _fields_of(record))


def make_record(identity: Identity, secrets: MailKeySecrets, created_at: int,
                expires_at: int) -> MailKeyRecord:
    """Certify the public halves of `secrets` with the node's RSA key."""
    if not 0 <= created_at < expires_at <= created_at + MAX_LIFETIME:
        raise ValueError(f"a record lives 1 s .. {MAX_LIFETIME} s from its creation")
    sign_key, prekey = secrets.public_halves()
    unsigned = MailKeyRecord(identity.node_id, created_at, expires_at, sign_key, prekey, b"")
    return MailKeyRecord(identity.node_id, created_at, expires_at, sign_key, prekey,
                         certified.certify(identity, RECORD_CONTEXT, _fields_of(unsigned)))


# ----- parsing and checking (hostile input: every failure is MailKeyError) ---------------


def decode_record(data: bytes) -> MailKeyRecord:
    """The record's fields, shape-checked; the signature is NOT checked here."""
    if len(data) > MAX_RECORD_BYTES:
        raise MailKeyError("mail key record too large")
    fields = certified.decode_fields(data, RECORD_VERSION, (SIGN_KEY_BYTES, PREKEY_BYTES),
                                     MAX_LIFETIME)
    if fields is None:
        raise MailKeyError("malformed mail key record")
    sign_key, prekey = fields.keys
    return MailKeyRecord(fields.node_id, fields.created_at, fields.expires_at, sign_key, prekey,
                         fields.signature)


def check_record(data: bytes, node_id: bytes, identity_der: bytes) -> MailKeyRecord:
    """A record of `node_id` whose signature verifies under the key hashing to it.
    Time is the caller's concern (see `valid_at`, `accept_for_directory`)."""
    record = decode_record(data)
    if record.node_id != node_id or id_from_spki(identity_der) != node_id:
        raise MailKeyError("mail key record belongs to another node")
    if not certified.verify(identity_der, node_id, RECORD_CONTEXT, _fields_of(record),
                            record.signature):
        raise MailKeyError("mail key record does not verify")
    try:
        # Both public halves must load, or nobody can use the record.
        sign_key_public(record.sign_key)
        prekey_public(record.prekey)
    except _FAILURES:
        raise MailKeyError("mail key record does not verify") from None
    return record


def accept_for_directory(record: MailKeyRecord, held: MailKeyRecord | None,
                         now: int) -> None:
    """Whether a storer (or a sender's cache) should take `record` over the one it `held`:
    not expired, not dated in the future, and not older than what it holds (no replays)."""
    if record.expires_at <= now:
        raise MailKeyError("mail key record expired")
    if record.created_at > now + CLOCK_SKEW:
        raise MailKeyError("mail key record dated in the future")
    if held is not None and record.created_at < held.created_at:
        raise MailKeyError("a newer mail key record is already held")


@functools.lru_cache(maxsize=256)
def prekey_public(prekey: bytes) -> hpke.MLKEM768X25519PublicKey:
    """The HPKE public key of a record's prekey (cached: loading costs as much as half a seal)."""
    if len(prekey) != PREKEY_BYTES:
        raise ValueError("prekey has the wrong size")
    return hpke.MLKEM768X25519PublicKey(
        mlkem_public(prekey[:MLKEM_PUBLIC_BYTES]), x25519_public(prekey[MLKEM_PUBLIC_BYTES:]))


class RecordCache:
    """Records whose RSA signature we already verified, keyed by their exact bytes and the
    exact identity key, so each costs one RSA verification however many envelopes carry it.
    Bounded (LRU). Only records that passed `check_record` enter it."""

    def __init__(self, size: int = 1024) -> None:
        self._seen: certified.VerifiedCache[MailKeyRecord] = certified.VerifiedCache(size)

    def check(self, data: bytes, node_id: bytes, identity_der: bytes) -> MailKeyRecord:
        """As `check_record`: `data` is a record of `node_id`, signed by `identity_der`,
        which hashes to `node_id` (a hit stands for both: the entry was checked under this
        very key and names `node_id`)."""
        record = self._seen.get(data, identity_der)
        if record is None or record.node_id != node_id:
            record = check_record(data, node_id, identity_der)
            self._seen.put(data, identity_der, record)
        return record


# ----- the owner's side: rotation, erasure, secrets at rest -------------------------------


@record
class Schedule:
    """When a node makes a new record and when it erases an old prekey.

    A record lives two rotation intervals, so senders that cached it keep a valid copy for
    a whole interval after its successor was published. Mail sealed to it can be dated no
    later than its expiry and is accepted only within `retention` (+ skew) of its date, so
    after `erase_at` nothing that needs the private half can still be accepted."""
    rotation: int    # seconds
    retention: int   # seconds: the node's mail.retention_time

    def lifetime(self) -> int:
        return min(2 * self.rotation, MAX_LIFETIME)

    def rotation_due(self, current: MailKeyRecord | None, now: int) -> bool:
        # A clock that jumped back before the record's date also gets a fresh record.
        return current is None or now >= current.created_at + self.rotation \
            or now < current.created_at - CLOCK_SKEW

    def erase_at(self, record: MailKeyRecord) -> int:
        return record.expires_at + self.retention + CLOCK_SKEW


def refresh_wanted(record: MailKeyRecord, now: int) -> bool:
    """A sender should look for a newer record once half of this one's life has passed
    (its owner has rotated by then); it may keep sealing to it until it expires."""
    return now >= record.created_at + (record.expires_at - record.created_at) // 2


WRAP_INFO = b"fluxchat-mailkey-wrap-v1"
WRAP_AAD = b"fluxchat-mailkey-secret-v1\x00"
WRAP_NONCE_BYTES = 12


def wrapping_key(identity: Identity) -> bytes:
    """The key that encrypts mail key secrets at rest: HKDF-SHA256 over the RSA private key,
    so only a process that decrypted the identity (password) can derive it."""
    der = rsa_private_key_info(identity.private_key)   # its PKCS#8 DER; not private_bytes: see pkcs8.py
    return HKDF(hashes.SHA256(), 32, salt=None, info=WRAP_INFO).derive(der)


def wrap_secrets(key: bytes, secrets: MailKeySecrets, key_id: bytes, nonce: bytes) -> bytes:
    """nonce ‖ AES-256-GCM(secrets), bound to the prekey id; `nonce`: 12 fresh random bytes."""
    if len(nonce) != WRAP_NONCE_BYTES:
        raise ValueError(f"need a {WRAP_NONCE_BYTES}-byte nonce")
    return nonce + AESGCM(key).encrypt(nonce, secrets.raw, WRAP_AAD + key_id)


def unwrap_secrets(key: bytes, blob: bytes, key_id: bytes) -> MailKeySecrets:
    try:
        raw = AESGCM(key).decrypt(blob[:WRAP_NONCE_BYTES], blob[WRAP_NONCE_BYTES:],
                                  WRAP_AAD + key_id)
        return MailKeySecrets(raw)
    except (InvalidTag, ValueError):
        raise MailKeyError("stored mail key secrets do not decrypt") from None
