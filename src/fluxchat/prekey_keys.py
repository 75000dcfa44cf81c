"""The two halves of a prekey (ML-KEM-768 and X25519) from raw bytes, through cryptography's DER
key loaders.

cryptography's own constructors for these keys (`MLKEM768PrivateKey.from_seed_bytes`,
`X25519PublicKey.from_public_bytes`, ...) first build its OpenSSL backend object to ask whether
the algorithm is supported: 0.46 MiB in every node process (bench/rss.py), since a node loads
its prekeys at start. The same keys load from their PKCS#8 and SubjectPublicKeyInfo encodings
(RFC 9935 for ML-KEM, seed form; RFC 8410 for X25519), whose DER is a fixed prefix followed by
the raw bytes. tests/test_prekey_keys.py compares both ways, with valid and invalid keys.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from . import keyformats

MLKEM_SEED_BYTES, MLKEM_PUBLIC_BYTES, X25519_BYTES = 64, 1184, 32
_MLKEM = bytes.fromhex("300b0609608648016503040402")   # AlgorithmIdentifier id-alg-ml-kem-768
_X25519 = bytes.fromhex("300506032b656e")               # AlgorithmIdentifier id-X25519
_MLKEM_PKCS8 = bytes.fromhex("3054020100") + _MLKEM + bytes.fromhex("04428040")   # [0] seed
_MLKEM_SPKI = bytes.fromhex("308204b2") + _MLKEM + bytes.fromhex("038204a100")
_X25519_PKCS8 = bytes.fromhex("302e020100") + _X25519 + bytes.fromhex("04220420")
_X25519_SPKI = bytes.fromhex("302a") + _X25519 + bytes.fromhex("032100")


def mlkem_private(seed: bytes) -> mlkem.MLKEM768PrivateKey:
    """`MLKEM768PrivateKey.from_seed_bytes(seed)`."""
    key = keyformats.load_der_private_key(_MLKEM_PKCS8 + _sized(seed, MLKEM_SEED_BYTES), None)
    if not isinstance(key, mlkem.MLKEM768PrivateKey):
        raise ValueError("not an ML-KEM-768 key")
    return key


def mlkem_public(raw: bytes) -> mlkem.MLKEM768PublicKey:
    """`MLKEM768PublicKey.from_public_bytes(raw)`."""
    key = keyformats.load_der_public_key(_MLKEM_SPKI + _sized(raw, MLKEM_PUBLIC_BYTES))
    if not isinstance(key, mlkem.MLKEM768PublicKey):
        raise ValueError("not an ML-KEM-768 key")
    return key


def x25519_private(raw: bytes) -> x25519.X25519PrivateKey:
    """`X25519PrivateKey.from_private_bytes(raw)`."""
    key = keyformats.load_der_private_key(_X25519_PKCS8 + _sized(raw, X25519_BYTES), None)
    if not isinstance(key, x25519.X25519PrivateKey):
        raise ValueError("not an X25519 key")
    return key


def x25519_public(raw: bytes) -> x25519.X25519PublicKey:
    """`X25519PublicKey.from_public_bytes(raw)`."""
    key = keyformats.load_der_public_key(_X25519_SPKI + _sized(raw, X25519_BYTES))
    if not isinstance(key, x25519.X25519PublicKey):
        raise ValueError("not an X25519 key")
    return key


def _sized(raw: bytes, size: int) -> bytes:
    if len(raw) != size:
        raise ValueError(f"expected {size} bytes of key, got {len(raw)}")
    return raw
