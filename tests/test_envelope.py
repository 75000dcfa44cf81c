"""Envelopes: round trips, every byte flip refused, recipient binding, forgeries, a KAT."""

from __future__ import annotations

import dataclasses
import json
import unittest
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.cbor import dumps, loads
from fluxchat.envelope import (
    ENVELOPE_VERSION,
    MAX_SUBJECT_CHARS,
    OAEP,
    SIGNATURE_CONTEXT,
    MailContent,
    OuterHeader,
    encode_header,
    encode_inner,
    open_envelope,
    open_envelope_with_key,
    parse_header,
    seal,
)
from fluxchat.errors import EnvelopeError
from fluxchat.identity import Identity, load_public_key, verify_signature

from .keys import identity, identity_4096

KAT = Path(__file__).resolve().parent / "data" / "envelope_kat.json"
KEY = bytes(range(32))
NONCE = b"\x07" * 12
UUID = bytes(range(16))
T0 = 1_800_000_000
EXPIRES = T0 + 86400
A, B, C = identity(0), identity(1), identity(2)


def mail(sender: Identity, recipient: Identity, subject: str = "hi", body: str = "hello",
         kind: str = "mail", ref: bytes = b"") -> MailContent:
    return MailContent(kind, UUID, sender.node_id, recipient.node_id, T0, subject, body, ref)


def sealed(content: MailContent, sender: Identity, recipient: Identity) -> bytes:
    return seal(content, sender, recipient.public_der, EXPIRES, KEY, NONCE)


def inner_fields(content: MailContent, sender_der: bytes, version: int = 1) -> list[object]:
    return [version, content.kind, content.uuid, content.sender, content.recipient,
            content.created_at, content.subject, content.body, content.ref, sender_der]


def forge(fields: list[object], signer: Identity, recipient: Identity,
          header: list[object] | None = None) -> bytes:
    """Build an envelope by hand from arbitrary inner fields, signed by `signer`."""
    header = header or [1, recipient.node_id, fields[2], EXPIRES]
    inner = dumps(fields)
    signature = signer.sign(SIGNATURE_CONTEXT + inner)
    ciphertext = AESGCM(KEY).encrypt(NONCE, dumps([inner, signature]), dumps(header))
    wrapped = load_public_key(recipient.public_der).encrypt(KEY, OAEP)
    return dumps([header, wrapped, NONCE, ciphertext])


class RoundTripTest(unittest.TestCase):
    def check(self, content: MailContent, sender: Identity, recipient: Identity) -> None:
        envelope = sealed(content, sender, recipient)
        self.assertEqual(open_envelope(envelope, recipient), content)
        self.assertEqual(open_envelope_with_key(envelope, recipient),
                         (content, sender.public_der))
        self.assertEqual(parse_header(envelope, len(envelope)),
                         OuterHeader(ENVELOPE_VERSION, recipient.node_id, UUID, EXPIRES))

    def test_empty_body_and_subject(self) -> None:
        self.check(mail(A, B, "", ""), A, B)

    def test_unicode(self) -> None:
        self.check(mail(A, B, "📬 你好 — ünïcødé", "𝄞 日本語のテキスト 🎉\n\0\t"), A, B)

    def test_one_mebibyte_body(self) -> None:
        self.check(mail(A, B, body="x" * (1 << 20)), A, B)

    def test_max_subject(self) -> None:
        self.check(mail(A, B, subject="字" * MAX_SUBJECT_CHARS), A, B)

    def test_receipt(self) -> None:
        self.check(mail(B, A, "", "", kind="receipt", ref=b"\x42" * 16), B, A)

    def test_to_and_from_rsa4096(self) -> None:
        big = identity_4096()
        self.check(mail(big, B), big, B)
        self.check(mail(A, big), A, big)

    def test_to_self(self) -> None:
        self.check(mail(A, A), A, A)

    def test_fresh_randomness_changes_the_bytes(self) -> None:
        self.assertNotEqual(sealed(mail(A, B), A, B), sealed(mail(A, B), A, B))


class TamperTest(unittest.TestCase):
    def test_every_single_byte_flip_is_refused(self) -> None:
        envelope = sealed(mail(A, B), A, B)
        for pos in range(len(envelope)):
            damaged = bytearray(envelope)
            damaged[pos] ^= 0x01 if pos % 2 else 0x80
            with self.assertRaises(EnvelopeError, msg=f"byte {pos}"):
                open_envelope(bytes(damaged), B)

    def test_truncated_or_extended(self) -> None:
        envelope = sealed(mail(A, B), A, B)
        for bad in (b"", envelope[:-1], envelope[:40], envelope + b"\0", envelope * 2):
            with self.assertRaises(EnvelopeError):
                open_envelope(bad, B)

    def test_errors_carry_no_detail(self) -> None:
        with self.assertRaises(EnvelopeError) as caught:
            open_envelope(sealed(mail(A, B), A, B), C)
        self.assertEqual(str(caught.exception), "envelope rejected")
        self.assertIsNone(caught.exception.__cause__)
        self.assertTrue(caught.exception.__suppress_context__)


class BindingTest(unittest.TestCase):
    def test_wrong_recipient(self) -> None:
        with self.assertRaises(EnvelopeError):
            open_envelope(sealed(mail(A, B), A, B), C)

    def test_header_pointed_at_another_recipient(self) -> None:
        # Right key wrap for C, but the signed content says B: C must refuse.
        with self.assertRaises(EnvelopeError):
            open_envelope(forge(inner_fields(mail(A, B), A.public_der), A, C), C)

    def test_resealed_forward_is_refused(self) -> None:
        # B opens A's mail, keeps A's signed bytes and signature, re-encrypts them to C.
        envelope = sealed(mail(A, B), A, B)
        outer = loads(envelope)
        plaintext = AESGCM(B.private_key.decrypt(outer[1], OAEP)).decrypt(
            outer[2], outer[3], dumps(outer[0]))
        header = [1, C.node_id, UUID, EXPIRES]
        ciphertext = AESGCM(KEY).encrypt(NONCE, plaintext, dumps(header))
        wrapped = load_public_key(C.public_der).encrypt(KEY, OAEP)
        with self.assertRaises(EnvelopeError):
            open_envelope(dumps([header, wrapped, NONCE, ciphertext]), C)

    def test_forge_helper_is_faithful(self) -> None:
        content = mail(A, B)
        self.assertEqual(open_envelope(forge(inner_fields(content, A.public_der), A, B), B),
                         content)

    def test_sender_key_not_matching_from(self) -> None:
        # C signs with its own key and embeds it, but claims to be A.
        with self.assertRaises(EnvelopeError):
            open_envelope(forge(inner_fields(mail(A, B), C.public_der), C, B), B)

    def test_signature_by_another_key(self) -> None:
        with self.assertRaises(EnvelopeError):
            open_envelope(forge(inner_fields(mail(A, B), A.public_der), C, B), B)

    def test_uuid_mismatch(self) -> None:
        header = [1, B.node_id, b"\xee" * 16, EXPIRES]
        with self.assertRaises(EnvelopeError):
            open_envelope(forge(inner_fields(mail(A, B), A.public_der), A, B, header), B)

    def test_version_mismatch(self) -> None:
        with self.assertRaises(EnvelopeError):
            open_envelope(forge(inner_fields(mail(A, B), A.public_der, version=2), A, B), B)

    def test_malformed_signed_content(self) -> None:
        good = inner_fields(mail(A, B), A.public_der)
        bad_variants = [good[:-1], good + [b""], good + [""], good + ["n" * 65], good + ["n", "n"],
                        [True] + good[1:]]
        for index, value in [(1, "spam"), (2, b"short"), (5, -1), (5, True),
                             (6, "s" * (MAX_SUBJECT_CHARS + 1)), (7, b"bytes"), (8, b"short")]:
            bad_variants.append(good[:index] + [value] + good[index + 1:])
        for fields in bad_variants:
            with self.assertRaises(EnvelopeError, msg=repr(fields)[:80]):
                open_envelope(forge(fields, A, B), B)


class ReplyAndNameTest(unittest.TestCase):
    def test_reply_reference_and_display_name_are_signed_content(self) -> None:
        content = dataclasses.replace(mail(A, B), ref=b"\x42" * 16, sender_name="Alice")
        self.assertEqual(open_envelope(sealed(content, A, B), B), content)
        # Without a name the signed layout is the first release's ten fields.
        self.assertEqual(len(loads(encode_inner(mail(A, B), A.public_der))), 10)
        self.assertEqual(loads(encode_inner(content, A.public_der))[10], "Alice")


class HeaderTest(unittest.TestCase):
    def test_size_limit(self) -> None:
        envelope = sealed(mail(A, B), A, B)
        parse_header(envelope, len(envelope))
        with self.assertRaises(EnvelopeError):
            parse_header(envelope, len(envelope) - 1)

    def test_malformed_outer_structure(self) -> None:
        h, key, tag = [1, B.node_id, UUID, EXPIRES], b"\0" * 256, b"t" * 16
        for outer in [h, [h, key, NONCE], [h, key, NONCE, tag[:15]], [h, key, NONCE[:11], tag],
                      [h, key[:255], NONCE, tag], [[2] + h[1:], key, NONCE, tag],
                      [[True] + h[1:], key, NONCE, tag], [h[:3] + [-1], key, NONCE, tag],
                      [h[:1] + [b"\0" * 31] + h[2:], key, NONCE, tag], 5, "text"]:
            with self.assertRaises(EnvelopeError, msg=repr(outer)[:60]):
                parse_header(dumps(outer), 1 << 20)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600))
    def test_arbitrary_bytes_only_raise_envelope_error(self, data: bytes) -> None:
        for call in (lambda: parse_header(data, 1 << 20), lambda: open_envelope(data, B)):
            try:
                call()
            except EnvelopeError:
                pass


class SealArgumentsTest(unittest.TestCase):
    def test_caller_mistakes_are_value_errors(self) -> None:
        good = mail(A, B)
        cases = [
            (dataclasses.replace(good, kind="note"), B.public_der, KEY, NONCE),
            (dataclasses.replace(good, uuid=b"\0" * 15), B.public_der, KEY, NONCE),
            (dataclasses.replace(good, sender=C.node_id), B.public_der, KEY, NONCE),
            (dataclasses.replace(good, subject="s" * 256), B.public_der, KEY, NONCE),
            (dataclasses.replace(good, ref=UUID[:8]), B.public_der, KEY, NONCE),
            (dataclasses.replace(good, sender_name="n" * 65), B.public_der, KEY, NONCE),
            (dataclasses.replace(good, kind="receipt"), B.public_der, KEY, NONCE),
            (good, C.public_der, KEY, NONCE),
            (good, B.public_der, KEY[:16], NONCE),
            (good, B.public_der, KEY, NONCE + b"\0"),
        ]
        for content, der, key, nonce in cases:
            with self.assertRaises(ValueError, msg=repr(content)[:80]):
                seal(content, A, der, EXPIRES, key, nonce)
        with self.assertRaises(ValueError):
            seal(good, A, B.public_der, -1, KEY, NONCE)


class KnownAnswerTest(unittest.TestCase):
    def setUp(self) -> None:
        self.kat = json.loads(KAT.read_text(encoding="utf-8"))
        self.sender, self.recipient = identity(0), identity(1)
        self.content = MailContent(
            self.kat["kind"], bytes.fromhex(self.kat["uuid"]), self.sender.node_id,
            self.recipient.node_id, self.kat["created_at"], self.kat["subject"],
            self.kat["body"], bytes.fromhex(self.kat["ref"]))

    def test_deterministic_encodings(self) -> None:
        header = OuterHeader(1, self.recipient.node_id, self.content.uuid, self.kat["expires_at"])
        self.assertEqual(encode_header(header).hex(), self.kat["aad"])
        self.assertEqual(encode_inner(self.content, self.sender.public_der).hex(),
                         self.kat["inner"])

    def test_committed_envelope_opens(self) -> None:
        envelope = bytes.fromhex(self.kat["envelope"])
        self.assertEqual(open_envelope(envelope, self.recipient), self.content)

    def test_committed_envelope_layout(self) -> None:
        # Re-derive everything with plain `cryptography`, independently of envelope.py.
        header, wrapped, nonce, ciphertext = loads(bytes.fromhex(self.kat["envelope"]))
        self.assertEqual(dumps(header).hex(), self.kat["aad"])
        self.assertEqual(nonce.hex(), self.kat["nonce"])
        key = self.recipient.private_key.decrypt(wrapped, OAEP)
        self.assertEqual(key.hex(), self.kat["content_key"])
        inner, signature = loads(AESGCM(key).decrypt(nonce, ciphertext, dumps(header)))
        self.assertEqual(inner.hex(), self.kat["inner"])
        self.assertTrue(verify_signature(self.sender.private_key.public_key(), signature,
                                         b"fluxchat-mail-v1\x00" + inner))
        # GCM is deterministic given key, nonce, plaintext and AAD.
        again = AESGCM(key).encrypt(nonce, dumps([inner, signature]), dumps(header))
        self.assertEqual(again, ciphertext)


if __name__ == "__main__":
    unittest.main()
