"""Encrypted PKCS#8 (RFC 5958) with PBES2 / PBKDF2-HMAC-SHA256 / AES-256-CBC (RFC 8018).

The `cryptography` package writes encrypted PKCS#8 only with OpenSSL's fixed iteration
count, so we derive the key and encrypt with its primitives and wrap the result in the
standard ASN.1 structure here. Reading goes through `cryptography` (OpenSSL) as usual,
and `openssl pkey` opens the file.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

# Object identifiers, DER-encoded content octets.
OID_PBES2 = bytes.fromhex("2a864886f70d01050d")        # 1.2.840.113549.1.5.13
OID_PBKDF2 = bytes.fromhex("2a864886f70d01050c")       # 1.2.840.113549.1.5.12
OID_HMAC_SHA256 = bytes.fromhex("2a864886f70d0209")    # 1.2.840.113549.2.9
OID_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42


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
    kdf_params = _seq(_der(0x04, salt), _int(iterations), _seq(_oid(OID_HMAC_SHA256), b"\x05\x00"))
    algorithm = _seq(
        _oid(OID_PBES2),
        _seq(_seq(_oid(OID_PBKDF2), kdf_params), _seq(_oid(OID_AES256_CBC), _der(0x04, iv))),
    )
    der = _seq(algorithm, _der(0x04, ciphertext))
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    pem = ["-----BEGIN ENCRYPTED PRIVATE KEY-----", *lines, "-----END ENCRYPTED PRIVATE KEY-----", ""]
    return "\n".join(pem).encode("ascii")
