"""TLS 1.3 contexts for peer links and the certificate pin check.

Only the acceptor's certificate takes part in TLS; the dialer proves its identity inside
the link (see session.py), because Python's ssl cannot accept a self-signed client
certificate without a CA.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from .asn1 import Asn1Error, spki_from_certificate
from .errors import IdentityError
from .identity import CERTIFICATE_FILE, Identity, load_public_key, spki_der


def server_context(identity: Identity, data_dir: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_NONE
    # ssl loads keys only from files: hand it the decrypted key through an anonymous
    # in-memory file, so it never touches the disk and PBKDF2 does not run twice.
    key_pem = identity.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    fd = os.memfd_create("fluxchat-tls-key", os.MFD_CLOEXEC)
    try:
        os.write(fd, key_pem)
        context.load_cert_chain(str(data_dir / CERTIFICATE_FILE), f"/proc/self/fd/{fd}")
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(f"cannot load the TLS certificate and key: {exc}") from None
    finally:
        os.close(fd)
    return context


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # No CA: trust comes from pinning the certificate key to the node ID below.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def peer_certificate_key(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes:
    """The SPKI DER of the certificate the acceptor presented (and proved in TLS 1.3)."""
    if ssl_object is None:
        raise IdentityError("not a TLS connection")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise IdentityError("peer sent no certificate")
    try:
        spki = spki_from_certificate(der)
    except Asn1Error as exc:
        raise IdentityError("peer certificate is malformed") from exc
    return spki_der(load_public_key(spki))   # re-encoded: one canonical form to hash
