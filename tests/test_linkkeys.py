"""Link key records (linkkeys.py) and the link certificate that carries them (tls.py)."""

from __future__ import annotations

import ssl
import unittest
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fluxchat import certified
from fluxchat.cbor import dumps
from fluxchat.errors import IdentityError
from fluxchat.linkkeys import (
    LIFETIME,
    LinkCredentials,
    LinkKeyError,
    RecordCheck,
    decode_record,
    verify_proof,
)
from fluxchat.tls import LINK_EXTENSION, link_certificate, peer_certificate
from tests.keys import identity, key_dir

NOW = 1_795_000_000
SEED = bytes(range(32))


def credentials(index: int = 1, now: int = NOW, lifetime: int = LIFETIME) -> LinkCredentials:
    return LinkCredentials.issue(identity(index), SEED, now, lifetime)


class RecordTest(unittest.TestCase):
    def test_layout_and_check(self) -> None:
        link = credentials()
        record = decode_record(link.encoded)
        self.assertEqual(record, link.record)
        self.assertEqual(link.encoded[:2], bytes.fromhex("8601"))
        self.assertEqual((record.created_at, record.expires_at), (NOW, NOW + LIFETIME))
        checked = RecordCheck().check(link.encoded, identity(1).public_der, NOW + 5)
        self.assertEqual(checked.node_id, identity(1).node_id)

    def test_every_byte_flip_is_refused(self) -> None:
        link = credentials()
        for index in range(len(link.encoded)):
            flipped = bytearray(link.encoded)
            flipped[index] ^= 0x01
            with self.subTest(index=index), self.assertRaises(LinkKeyError):
                RecordCheck().check(bytes(flipped), identity(1).public_der, NOW + 5)

    def test_wrong_identity_time_and_shape_are_refused(self) -> None:
        link, check = credentials(), RecordCheck()
        with self.assertRaises(LinkKeyError):
            check.check(link.encoded, identity(2).public_der, NOW)   # another node's key
        for moment in (NOW - 601, NOW + LIFETIME):
            with self.subTest(moment=moment), self.assertRaises(LinkKeyError):
                check.check(link.encoded, identity(1).public_der, moment)
        check.check(link.encoded, identity(1).public_der, NOW - 600)   # skew allowed
        fields = [1, identity(1).node_id, NOW, NOW + 8 * 86400, link.record.link_key]
        too_long = dumps([*fields, certified.certify(identity(1), b"fluxchat-linkkey-v1\x00",
                                                     fields)])
        with self.assertRaises(LinkKeyError):
            check.check(too_long, identity(1).public_der, NOW)
        with self.assertRaises(ValueError):
            credentials(lifetime=8 * 86400)
        # Signed under the mail key context: a signature is bound to its kind of record.
        mail_signed = dumps([*fields[:3], NOW + 3600, fields[4], certified.certify(
            identity(1), b"fluxchat-mailkey-v1\x00", [*fields[:3], NOW + 3600, fields[4]])])
        with self.assertRaises(LinkKeyError):
            check.check(mail_signed, identity(1).public_der, NOW)

    def test_a_record_costs_one_rsa_verification(self) -> None:
        link, check = credentials(), RecordCheck()
        with mock.patch.object(certified, "verify", wraps=certified.verify) as verify:
            for _ in range(5):
                check.check(link.encoded, identity(1).public_der, NOW)
        self.assertEqual(verify.call_count, 1)
        with self.assertRaises(LinkKeyError):   # the cached record still expires
            check.check(link.encoded, identity(1).public_der, NOW + LIFETIME)

    def test_renewal_after_half_the_life(self) -> None:
        link = credentials()
        self.assertFalse(link.renewal_due(NOW + LIFETIME // 2 - 1))
        self.assertTrue(link.renewal_due(NOW + LIFETIME // 2))
        self.assertTrue(link.renewal_due(NOW - 1))   # the clock went back

    def test_proof_names_the_session_and_both_ends(self) -> None:
        link = credentials()
        me, other = identity(1).node_id, identity(2).node_id
        proof = link.prove(b"binding", me, other)
        self.assertTrue(verify_proof(link.record, proof, b"binding", me, other))
        self.assertFalse(verify_proof(link.record, proof, b"binding!", me, other))
        self.assertFalse(verify_proof(link.record, proof, b"binding", other, me))
        stranger = LinkCredentials.issue(identity(2), bytes(32), NOW)
        self.assertFalse(verify_proof(stranger.record, proof, b"binding", me, other))


class _FakeTls:
    def __init__(self, der: bytes) -> None:
        self.der = der

    def getpeercert(self, binary_form: bool) -> bytes:
        return self.der


class CertificateTest(unittest.TestCase):
    def test_certificate_carries_key_record_and_identity(self) -> None:
        link = credentials()
        cert = x509.load_pem_x509_certificate(link_certificate(link))
        shown = peer_certificate(_FakeTls(cert.public_bytes(Encoding.DER)))  # type: ignore[arg-type]
        self.assertEqual(shown.link_key, link.record.link_key)
        self.assertEqual(shown.link_record, link.encoded)
        self.assertEqual(shown.identity_der, identity(1).public_der)
        extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(LINK_EXTENSION))
        self.assertFalse(extension.critical)
        self.assertEqual(int(cert.not_valid_after_utc.timestamp()), NOW + LIFETIME)

    def test_an_rsa_certificate_is_not_a_link_certificate(self) -> None:
        # The node's RSA certificate of protocol version 1: no link key, no record.
        der = ssl.PEM_cert_to_DER_cert((key_dir(1) / "certificate.pem").read_text())
        with self.assertRaisesRegex(IdentityError, "not a link certificate"):
            peer_certificate(_FakeTls(der))  # type: ignore[arg-type]


if __name__ == "__main__":
    unittest.main()
