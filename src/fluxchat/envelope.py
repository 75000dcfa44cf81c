"""Mail envelopes: sign-then-encrypt, bound to one recipient (after Davis, "Defective
Sign & Encrypt", 2001).

The sender signs the whole content, including who it is for; the signed bytes and the
signature are encrypted under a fresh AES-256-GCM key, which is wrapped with RSA-OAEP for
the recipient. The clear outer header (version, recipient, uuid, expiry) is what relays
route and store by, so it is the GCM associated data: changing it breaks the tag.

Why the recipient is inside the signature: otherwise B could decrypt a mail from A and
re-encrypt it to C, and C would believe A wrote to C. Why the sender's key is inside: the
recipient needs it to verify, and it is self-certifying (it must hash to `sender`).

Byte layout (all canonical CBOR, see cbor.py):
    envelope  = [header, wrapped_key, nonce, ciphertext]
    header    = [version, recipient, uuid, expires_at]          (also the GCM AAD)
    plaintext = [inner, signature, padding]   (padding: zero bytes up to a size bucket;
                                                old senders omit it)
    inner     = [version, kind, uuid, sender, recipient, created_at,
                 subject, body, ref, sender_public_der]            (no display name)
              | [..., sender_public_der, sender_name]              (with one)
    ref       = receipts: the acknowledged mail's uuid; mail: b"" or the uuid it replies to
    signature = RSA-PSS-SHA256(SIGNATURE_CONTEXT + inner)

Pure: no I/O, no clock, no randomness; the caller passes the key and nonce.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .cbor import bytes_head, dumps, loads
from .errors import EnvelopeError, FluxError
from .identity import MAX_KEY_BITS, MIN_KEY_BITS, Identity, load_public_key, verify_signature
from .ids import ID_BYTES, id_from_spki
from .mail_rules import MAX_SUBJECT_CHARS as MAX_SUBJECT_CHARS
from .records import record

ENVELOPE_VERSION = 1
MAX_NAME_CHARS = 64  # the sender's display name: a hint shown to people, never an identity
KIND_MAIL = "mail"
KIND_RECEIPT = "receipt"
KINDS = (KIND_MAIL, KIND_RECEIPT)
UUID_BYTES = 16
MAX_RECEIPT_REFS = 256    # mails one receipt may confirm (a burst: see DeliverMany)
CONTENT_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# Domain separation: a mail signature can never pass for a link-handshake signature.
SIGNATURE_CONTEXT = b"fluxchat-mail-v1\x00"
# Timestamps are stored in SQLite INTEGER columns, which are signed 64-bit.
MAX_TIMESTAMP = 2**63 - 1
# Plaintexts are padded so an envelope's size tells only a bucket: powers of two from
# MIN_BUCKET up to POW2_LIMIT, then Padmé (at most 12% more, leaking O(log log n) bits).
MIN_BUCKET = 512
POW2_LIMIT = 64 * 1024

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
# Errors that opening hostile bytes may raise; all become one detail-free EnvelopeError.
_OPEN_FAILURES = (FluxError, ValueError, TypeError, InvalidTag, InvalidSignature,
                  UnsupportedAlgorithm)


@record
class MailContent:
    kind: str
    uuid: bytes
    sender: bytes
    recipient: bytes
    created_at: int
    subject: str
    body: str
    ref: bytes  # receipts: uuid of the acknowledged mail; mail: b"" or the uuid it replies to
    sender_name: str = ""  # optional display name; signed, but only a hint


@record
class OuterHeader:
    version: int
    recipient: bytes
    uuid: bytes
    expires_at: int


# ----- encodings -------------------------------------------------------------------


def encode_header(header: OuterHeader) -> bytes:
    """The canonical header bytes: the GCM associated data."""
    return dumps(_header_array(header))


def _header_array(header: OuterHeader) -> list[object]:
    return [header.version, header.recipient, header.uuid, header.expires_at]


def encode_inner(content: MailContent, sender_public_der: bytes) -> bytes:
    """The canonical bytes the sender signs. The display name is a trailing element only
    when there is one, so mail without a name keeps the first release's layout."""
    fields: list[object] = [ENVELOPE_VERSION, content.kind, content.uuid, content.sender,
                            content.recipient, content.created_at, content.subject, content.body,
                            content.ref, sender_public_der]
    if content.sender_name:
        fields.append(content.sender_name)
    return dumps(fields)


def bucket_size(size: int) -> int:
    """The padded size for a plaintext of `size` bytes."""
    if size <= POW2_LIMIT:
        return max(MIN_BUCKET, 1 << (size - 1).bit_length())
    exponent = size.bit_length() - 1
    mask = (1 << (exponent - exponent.bit_length())) - 1   # Padmé: keep the top bits
    return (size + mask) & ~mask


def _bstr_head(length: int) -> int:
    """Bytes in the CBOR head of a byte string of `length` bytes."""
    return 1 if length < 24 else 2 if length < 2**8 else 3 if length < 2**16 \
        else 5 if length < 2**32 else 9


def padded(parts: list[bytes]) -> bytes:
    """CBOR `parts + [zero padding]`, exactly bucket_size long where the padding's own
    length head allows, else a byte or two more (never less). Built from heads and parts (an
    array's encoding is its head, then its items' encodings): each part is copied once, by
    the final join."""
    if len(parts) >= 23:
        raise ValueError("padded() takes fewer than 23 parts")
    items = [piece for part in parts for piece in (bytes_head(len(part)), part)]
    head = bytes((0x80 | (len(parts) + 1),))   # CBOR array head, fewer than 24 items
    used = len(head) + sum(map(len, items))
    room = bucket_size(used + 1) - used
    length = max(0, room - 1)   # the padding string, head included, fills `room` if it can
    while length > 0 and _bstr_head(length) + length > room:
        length -= 1
    if _bstr_head(length) + length < room:   # at a head-size boundary: one head byte more
        length += 1
    return b"".join([head, *items, bytes_head(length), bytes(length)])


# ----- sealing (our own input: mistakes are ValueError) ------------------------------


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass and must not pass


def _content_problem(content: MailContent) -> str | None:
    """Why `content` is not a valid mail, or None; shared by seal and open."""
    if content.kind not in KINDS:
        return f"kind must be one of {KINDS}"
    if not isinstance(content.uuid, bytes) or len(content.uuid) != UUID_BYTES:
        return f"uuid must be {UUID_BYTES} bytes"
    for name in ("sender", "recipient"):
        value = getattr(content, name)
        if not isinstance(value, bytes) or len(value) != ID_BYTES:
            return f"{name} must be a {ID_BYTES}-byte node ID"
    if not _is_int(content.created_at) or not 0 <= content.created_at <= MAX_TIMESTAMP:
        return "created_at must be a non-negative unix time"
    if not isinstance(content.subject, str) or len(content.subject) > MAX_SUBJECT_CHARS:
        return f"subject must be text of at most {MAX_SUBJECT_CHARS} characters"
    if not isinstance(content.body, str):
        return "body must be text"
    if not isinstance(content.ref, bytes):
        return "ref must be bytes"
    if content.kind == KIND_RECEIPT:   # the mail it confirms, or the mails of a burst
        if not content.ref or len(content.ref) % UUID_BYTES \
                or len(content.ref) > MAX_RECEIPT_REFS * UUID_BYTES:
            return f"ref must be 1 to {MAX_RECEIPT_REFS} uuids for a receipt"
    elif len(content.ref) not in (0, UUID_BYTES):
        return f"ref must be 0 or {UUID_BYTES} bytes for a mail"
    if not isinstance(content.sender_name, str) or len(content.sender_name) > MAX_NAME_CHARS:
        return f"sender_name must be text of at most {MAX_NAME_CHARS} characters"
    return None


def _check_seal_args(content: MailContent, sender: Identity, recipient_public_der: bytes,
                     expires_at: int, content_key: bytes, nonce: bytes) -> None:
    problem = _content_problem(content)
    if problem is not None:
        raise ValueError(problem)
    if content.sender != sender.node_id:
        raise ValueError("content.sender is not the signing identity")
    if id_from_spki(recipient_public_der) != content.recipient:
        raise ValueError("recipient public key does not hash to content.recipient")
    if not _is_int(expires_at) or not 0 <= expires_at <= MAX_TIMESTAMP:
        raise ValueError("expires_at must be a non-negative unix time")
    if len(content_key) != CONTENT_KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise ValueError(f"need a {CONTENT_KEY_BYTES}-byte key and a {NONCE_BYTES}-byte nonce")


def seal(content: MailContent, sender: Identity, recipient_public_der: bytes,
         expires_at: int, content_key: bytes, nonce: bytes) -> bytes:
    """Sign `content` as `sender` and encrypt it to the holder of `recipient_public_der`.

    `content_key` (32) and `nonce` (12) must be fresh random bytes (os.urandom)."""
    _check_seal_args(content, sender, recipient_public_der, expires_at, content_key, nonce)
    try:
        recipient_key = load_public_key(recipient_public_der)
    except FluxError as exc:
        raise ValueError(f"recipient public key not accepted: {exc}") from None
    inner = encode_inner(content, sender.public_der)
    signature = sender.sign(SIGNATURE_CONTEXT + inner)
    header = OuterHeader(ENVELOPE_VERSION, content.recipient, content.uuid, expires_at)
    ciphertext = AESGCM(content_key).encrypt(nonce, padded([inner, signature]),
                                             encode_header(header))
    wrapped_key = recipient_key.encrypt(content_key, OAEP)
    return dumps([_header_array(header), wrapped_key, nonce, ciphertext])


# ----- parsing (hostile input: every failure is EnvelopeError) -----------------------


def _split(envelope: bytes, max_size: int) -> tuple[OuterHeader, bytes, bytes, bytes]:
    """Decode and type-check the outer structure; raises on anything unexpected."""
    if len(envelope) > max_size:
        raise EnvelopeError()
    outer = loads(envelope, max_depth=2, max_items=16)
    if not isinstance(outer, list) or len(outer) != 4:
        raise EnvelopeError()
    fields, wrapped_key, nonce, ciphertext = outer
    if not isinstance(fields, list) or len(fields) != 4:
        raise EnvelopeError()
    version, recipient, uuid, expires_at = fields
    header_ok = (
        _is_int(version) and version == ENVELOPE_VERSION
        and isinstance(recipient, bytes) and len(recipient) == ID_BYTES
        and isinstance(uuid, bytes) and len(uuid) == UUID_BYTES
        and _is_int(expires_at) and 0 <= expires_at <= MAX_TIMESTAMP
    )
    body_ok = (
        isinstance(wrapped_key, bytes)
        and MIN_KEY_BITS // 8 <= len(wrapped_key) <= MAX_KEY_BITS // 8
        and isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES
        and isinstance(ciphertext, bytes) and len(ciphertext) >= TAG_BYTES
    )
    if not (header_ok and body_ok):
        raise EnvelopeError()
    header = OuterHeader(version, recipient, uuid, expires_at)
    return header, wrapped_key, nonce, ciphertext


def parse_header(envelope: bytes, max_size: int) -> OuterHeader:
    """The clear header relays and storers act on; checks the whole outer structure."""
    try:
        return _split(envelope, max_size)[0]
    except _OPEN_FAILURES:
        raise EnvelopeError() from None


def _decode_inner(inner: bytes) -> tuple[int, MailContent, bytes]:
    """(version, content, sender_public_der) from the signed bytes."""
    fields = loads(inner, max_depth=1, max_items=16)
    if not isinstance(fields, list) or len(fields) not in (10, 11):
        raise EnvelopeError()
    version, kind, uuid, sender, recipient, created_at, subject, body, ref, sender_der = fields[:10]
    name = fields[10] if len(fields) == 11 else ""
    content = MailContent(kind, uuid, sender, recipient, created_at, subject, body, ref, name)
    # An empty trailing name would give the same content two encodings.
    if not _is_int(version) or _content_problem(content) is not None \
            or not isinstance(sender_der, bytes) or (len(fields) == 11 and not name):
        raise EnvelopeError()
    return version, content, sender_der


def _decrypt(envelope: bytes, me: Identity) -> tuple[OuterHeader, bytes, bytes]:
    """(header, inner, signature) once the key unwraps and the tag holds."""
    header, wrapped_key, nonce, ciphertext = _split(envelope, len(envelope))
    if header.recipient != me.node_id:  # public data: refuse before any RSA work
        raise EnvelopeError()
    content_key = me.private_key.decrypt(wrapped_key, OAEP)
    if len(content_key) != CONTENT_KEY_BYTES:
        raise EnvelopeError()
    plaintext = AESGCM(content_key).decrypt(nonce, ciphertext, encode_header(header))
    parts = loads(plaintext, max_depth=1, max_items=4)
    if not isinstance(parts, list) or len(parts) not in (2, 3) \
            or not all(isinstance(part, bytes) for part in parts):
        raise EnvelopeError()
    return header, parts[0], parts[1]


def _open(envelope: bytes, me: Identity) -> tuple[MailContent, bytes]:
    header, inner, signature = _decrypt(envelope, me)
    version, content, sender_der = _decode_inner(inner)
    # The key must be the one `sender` names before its signature means anything.
    if id_from_spki(sender_der) != content.sender:
        raise EnvelopeError()
    if not verify_signature(load_public_key(sender_der), signature, SIGNATURE_CONTEXT + inner):
        raise EnvelopeError()
    # Bound to us by the sender, and consistent with what relays saw.
    if content.recipient != me.node_id or content.recipient != header.recipient \
            or content.uuid != header.uuid or version != header.version:
        raise EnvelopeError()
    return content, sender_der


def open_envelope_with_key(envelope: bytes, me: Identity) -> tuple[MailContent, bytes]:
    """Like open_envelope, plus the sender's verified SPKI DER (to cache or to reply)."""
    try:
        return _open(envelope, me)
    except _OPEN_FAILURES:
        raise EnvelopeError() from None


def open_envelope(envelope: bytes, me: Identity) -> MailContent:
    """Decrypt and verify an envelope addressed to `me`; any failure is EnvelopeError()."""
    return open_envelope_with_key(envelope, me)[0]
