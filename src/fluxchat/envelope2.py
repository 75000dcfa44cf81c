"""Envelope v2: HPKE-sealed to the recipient's current prekey, signed with the sender's
Ed25519 mail key, recipient-bound like v1; and the version dispatch for clear headers.

Sign-then-encrypt as in v1 (Davis): the signed bytes name the recipient and include the
clear outer header, so neither a recipient re-sealing a mail to someone else nor a relay
editing the header can go unnoticed. The sender's RSA public key and its mail key record
travel inside the encryption: the recipient checks the record under the key that hashes to
the sender's ID, then the Ed25519 signature under the record's key, with no lookup.

Byte layout (canonical CBOR):
    envelope  = [header, sealed]
    header    = [version=2, recipient bstr32, uuid bstr16, expires_at uint, prekey_id bstr16]
    sealed    = HPKE base mode (MLKEM768_X25519, HKDF-SHA256, AES-256-GCM) to the prekey,
                info = SEAL_CONTEXT ‖ CBOR(header): enc (1120 bytes) ‖ ciphertext
    plaintext = [inner, signature, padding]
    inner     = [version=2, kind, uuid, sender, recipient, created_at, subject, body, ref,
                 sender_public_der, sender_record (, sender_name when it is not empty)]
    signature = Ed25519(MAIL_CONTEXT ‖ CBOR(header) ‖ inner)

Pure apart from one thing: HPKE draws its ephemeral key inside `cryptography`, whose API
takes no randomness; everything else is a function of the arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import envelope as v1
from .cbor import CborError, bytes_head, dumps, text_head
from .cbor_flat import head_at, loads_flat
from .envelope import MailContent, OuterHeader, padded
from .errors import EnvelopeError
from .identity import Identity
from .ids import ID_BYTES
from .mailkeys import PREKEY_ID_BYTES, MailKeyRecord, RecordCache, prekey_public, sign_key_public
from .records import record

VERSION = 2
MAIL_CONTEXT = b"fluxchat-mail-v2\x00"
SEAL_CONTEXT = b"fluxchat-seal-v2\x00"
SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
ENC_BYTES = 1088 + 32   # ML-KEM-768 ciphertext ‖ X25519 ephemeral key
TAG_BYTES = 16
SIGNATURE_BYTES = 64
PROTECTION = {1: "rsa", 2: "forward-secret-pq"}   # what `status` and `read` show


# A canonical v2 envelope has one layout, so it is written by joining and read by slicing,
# with the decoder's head rules (cbor.head_at) for the two fields of variable size; the
# header's bytes are a slice of the envelope, never re-encoded:
#   82 85 02 5820 recipient(32) 50 uuid(16) uint(expires_at) 50 prekey_id(16) bstr-head sealed
_START = b"\x82\x85\x02\x58\x20"
_BSTR16 = 0x50
_BSTR16_HEAD = bytes((_BSTR16,))
_UUID_AT = len(_START) + ID_BYTES + 1
_EXPIRES_AT = _UUID_AT + v1.UUID_BYTES
_MIN_BYTES = _EXPIRES_AT + 1 + 1 + PREKEY_ID_BYTES + 3 + ENC_BYTES + TAG_BYTES


@record
class Header2:
    recipient: bytes
    uuid: bytes
    expires_at: int
    prekey_id: bytes
    # The header's canonical bytes when `split` read it from an envelope (the same bytes
    # `encode` would build); left out of equality, as it follows from the fields.
    encoded: bytes = field(default=b"", compare=False, repr=False)

    def encode(self) -> bytes:
        return self.encoded or dumps(self.fields())

    def fields(self) -> list[object]:
        return [VERSION, self.recipient, self.uuid, self.expires_at, self.prekey_id]

    def outer(self) -> OuterHeader:
        return OuterHeader(VERSION, self.recipient, self.uuid, self.expires_at)


@record
class MailSigner:
    """What a sender needs: its RSA public key, its current record and that record's key."""
    identity_der: bytes
    node_id: bytes
    record: bytes
    signing_key: ed25519.Ed25519PrivateKey


@record
class Opened:
    content: MailContent
    sender_der: bytes
    sender_record: MailKeyRecord


def encode_header(recipient: bytes, uuid: bytes, expires_at: int, prekey_id: bytes) -> bytes:
    """CBOR(header), written from its layout (see `split`): the same bytes as
    Header2(...).encode() for fields of the right sizes, which the caller has checked."""
    return b"".join((_START[1:], recipient, _BSTR16_HEAD, uuid, dumps(expires_at),
                     _BSTR16_HEAD, prekey_id))


_VERSION_ITEM = dumps(VERSION)


def encode_inner(content: MailContent, sender_der: bytes, sender_record: bytes) -> bytes:
    """CBOR(inner): [VERSION, kind, uuid, sender, recipient, created_at, subject, body, ref,
    sender_der, sender_record (, sender_name when it is not empty, as in v1)]. Written as
    heads and fields joined once (the same bytes as `dumps` of that list, which a test
    checks), as every mail is."""
    name = content.sender_name
    pieces = [b"\x8c" if name else b"\x8b", _VERSION_ITEM, *_text(content.kind),
              bytes_head(len(content.uuid)), content.uuid,
              bytes_head(len(content.sender)), content.sender,
              bytes_head(len(content.recipient)), content.recipient, dumps(content.created_at),
              *_text(content.subject), *_text(content.body), bytes_head(len(content.ref)),
              content.ref, bytes_head(len(sender_der)), sender_der,
              bytes_head(len(sender_record)), sender_record]
    if name:
        pieces += _text(name)
    return b"".join(pieces)


def _text(text: str) -> tuple[bytes, bytes]:
    raw = text.encode("utf-8")   # lone surrogates raise UnicodeEncodeError, as in dumps
    return text_head(len(raw)), raw


# ----- sealing (our own input: mistakes are ValueError) --------------------------------


def seal(content: MailContent, signer: MailSigner, recipient: MailKeyRecord,
         expires_at: int) -> bytes:
    """Sign `content` with the sender's mail key and seal it to `recipient`'s prekey.
    `recipient` must be a record the caller checked (mailkeys.check_record)."""
    problem = v1._content_problem(content)
    if problem is not None:
        raise ValueError(problem)
    if content.sender != signer.node_id:
        raise ValueError("content.sender is not the signer")
    if recipient.node_id != content.recipient:
        raise ValueError("the record is not the recipient's")
    if not v1._is_int(expires_at) or not 0 <= expires_at <= v1.MAX_TIMESTAMP:
        raise ValueError("expires_at must be a non-negative unix time")
    header_bytes = encode_header(content.recipient, content.uuid, expires_at,
                                 recipient.prekey_id)
    inner = encode_inner(content, signer.identity_der, signer.record)
    signature = signer.signing_key.sign(MAIL_CONTEXT + header_bytes + inner)
    sealed = SUITE.encrypt(padded([inner, signature]), prekey_public(recipient.prekey),
                           info=SEAL_CONTEXT + header_bytes)
    # = dumps([header, sealed]), with the header encoded once and `sealed` copied once
    return b"".join((b"\x82", header_bytes, bytes_head(len(sealed)), sealed))


# ----- parsing (hostile input: every failure is EnvelopeError) ---------------------------

def split(envelope: bytes, max_size: int) -> tuple[Header2, bytes]:
    """The header (with its bytes, `Header2.encoded`) and the sealed part of a v2 envelope
    that is canonical CBOR of the layout above and no longer than `max_size`."""
    if not _MIN_BYTES <= len(envelope) <= max_size or envelope[:5] != _START \
            or envelope[_UUID_AT - 1] != _BSTR16:
        raise EnvelopeError()
    try:
        major, expires_at, pos = head_at(envelope, _EXPIRES_AT)
        header_end = pos + 1 + PREKEY_ID_BYTES
        if major != 0 or expires_at > v1.MAX_TIMESTAMP or envelope[pos] != _BSTR16:
            raise EnvelopeError()
        major, length, start = head_at(envelope, header_end)
    except CborError:
        raise EnvelopeError() from None
    if major != 2 or start + length != len(envelope) or length < ENC_BYTES + TAG_BYTES:
        raise EnvelopeError()
    header = Header2(envelope[len(_START):_UUID_AT - 1], envelope[_UUID_AT:_EXPIRES_AT],
                     expires_at, envelope[pos + 1:header_end], envelope[1:header_end])
    return header, envelope[start:]


# Canonical CBOR gives each version's envelope fixed first bytes: the outer array's head,
# the header array's head and the version number. So the version is read without decoding.
_PREFIXES = {b"\x84\x84\x01": 1, b"\x82\x85\x02": 2}


def version_of(envelope: bytes, max_size: int) -> int:
    """1 or 2, from the envelope's first three bytes; EnvelopeError for anything else.
    Only a hint for dispatch: parsing the envelope checks everything."""
    version = _PREFIXES.get(envelope[:3])
    if version is None or len(envelope) > max_size:
        raise EnvelopeError()
    return version


def parse_header(envelope: bytes, max_size: int) -> OuterHeader:
    """The clear header of a v1 or v2 envelope, for relays and storers."""
    if version_of(envelope, max_size) == 1:
        return v1.parse_header(envelope, max_size)
    try:
        return split(envelope, max_size)[0].outer()
    except v1._OPEN_FAILURES:
        raise EnvelopeError() from None


def prekey_id_of(envelope: bytes, max_size: int) -> bytes:
    """Which of our prekeys a v2 envelope needs (public data)."""
    try:
        return split(envelope, max_size)[0].prekey_id
    except v1._OPEN_FAILURES:
        raise EnvelopeError() from None


def _decode_inner(inner: bytes) -> tuple[MailContent, bytes, bytes]:
    fields = loads_flat(inner, max_items=16)
    if not isinstance(fields, list) or len(fields) not in (11, 12) or fields[0] != VERSION \
            or not v1._is_int(fields[0]):
        raise EnvelopeError()
    name = fields[11] if len(fields) == 12 else ""
    kind, uuid, sender, recipient, created_at, subject, body, ref = fields[1:9]
    content = MailContent(kind, uuid, sender, recipient, created_at, subject, body, ref, name)
    sender_der, sender_record = fields[9], fields[10]
    if v1._content_problem(content) is not None or not isinstance(sender_der, bytes) \
            or not isinstance(sender_record, bytes) or (len(fields) == 12 and not name):
        raise EnvelopeError()
    return content, sender_der, sender_record


def _open(header: Header2, sealed: bytes, me: bytes,
          prekeys: Mapping[bytes, hpke.MLKEM768X25519PrivateKey], records: RecordCache) -> Opened:
    private = prekeys.get(header.prekey_id)
    if header.recipient != me or private is None:   # public data: no work for others' mail
        raise EnvelopeError()
    header_bytes = header.encode()
    plaintext = SUITE.decrypt(sealed, private, info=SEAL_CONTEXT + header_bytes)
    parts = loads_flat(plaintext, max_items=4)
    if len(parts) != 3:
        raise EnvelopeError()
    inner, signature, padding = parts
    if type(inner) is not bytes or type(signature) is not bytes or type(padding) is not bytes:
        raise EnvelopeError()
    content, sender_der, record_bytes = _decode_inner(inner)
    # The record must be the sender's (signed by the key hashing to `sender`: the cache
    # checks both) and the mail made while it was valid; only then does its Ed25519 key
    # speak for the sender.
    record = records.check(record_bytes, content.sender, sender_der)
    if content.created_at >= record.expires_at or len(signature) != SIGNATURE_BYTES:
        raise EnvelopeError()
    sign_key_public(record.sign_key).verify(
        signature, MAIL_CONTEXT + header_bytes + inner)
    if content.recipient != me or content.uuid != header.uuid:
        raise EnvelopeError()
    return Opened(content, sender_der, record)


def open_v2(envelope: bytes, me: bytes,
            prekeys: Mapping[bytes, hpke.MLKEM768X25519PrivateKey],
            records: RecordCache) -> Opened:
    """Decrypt and verify a v2 envelope for node `me` holding `prekeys` (by prekey id);
    any failure is EnvelopeError() with no detail."""
    try:
        return _open(*split(envelope, len(envelope)), me, prekeys, records)
    except (*v1._OPEN_FAILURES, InvalidSignature):
        raise EnvelopeError() from None


def open_split(header: Header2, sealed: bytes, me: bytes,
               prekeys: Mapping[bytes, hpke.MLKEM768X25519PrivateKey],
               records: RecordCache) -> Opened:
    """open_v2 for an envelope the caller already split (to read its header first)."""
    try:
        return _open(header, sealed, me, prekeys, records)
    except (*v1._OPEN_FAILURES, InvalidSignature):
        raise EnvelopeError() from None


def open_any(envelope: bytes, me: Identity,
             prekeys: Mapping[bytes, hpke.MLKEM768X25519PrivateKey],
             records: RecordCache) -> tuple[int, MailContent, bytes, MailKeyRecord | None]:
    """(version, content, sender RSA key, sender record or None) for v1 and v2 alike."""
    if version_of(envelope, len(envelope)) == 1:
        content, sender_der = v1.open_envelope_with_key(envelope, me)
        return 1, content, sender_der, None
    opened = open_v2(envelope, me.node_id, prekeys, records)
    return VERSION, opened.content, opened.sender_der, opened.sender_record
