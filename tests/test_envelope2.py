"""Envelope v2: round trips, v1 alongside, every byte flip refused, recipient and header
binding, erased prekeys, forged records, padding, a known-answer test."""

from __future__ import annotations

import dataclasses
import json
import unittest
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat import envelope as v1
from fluxchat import envelope2 as v2
from fluxchat.cbor import CborError, dumps, loads
from fluxchat.envelope import MailContent, OuterHeader
from fluxchat.errors import EnvelopeError
from fluxchat.identity import Identity
from fluxchat.mailkeys import (
    SECRET_BYTES,
    MailKeyRecord,
    MailKeySecrets,
    RecordCache,
    make_record,
    prekey_public,
)

from .keys import identity, identity_4096

KAT = json.loads((Path(__file__).resolve().parent / "data" / "mailkeys_kat.json")
                 .read_text(encoding="utf-8"))
UUID = bytes(range(16))
T0 = 1_800_000_000
EXPIRES = T0 + 86400
A, B, C = identity(0), identity(1), identity(2)


class Party:
    """A node's mail keys: one record, its secrets, a cache of checked records."""

    def __init__(self, who: Identity, seed: int, created: int = T0 - 60) -> None:
        self.who = who
        self.secrets = MailKeySecrets(bytes((seed + i) % 256 for i in range(SECRET_BYTES)))
        self.record = make_record(who, self.secrets, created, created + 2 * 86400)
        self.prekeys = {self.record.prekey_id: self.secrets.prekey_private()}
        self.cache = RecordCache()

    def signer(self) -> v2.MailSigner:
        return v2.MailSigner(self.who.public_der, self.who.node_id, self.record.encode(),
                             self.secrets.signing_key())

    def open(self, envelope: bytes) -> v2.Opened:
        return v2.open_v2(envelope, self.who.node_id, self.prekeys, self.cache)


PA, PB, PC = Party(A, 1), Party(B, 2), Party(C, 3)


def mail(sender: Identity, recipient: Identity, subject: str = "hi", body: str = "hello",
         kind: str = "mail", ref: bytes = b"", created: int = T0) -> MailContent:
    return MailContent(kind, UUID, sender.node_id, recipient.node_id, created, subject, body,
                       ref)


def sealed(content: MailContent, sender: Party, recipient: Party) -> bytes:
    return v2.seal(content, sender.signer(), recipient.record, EXPIRES)


class RoundTripTest(unittest.TestCase):
    def check(self, content: MailContent, sender: Party, recipient: Party) -> None:
        envelope = sealed(content, sender, recipient)
        opened = recipient.open(envelope)
        self.assertEqual(opened.content, content)
        self.assertEqual(opened.sender_der, sender.who.public_der)
        self.assertEqual(opened.sender_record, sender.record)
        self.assertEqual(v2.parse_header(envelope, len(envelope)),
                         OuterHeader(2, recipient.who.node_id, UUID, EXPIRES))
        self.assertEqual(v2.prekey_id_of(envelope, len(envelope)), recipient.record.prekey_id)
        self.assertEqual(v2.open_any(envelope, recipient.who, recipient.prekeys, recipient.cache),
                         (2, content, sender.who.public_der, sender.record))

    def test_mail_receipt_unicode_big(self) -> None:
        self.check(mail(A, B), PA, PB)
        self.check(mail(B, A, "", "", kind="receipt", ref=b"\x42" * 16), PB, PA)
        self.check(mail(A, B, "📬 你好", "𝄞 日本語\n\0"), PA, PB)
        self.check(mail(A, B, body="x" * (1 << 20)), PA, PB)
        self.check(mail(A, A), PA, PA)
        # A reply reference and a display name, as in v1.
        self.check(dataclasses.replace(mail(A, B), ref=b"\x07" * 16, sender_name="Ann"), PA, PB)

    def test_rsa4096_identity(self) -> None:
        big = Party(identity_4096(), 9)
        self.check(mail(big.who, B), big, PB)

    def test_v1_still_opens_through_the_dispatch(self) -> None:
        content = mail(A, B)
        old = v1.seal(content, A, B.public_der, EXPIRES, bytes(32), bytes(12))
        self.assertEqual(v2.version_of(old, len(old)), 1)
        self.assertEqual(v2.parse_header(old, len(old)), OuterHeader(1, B.node_id, UUID, EXPIRES))
        self.assertEqual(v2.open_any(old, B, PB.prekeys, PB.cache),
                         (1, content, A.public_der, None))

    def test_plaintext_is_padded_to_its_bucket(self) -> None:
        for n in (0, 3000, 70_000):
            plain = unseal(sealed(mail(A, B, body="z" * n), PA, PB), PB)
            size = len(dumps([plain[1], plain[2], plain[3]]))
            self.assertIn(size - v1.bucket_size(size), (0, 1, 2), n)

    def test_sizes_fall_in_buckets(self) -> None:
        # 20 body lengths over 1,000 bytes: the envelope sizes fall in at most 2 buckets.
        sizes = {len(sealed(mail(A, B, body="y" * n), PA, PB)) for n in range(0, 1000, 50)}
        self.assertLessEqual(len(sizes), 2, sizes)
        v1_sizes = {len(v1.seal(mail(A, B, body="y" * n), A, B.public_der, EXPIRES, bytes(32),
                                bytes(12))) for n in (0, 10, 100)}
        self.assertEqual(len(v1_sizes), 1, v1_sizes)


class TamperTest(unittest.TestCase):
    def test_every_single_byte_flip_is_refused(self) -> None:
        envelope = sealed(mail(A, B), PA, PB)
        for pos in range(len(envelope)):
            damaged = bytearray(envelope)
            damaged[pos] ^= 0x01 if pos % 2 else 0x80
            with self.assertRaises(EnvelopeError, msg=f"byte {pos}"):
                PB.open(bytes(damaged))

    def test_truncated_or_extended(self) -> None:
        envelope = sealed(mail(A, B), PA, PB)
        for bad in (b"", envelope[:-1], envelope[:60], envelope + b"\0", envelope * 2):
            with self.assertRaises(EnvelopeError):
                PB.open(bad)

    def test_errors_carry_no_detail(self) -> None:
        with self.assertRaises(EnvelopeError) as caught:
            PC.open(sealed(mail(A, B), PA, PB))
        self.assertEqual(str(caught.exception), "envelope rejected")
        self.assertTrue(caught.exception.__suppress_context__)


def unseal(envelope: bytes, party: Party) -> tuple[list[object], bytes, bytes, bytes]:
    """(header fields, inner, signature, padding) as the recipient `party` sees them."""
    header, blob = loads(envelope)
    plain = v2.SUITE.decrypt(blob, party.prekeys[header[4]],
                             info=v2.SEAL_CONTEXT + dumps(header))
    inner, signature, pad = loads(plain)
    return header, inner, signature, pad


def reseal(header: list[object], inner: bytes, signature: bytes, to: Party) -> bytes:
    blob = v2.SUITE.encrypt(v1.padded([inner, signature]), prekey_public(to.record.prekey),
                            info=v2.SEAL_CONTEXT + dumps(header))
    return dumps([header, blob])


def forge(fields: list[object], signer: MailKeySecrets, to: Party,
          header: list[object] | None = None) -> bytes:
    header = header or [2, to.who.node_id, fields[2], EXPIRES, to.record.prekey_id]
    inner = dumps(fields)
    signature = signer.signing_key().sign(v2.MAIL_CONTEXT + dumps(header) + inner)
    return reseal(header, inner, signature, to)


def fields_of(content: MailContent, sender: Party) -> list[object]:
    return [2, content.kind, content.uuid, content.sender, content.recipient,
            content.created_at, content.subject, content.body, content.ref,
            sender.who.public_der, sender.record.encode()]


class BindingTest(unittest.TestCase):
    def test_forge_helper_is_faithful(self) -> None:
        content = mail(A, B)
        self.assertEqual(PB.open(forge(fields_of(content, PA), PA.secrets, PB)).content, content)

    def test_wrong_recipient(self) -> None:
        with self.assertRaises(EnvelopeError):
            PC.open(sealed(mail(A, B), PA, PB))
        # Even a node holding B's prekey is not B.
        thief = Party(C, 3)
        thief.prekeys = PB.prekeys
        with self.assertRaises(EnvelopeError):
            thief.open(sealed(mail(A, B), PA, PB))

    def test_resealed_forward_is_refused(self) -> None:
        # B opens A's mail and re-seals A's signed bytes and signature to C.
        header, inner, signature, _ = unseal(sealed(mail(A, B), PA, PB), PB)
        to_c = [2, C.node_id, UUID, EXPIRES, PC.record.prekey_id]
        with self.assertRaises(EnvelopeError):
            PC.open(reseal(to_c, inner, signature, PC))
        self.assertEqual(PB.open(reseal(header, inner, signature, PB)).content, mail(A, B))

    def test_header_edits_are_refused(self) -> None:
        header, inner, signature, _ = unseal(sealed(mail(A, B), PA, PB), PB)
        for index, value in [(2, b"\xee" * 16), (3, EXPIRES + 1)]:
            edited = header[:index] + [value] + header[index + 1:]
            with self.assertRaises(EnvelopeError, msg=str(index)):
                PB.open(reseal(edited, inner, signature, PB))

    def test_signed_content_addressed_elsewhere(self) -> None:
        with self.assertRaises(EnvelopeError):
            PB.open(forge(fields_of(mail(A, C), PA), PA.secrets, PB))

    def test_signature_by_another_mail_key(self) -> None:
        with self.assertRaises(EnvelopeError):
            PB.open(forge(fields_of(mail(A, B), PA), PC.secrets, PB))

    def test_record_of_another_node(self) -> None:
        # C claims to be A: C's RSA key does not hash to A; A's key does not sign C's record.
        for der, record in [(C.public_der, PC.record.encode()), (A.public_der, PC.record.encode())]:
            fields = fields_of(mail(A, B), PA)[:9] + [der, record]
            with self.assertRaises(EnvelopeError):
                PB.open(forge(fields, PC.secrets, PB))

    def test_mail_dated_after_its_record_expired(self) -> None:
        late = mail(A, B, created=PA.record.expires_at)
        with self.assertRaises(EnvelopeError):
            PB.open(forge(fields_of(late, PA), PA.secrets, PB))

    def test_malformed_signed_content(self) -> None:
        good = fields_of(mail(A, B), PA)
        variants = [good[:-1], good + [b""], good + [""], good + ["n" * 65], good + ["n", "n"],
                    [1] + good[1:], [True] + good[1:]]
        for index, value in [(1, "spam"), (2, b"short"), (5, -1), (9, "text"), (10, 7)]:
            variants.append(good[:index] + [value] + good[index + 1:])
        for fields in variants:
            with self.assertRaises(EnvelopeError, msg=repr(fields)[:80]):
                PB.open(forge(fields, PA.secrets, PB))


class ErasedPrekeyTest(unittest.TestCase):
    def test_without_the_prekey_nothing_opens(self) -> None:
        envelope = sealed(mail(A, B), PA, PB)
        rotated = Party(B, 77)   # B's next record; the old private half is gone
        with self.assertRaises(EnvelopeError):
            rotated.open(envelope)
        # The RSA identity alone does not help either: v1 opening refuses a v2 envelope.
        with self.assertRaises(EnvelopeError):
            v1.open_envelope(envelope, B)


class HeaderTest(unittest.TestCase):
    def test_malformed_outer_structure(self) -> None:
        h = [2, B.node_id, UUID, EXPIRES, b"\1" * 16]
        blob = b"\0" * (v2.ENC_BYTES + v2.TAG_BYTES)
        for outer in [[h], [h, blob, b""], [h, blob[:-1]], [h[:4], blob], [[3] + h[1:], blob],
                      [[True] + h[1:], blob], [h[:4] + [b"\1" * 15], blob],
                      [h[:3] + [-1] + h[4:], blob], [h, "text"], 5, [], [[]]]:
            with self.assertRaises(EnvelopeError, msg=repr(outer)[:60]):
                v2.parse_header(dumps(outer), 1 << 20)
        v2.parse_header(dumps([h, blob]), 1 << 20)

    def test_size_limit(self) -> None:
        envelope = sealed(mail(A, B), PA, PB)
        with self.assertRaises(EnvelopeError):
            v2.parse_header(envelope, len(envelope) - 1)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_arbitrary_bytes_only_raise_envelope_error(self, data: bytes) -> None:
        for call in (lambda: v2.parse_header(data, 1 << 20), lambda: PB.open(data),
                     lambda: v2.open_any(data, B, PB.prekeys, PB.cache)):
            try:
                call()
            except EnvelopeError:
                pass


def reference_split(envelope: bytes) -> tuple[v2.Header2, bytes] | None:
    """What `split` must accept, by the general decoder and shape checks; None if refused."""
    try:
        outer = loads(envelope, max_depth=2, max_items=16)
    except CborError:
        return None
    if not isinstance(outer, list) or len(outer) != 2 or not isinstance(outer[0], list) \
            or len(outer[0]) != 5:
        return None
    (version, recipient, uuid, expires_at, key_id), blob = outer
    ok = (type(version) is int and version == 2
          and isinstance(recipient, bytes) and len(recipient) == 32
          and isinstance(uuid, bytes) and len(uuid) == 16
          and type(expires_at) is int and 0 <= expires_at <= v1.MAX_TIMESTAMP
          and isinstance(key_id, bytes) and len(key_id) == 16
          and isinstance(blob, bytes) and len(blob) >= v2.ENC_BYTES + v2.TAG_BYTES)
    return (v2.Header2(recipient, uuid, expires_at, key_id), blob) if ok else None


class SplitTest(unittest.TestCase):
    """`split` reads the layout by slicing: it must accept exactly what the general decoder
    accepts, give the same fields, and its header bytes must be the canonical encoding."""

    def assert_like_reference(self, data: bytes) -> None:
        expected = reference_split(data)
        if expected is None:
            with self.assertRaises(EnvelopeError, msg=data[:80].hex()):
                v2.split(data, len(data))
            return
        header, blob = v2.split(data, len(data))
        self.assertEqual((header, blob), expected)
        self.assertEqual(header.encoded, dumps(header.fields()))
        self.assertEqual(b"\x82" + header.encoded + dumps(blob), data)

    def test_every_flip_and_cut_of_the_header(self) -> None:
        envelope = sealed(mail(A, B), PA, PB)
        self.assert_like_reference(envelope)
        for pos in range(80):
            for bit in (0x01, 0x02, 0x10, 0x20, 0x80):
                damaged = bytearray(envelope)
                damaged[pos] ^= bit
                self.assert_like_reference(bytes(damaged))
            self.assert_like_reference(envelope[:pos] + envelope[pos + 1:])
            self.assert_like_reference(envelope[:pos] + b"\x00" + envelope[pos:])
        for end in (0, 5, 60, 74, 1210, 1211, len(envelope) - 1):
            self.assert_like_reference(envelope[:end])

    def test_every_width_of_expires_at_and_of_the_sealed_length(self) -> None:
        h = [2, B.node_id, UUID, 0, b"\1" * 16]
        for expires in (0, 23, 24, 255, 256, 2**16, 2**32 - 1, 2**32, v1.MAX_TIMESTAMP,
                        v1.MAX_TIMESTAMP + 1, 2**64 - 1):
            for size in (v2.ENC_BYTES + v2.TAG_BYTES - 1, v2.ENC_BYTES + v2.TAG_BYTES, 70000):
                data = dumps([h[:3] + [expires] + h[4:], b"\7" * size])
                self.assert_like_reference(data)
                for width in (0x19, 0x1a, 0x1b):   # the same expiry with wider heads
                    wide = {0x19: 3, 0x1a: 5, 0x1b: 9}[width]
                    if expires < 2 ** (8 * (wide - 1)):
                        at = 54
                        head = bytes((width,)) + expires.to_bytes(wide - 1, "big")
                        old = len(dumps(expires))
                        self.assert_like_reference(data[:at] + head + data[at + old:])

    @settings(max_examples=300, deadline=None)
    @given(st.integers(0, 90), st.integers(0, 255))
    def test_random_header_bytes(self, where: int, byte: int) -> None:
        damaged = bytearray(sealed(mail(A, B), PA, PB))
        damaged[where] = byte
        self.assert_like_reference(bytes(damaged))


class EncodingTest(unittest.TestCase):
    """The writers that join heads and fields give exactly what `dumps` gives."""

    def test_inner_is_dumps_of_its_fields(self) -> None:
        contents = [mail(A, B), mail(A, B, subject="", body=""),
                    mail(A, B, subject="s\u00e9 \U0001f511", body="z" * 70_000),
                    mail(A, B, kind="receipt", ref=bytes(range(16)) * 3),
                    dataclasses.replace(mail(A, B, created=0), sender_name="\u00c9lise"),
                    dataclasses.replace(mail(A, B, created=23), sender_name="n" * 64)]
        contents += [mail(A, B, created=t) for t in (24, 255, 256, 2**16, 2**32, 2**40)]
        for content in contents:
            for der, record in [(A.public_der, PA.record.encode()), (b"", b""), (b"k" * 23, b"r")]:
                fields: list[object] = [2, content.kind, content.uuid, content.sender,
                                        content.recipient, content.created_at, content.subject,
                                        content.body, content.ref, der, record]
                if content.sender_name:
                    fields.append(content.sender_name)
                self.assertEqual(v2.encode_inner(content, der, record), dumps(fields))

    def test_header_is_dumps_of_its_fields(self) -> None:
        for expires in (0, 23, 24, 255, 256, 2**16 - 1, 2**16, 2**32, v1.MAX_TIMESTAMP):
            header = v2.Header2(B.node_id, UUID, expires, b"\3" * 16)
            self.assertEqual(v2.encode_header(B.node_id, UUID, expires, b"\3" * 16),
                             header.encode())
            self.assertEqual(header.encode(), dumps([2, B.node_id, UUID, expires, b"\3" * 16]))

    def test_padded_is_dumps_of_parts_and_zeros(self) -> None:
        for sizes in [(0, 0), (1, 64), (3000, 64), (4000, 64), (70_000, 64), (23, 24, 255)]:
            parts = [bytes([7]) * n for n in sizes]
            data = v1.padded(parts)
            *decoded, padding = loads(data)
            self.assertEqual(decoded, parts)
            self.assertEqual(padding, bytes(len(padding)))
            self.assertEqual(data, dumps([*parts, padding]))
            self.assertIn(len(data) - v1.bucket_size(len(dumps(parts)) + 1), (0, 1, 2))


class SealArgumentsTest(unittest.TestCase):
    def test_caller_mistakes_are_value_errors(self) -> None:
        for content, record, expires in [
                (mail(B, C), PC.record, EXPIRES),          # sender is not the signer
                (mail(A, C), PB.record, EXPIRES),          # record is not the recipient's
                (mail(A, B, kind="spam"), PB.record, EXPIRES),
                (mail(A, B), PB.record, -1)]:
            with self.assertRaises(ValueError):
                v2.seal(content, PA.signer(), record, expires)


class KnownAnswerTest(unittest.TestCase):
    def test_fixed_envelope_opens_with_the_fixed_prekey(self) -> None:
        recipient = MailKeySecrets(bytes.fromhex(KAT["recipient_secrets"]))
        sender = MailKeySecrets(bytes.fromhex(KAT["sender_secrets"]))
        record = MailKeyRecord(*loads(bytes.fromhex(KAT["recipient_record"]))[1:])
        envelope = bytes.fromhex(KAT["envelope"])
        opened = v2.open_v2(envelope, B.node_id, {record.prekey_id: recipient.prekey_private()},
                            RecordCache())
        content = MailContent("mail", bytes.fromhex(KAT["uuid"]), A.node_id, B.node_id,
                              KAT["created_at"], KAT["subject"], KAT["body"], b"")
        self.assertEqual(opened.content, content)
        self.assertEqual(opened.sender_record.encode().hex(), KAT["sender_record"])
        header = v2.Header2(B.node_id, content.uuid, KAT["expires_at"], record.prekey_id)
        self.assertEqual(header.encode().hex(), KAT["header"])
        self.assertEqual(loads(envelope)[0], loads(header.encode()))
        # Ed25519 is deterministic: the same key, header and inner give the same signature.
        inner = v2.encode_inner(content, A.public_der, bytes.fromhex(KAT["sender_record"]))
        self.assertEqual(sender.signing_key().sign(v2.MAIL_CONTEXT + header.encode() + inner)
                         .hex(), KAT["signature"])
        self.assertEqual(unseal(envelope, _kat_party(recipient, record))[2].hex(),
                         KAT["signature"])


def _kat_party(secrets: MailKeySecrets, record: MailKeyRecord) -> Party:
    party = Party(B, 0)
    party.prekeys = {record.prekey_id: secrets.prekey_private()}
    return party


if __name__ == "__main__":
    unittest.main()
