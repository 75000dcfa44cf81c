"""keyformats.py hands out cryptography's own encodings and key loaders, not copies; pkcs8.py
writes the plain PKCS#8 of RSA and Ed25519 keys byte for byte as cryptography (OpenSSL) does."""

from __future__ import annotations

import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from fluxchat import keyformats
from fluxchat.pkcs8 import ed25519_private_key_pem, rsa_private_key_info
from tests.keys import identity, identity_4096


class KeyFormatsTest(unittest.TestCase):
    def test_the_same_objects_as_the_serialization_package(self) -> None:
        for name in keyformats.__all__:
            with self.subTest(name=name):
                self.assertIs(getattr(keyformats, name), getattr(serialization, name))

    def test_rsa_pkcs8_as_cryptography_writes_it(self) -> None:
        for key in [identity(index).private_key for index in range(4)] + [identity_4096().private_key]:
            der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            self.assertEqual(rsa_private_key_info(key), der)
            back = keyformats.load_der_private_key(der, None)
            assert isinstance(back, rsa.RSAPrivateKey)
            self.assertEqual(back.private_numbers(), key.private_numbers())

    def test_ed25519_pkcs8_pem_as_cryptography_writes_it(self) -> None:
        for seed in (bytes(32), bytes(range(32)), b"\xff" * 32, bytes(range(100, 132))):
            key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            self.assertEqual(ed25519_private_key_pem(key), pem)
            back = keyformats.load_pem_private_key(pem, None)
            assert isinstance(back, ed25519.Ed25519PrivateKey)
            self.assertEqual(back.private_bytes_raw(), seed)

    def test_public_keys_load_and_refuse_damage(self) -> None:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
        spki = key.public_bytes(keyformats.Encoding.DER, keyformats.PublicFormat.SubjectPublicKeyInfo)
        public = keyformats.load_der_public_key(spki)
        assert isinstance(public, ed25519.Ed25519PublicKey)
        self.assertEqual(public.public_bytes_raw(), key.public_bytes_raw())
        with self.assertRaises(ValueError):
            keyformats.load_der_public_key(spki[:-1])


if __name__ == "__main__":
    unittest.main()
