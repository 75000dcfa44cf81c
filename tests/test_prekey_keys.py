"""prekey_keys.py against cryptography's own constructors."""

from __future__ import annotations

import os
import unittest

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from fluxchat.prekey_keys import (
    MLKEM_PUBLIC_BYTES,
    MLKEM_SEED_BYTES,
    X25519_BYTES,
    mlkem_private,
    mlkem_public,
    x25519_private,
    x25519_public,
)

SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class PrekeyKeysTest(unittest.TestCase):
    def test_mlkem_keys_are_cryptographys(self) -> None:
        for seed in [bytes(MLKEM_SEED_BYTES)] + [os.urandom(MLKEM_SEED_BYTES) for _ in range(20)]:
            ours = mlkem_private(seed)
            theirs = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
            self.assertEqual(ours.private_bytes_raw(), theirs.private_bytes_raw())
            raw = theirs.public_key().public_bytes_raw()
            loaded = mlkem_public(raw)
            self.assertEqual(loaded.public_bytes(*SPKI), theirs.public_key().public_bytes(*SPKI))
            secret, ciphertext = loaded.encapsulate()
            self.assertEqual(theirs.decapsulate(ciphertext), secret)
            self.assertEqual(ours.decapsulate(ciphertext), secret)

    def test_x25519_keys_are_cryptographys(self) -> None:
        for raw in [bytes(X25519_BYTES)] + [os.urandom(X25519_BYTES) for _ in range(20)]:
            ours = x25519_private(raw)
            theirs = x25519.X25519PrivateKey.from_private_bytes(raw)
            self.assertEqual(ours.private_bytes_raw(), theirs.private_bytes_raw())
            public = theirs.public_key().public_bytes_raw()
            self.assertEqual(x25519_public(public).public_bytes_raw(), public)
            peer = x25519.X25519PrivateKey.from_private_bytes(os.urandom(X25519_BYTES))
            self.assertEqual(ours.exchange(peer.public_key()), peer.exchange(x25519_public(public)))

    def test_bad_keys_are_refused_like_cryptography_does(self) -> None:
        raw = mlkem.MLKEM768PrivateKey.from_seed_bytes(os.urandom(MLKEM_SEED_BYTES)).public_key().public_bytes_raw()
        out_of_range = b"\xff\xff" + raw[2:]   # a coefficient >= q: not a valid encoding
        for bad in (out_of_range, raw[:-1], raw + b"\0", b""):
            with self.assertRaises(ValueError):
                mlkem.MLKEM768PublicKey.from_public_bytes(bad)
            with self.assertRaises(ValueError):
                mlkem_public(bad)
        self.assertEqual(len(raw), MLKEM_PUBLIC_BYTES)
        for size in (0, MLKEM_SEED_BYTES - 1, MLKEM_SEED_BYTES + 1):
            with self.assertRaises(ValueError):
                mlkem_private(bytes(size))
        for size in (0, X25519_BYTES - 1, X25519_BYTES + 1):
            for load in (x25519_private, x25519_public):
                with self.assertRaises(ValueError):
                    load(bytes(size))


if __name__ == "__main__":
    unittest.main()
