"""Encrypted PKCS#8 (RFC 5958) with PBES2 / PBKDF2-HMAC-SHA256 / AES-256-CBC (RFC 8018), and
the plain PKCS#8 of the RSA and Ed25519 keys a running node encodes.

The `cryptography` package writes encrypted PKCS#8 only with OpenSSL's fixed iteration
count, so we derive the key and encrypt with its primitives and wrap the result in the
standard ASN.1 structure here. Reading goes through `cryptography` (OpenSSL) as usual,
and `openssl pkey` opens the file.

A key's `private_bytes` would give the plain PKCS#8 as well, but it makes cryptography import
its `serialization` package (OpenSSH formats, EC and DSA keys: 0.6 MiB in every node process,
see keyformats.py); a node encodes its identity key at start (mailkeys.wrapping_key) and its
link key at each renewal (tls.server_context). DER has one encoding per value, so the bytes
are those OpenSSL writes: tests/test_pkcs8.py compares them.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

# Object identifiers, DER-encoded content octets.
OID_PBES2 = bytes.fromhex("2a864886f70d01050d")        # 1.2.840.113549.1.5.13
OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")       # 1.2.840.113549.1.5.12
OID_HMAC_SHA256 = bytes.fromhex("2a864886f70d0209")    # 1.2.840.113549.2.9
OID_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42
OID_RSA_ENCRYPTION = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
OID_ED25519 = bytes.fromhex("2b6570")                 # 1.3.101.112
NULL = b"\x05\x00"
OCTET_STRING = 0x04


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        head = bytes([length])
    else:
        raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + head + content


def _seq(*parts: bytes) -> bytes:
    return _der(0x30, b"".join(parts))


def _int(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # leading 0 keeps it positive
    return _der(0x02, raw)


def _oid(content: bytes) -> bytes:
    return _der(0x06, content)


def rsa_private_key_info(key: rsa.RSAPrivateKey) -> bytes:
    """The unencrypted PKCS#8 DER of an RSA key (RFC 5958 around RFC 8017's RSAPrivateKey)."""
    numbers = key.private_numbers()
    public = numbers.public_numbers
    rsa_key = _seq(*(_int(value) for value in (0, public.n, public.e, numbers.d, numbers.p, numbers.q,
                                               numbers.dmp1, numbers.dmq1, numbers.iqmp)))
    return _seq(_int(0), _seq(_oid(OID_RSA_ENCRYPTION), NULL), _der(OCTET_STRING, rsa_key))


def ed25519_private_key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    """The unencrypted PKCS#8 PEM of an Ed25519 key (RFC 8410: the seed in an OCTET STRING)."""
    der = _seq(_int(0), _seq(_oid(OID_ED25519)),
               _der(OCTET_STRING, _der(OCTET_STRING, key.private_bytes_raw())))
    return _pem("PRIVATE KEY", der)


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode("ascii")


def encrypt_pkcs8(plain_der: bytes, password: bytes, iterations: int,
                  salt: bytes, iv: bytes) -> bytes:
    """Wrap an unencrypted PKCS#8 DER key; returns PEM. `salt` and `iv` come from the caller."""
    if len(iv) != 16 or len(salt) < 16 or iterations < 1:
        raise ValueError("PBES2 parameters out of range")
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    key = kdf.derive(password)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain_der) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    kdf_params = _seq(_der(OCTET_STRING, salt), _int(iterations), _seq(_oid(OID_HMAC_SHA256), NULL))
    algorithm = _seq(
        _oid(OID_PBES2),
        _seq(_seq(_oid(OID_PBKDF2), kdf_params), _seq(_oid(OID_AES256_CBC), _der(OCTET_STRING, iv))),
    )
    return _pem("ENCRYPTED PRIVATE KEY", _seq(algorithm, _der(OCTET_STRING, ciphertext)))
