"""linkcert: the link certificate written and read without cryptography.x509, checked
byte for byte against what cryptography.x509 makes of the same fields."""

from __future__ import annotations

import datetime
import unittest

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat import linkcert
from fluxchat.asn1 import Asn1Error
from fluxchat.tls import LINK_EXTENSION, link_certificate
from tests.keys import link_credentials

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def with_x509(name: str, serial: int, not_before: int, not_after: int, value: bytes) -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(KEY.public_key()).serial_number(serial)
            .not_valid_before(EPOCH + datetime.timedelta(seconds=not_before))
            .not_valid_after(EPOCH + datetime.timedelta(seconds=not_after))
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(LINK_EXTENSION), value),
                           critical=False)
            .sign(KEY, None)).public_bytes(serialization.Encoding.DER)


def ours(name: str, serial: int, not_before: int, not_after: int, value: bytes) -> bytes:
    return linkcert.build(name, KEY.public_key().public_bytes_raw(), KEY.sign, serial, not_before,
                          not_after, (LINK_EXTENSION, value))


class LinkCertTest(unittest.TestCase):
    @settings(max_examples=60, deadline=None)
    @given(name=st.from_regex(r"FC_[1-9A-HJ-NP-Za-km-z]{1,44}", fullmatch=True), serial=st.integers(1, 2**159 - 1),
           not_before=st.integers(0, 4_000_000_000), life=st.integers(0, 10**8),
           value=st.binary(max_size=2000))
    def test_the_same_bytes_as_cryptography_x509(self, name: str, serial: int, not_before: int,
                                                 life: int, value: bytes) -> None:
        value = linkcert.tlv(linkcert.OCTET_STRING, value)   # an extension value is DER
        der = ours(name, serial, not_before, not_before + life, value)
        self.assertEqual(der, with_x509(name, serial, not_before, not_before + life, value))
        spki, found = linkcert.read(der, LINK_EXTENSION)
        self.assertEqual(found, value)
        self.assertEqual(spki, KEY.public_key().public_bytes(serialization.Encoding.DER,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))

    def test_a_node_link_certificate_reads_back(self) -> None:
        link = link_credentials(3)
        pem = link_certificate(link)
        der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
        spki, _ = linkcert.read(der, LINK_EXTENSION)
        self.assertEqual(serialization.load_der_public_key(spki).public_bytes_raw(),   # type: ignore[union-attr]
                         link.private_key.public_key().public_bytes_raw())

    def test_damage_is_an_asn1_error_only(self) -> None:
        der = ours("FC_x", 7, 0, 100, linkcert.tlv(linkcert.OCTET_STRING, b"record"))
        for cut in range(len(der)):
            with self.assertRaises(Asn1Error):
                linkcert.read(der[:cut], LINK_EXTENSION)
        with self.assertRaises(Asn1Error):
            linkcert.read(der, "1.2.3.4")   # not the extension we want
        for index in range(len(der)):   # any single changed byte: read it, or refuse with Asn1Error
            damaged = bytearray(der)
            damaged[index] ^= 0x55
            try:
                linkcert.read(bytes(damaged), LINK_EXTENSION)
            except Asn1Error:
                pass

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=400))
    def test_any_bytes_only_raise_asn1_error(self, data: bytes) -> None:
        try:
            linkcert.read(data, LINK_EXTENSION)
        except Asn1Error:
            pass


if __name__ == "__main__":
    unittest.main()
