"""The DER walk that takes the public key out of a certificate, checked against `cryptography`."""

from __future__ import annotations

import unittest

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.asn1 import Asn1Error, pem_certificate_to_der, read_tlv, spki_from_certificate
from tests.keys import KEYS, NODE_COUNT, key_dir


def cert_der(index: int) -> bytes:
    return pem_certificate_to_der((key_dir(index) / "certificate.pem").read_bytes())


def expected_spki(der: bytes) -> bytes:
    key = x509.load_der_x509_certificate(der).public_key()
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


class SpkiTest(unittest.TestCase):
    def test_agrees_with_cryptography_on_every_test_certificate(self) -> None:
        ders = [cert_der(i) for i in range(NODE_COUNT)]
        ders.append(pem_certificate_to_der((KEYS / "rsa4096" / "certificate.pem").read_bytes()))
        for der in ders:
            self.assertEqual(spki_from_certificate(der), expected_spki(der))

    def test_long_form_lengths(self) -> None:
        self.assertEqual(read_tlv(b"\x04\x81\x02ab", 0), (4, 3, 5))
        self.assertEqual(read_tlv(b"\x30\x00", 0), (0x30, 2, 2))
        for bad in (b"", b"\x30", b"\x30\x80", b"\x30\x85\x01\x02\x03\x04\x05", b"\x30\x05ab"):
            with self.assertRaises(Asn1Error):
                read_tlv(bad, 0)

    def test_truncated_and_padded_certificates_are_refused(self) -> None:
        der = cert_der(0)
        for bad in (der[:-1], der + b"\0", der[:100], b"\x30\x03\x02\x01\x01", b""):
            with self.assertRaises(Asn1Error):
                spki_from_certificate(bad)
        with self.assertRaises(Asn1Error):
            pem_certificate_to_der(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----")

    @settings(max_examples=300)
    @given(st.binary(max_size=300), st.integers(min_value=0, max_value=2000))
    def test_arbitrary_and_mutated_input_only_raises_asn1_error(self, noise: bytes,
                                                                at: int) -> None:
        der = cert_der(1)
        at %= len(der)
        for data in (noise, der[:at] + noise + der[at + len(noise):]):
            try:
                spki_from_certificate(data)
            except Asn1Error:
                pass


if __name__ == "__main__":
    unittest.main()
