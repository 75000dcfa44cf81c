"""cryptography's public key encodings and DER/PEM key loaders, without its `serialization` package.

Importing `cryptography.hazmat.primitives.serialization` runs its `__init__`, which imports the
OpenSSH key formats (`serialization.ssh`) and with them the EC and DSA key classes and the OID
table: 0.6 MiB in every node process (bench/imports.py), for formats a node never reads. The
names a node needs are defined elsewhere, and the package only gathers them: the encodings in
`cryptography.hazmat.primitives._serialization` (which the key classes import themselves), the
loaders in cryptography's Rust module (`serialization.base` binds them from there). Here they are
taken from where they are defined: the same objects (tests/test_keyformats.py checks that they
are the package's own, so a cryptography that moves them fails that test, not a node).

Private keys are not written through here: a key's `private_bytes` imports the package from
inside cryptography's Rust code (to recognise `NoEncryption`), so the plain PKCS#8 a running
node needs is encoded in pkcs8.py. tests/test_imports.py checks that a node never loads it.
"""

from __future__ import annotations

from cryptography.hazmat.bindings._rust import openssl as _rust_openssl
from cryptography.hazmat.primitives._serialization import Encoding, PublicFormat

load_der_private_key = _rust_openssl.keys.load_der_private_key
load_der_public_key = _rust_openssl.keys.load_der_public_key
load_pem_private_key = _rust_openssl.keys.load_pem_private_key
load_pem_public_key = _rust_openssl.keys.load_pem_public_key

__all__ = ["Encoding", "PublicFormat", "load_der_private_key", "load_der_public_key", "load_pem_private_key",
           "load_pem_public_key"]
