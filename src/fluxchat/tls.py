"""TLS 1.3 for peer links: the acceptor's certificate, the contexts, and what a dialer reads
from the certificate it was shown.

The acceptor's certificate is made in memory from its current link key (linkkeys.py): a
self-signed X.509 certificate whose subject key is the Ed25519 link key, carrying in one
extension the link key record and the node's RSA identity key, so TLS 1.3 costs one Ed25519
signature instead of an RSA-4096 one. The dialer proves its identity inside the link (see
handshake.py), because Python's ssl cannot accept a self-signed client certificate without
a CA; it signs the TLS session's channel binding, which both ends read here.
"""

from __future__ import annotations

import os
import ssl
import time

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import keyformats, linkcert
from .asn1 import Asn1Error, read_tlv
from .cbor import dumps, loads
from .errors import FluxError, IdentityError
from .handshake import PeerCertificate
from .identity import Identity
from .ids import format_id
from .linkkeys import LinkCredentials, RecordCheck
from .pkcs8 import ed25519_private_key_pem

# Private arc (2.25 = UUID-based, needs no registration): the link key extension.
LINK_EXTENSION = "2.25.188466210331757366553466407787325411601"


def link_certificate(link: LinkCredentials) -> bytes:
    """The acceptor's certificate (PEM) for `link`; valid exactly as long as its record.
    Written by linkcert.py: cryptography.x509 would cost every node 4 MiB (bench/rss.py)."""
    record = link.record
    der = linkcert.build(
        format_id(link.node_id), link.private_key.public_key().public_bytes_raw(), link.private_key.sign,
        serial=int.from_bytes(record.link_key[:16], "big") >> 1 or 1,
        not_before=record.created_at, not_after=record.expires_at,
        extension=(LINK_EXTENSION, _octet_string(dumps([link.encoded, link.identity_der]))))
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def server_context(link: LinkCredentials) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_NONE
    context.num_tickets = 0   # links are never resumed: save the acceptor the tickets
    # ssl loads keys only from files: hand it the key through an anonymous in-memory file,
    # so the link key never touches the disk.
    key_pem = ed25519_private_key_pem(link.private_key)   # not private_bytes: see pkcs8.py
    fd = os.memfd_create("fluxchat-link-key", os.MFD_CLOEXEC)
    try:
        os.write(fd, link_certificate(link) + key_pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    except (OSError, ssl.SSLError) as exc:
        raise IdentityError(f"cannot load the TLS link certificate: {exc}") from None
    finally:
        os.close(fd)
    return context


class LinkTls:
    """Our current link key and the acceptor's TLS context made from it. A new link key is
    made at start and whenever the record has lived half its life (one RSA signature)."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.credentials, self.server = self._renew(int(time.time()))

    def current(self) -> tuple[LinkCredentials, ssl.SSLContext]:
        now = int(time.time())
        if self.credentials.renewal_due(now):
            self.credentials, self.server = self._renew(now)
        return self.credentials, self.server

    def _renew(self, now: int) -> tuple[LinkCredentials, ssl.SSLContext]:
        credentials = LinkCredentials.issue(self.identity, os.urandom(32), now)
        return credentials, server_context(credentials)


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    # No CA: trust comes from the link key record in the certificate (handshake.py).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def channel_binding(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes:
    """The TLS session's channel binding, the same at both ends and unique to this session:
    "tls-unique" (RFC 5929), in TLS 1.3 the client's Finished message (an HMAC over the
    whole handshake transcript, both key shares and the certificate included)."""
    binding = ssl_object.get_channel_binding("tls-unique") if ssl_object else None
    if not binding:
        raise IdentityError("no TLS channel binding")
    return binding


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate:
    """What the acceptor's certificate shows (not yet checked: see handshake.py)."""
    if ssl_object is None:
        raise IdentityError("not a TLS connection")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise IdentityError("peer sent no certificate")
    try:
        spki, raw = linkcert.read(der, LINK_EXTENSION)
        key = keyformats.load_der_public_key(spki)
        tag, start, end = read_tlv(raw, 0)
        fields = loads(raw[start:end], max_depth=1, max_items=3)
    except (ValueError, UnsupportedAlgorithm, Asn1Error, FluxError):
        raise IdentityError("peer certificate is malformed or not a link certificate") \
            from None
    if (tag != 0x04 or end != len(raw) or not isinstance(key, ed25519.Ed25519PublicKey)
            or not isinstance(fields, list) or len(fields) != 2
            or not all(isinstance(item, bytes) for item in fields)):
        raise IdentityError("peer certificate is not a link certificate")
    return PeerCertificate(key.public_bytes_raw(), fields[0], fields[1])


def verified_peer_id(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, records: RecordCheck,
                     unix_time: int) -> bytes:
    """The node ID the acceptor proved in TLS: its certificate key is the link key of a
    record its identity key signed. IdentityError otherwise."""
    certificate = peer_certificate(ssl_object)
    try:
        record = records.check(certificate.link_record, certificate.identity_der, unix_time)
    except FluxError as exc:
        raise IdentityError(str(exc)) from None
    if record.link_key != certificate.link_key:
        raise IdentityError("the TLS key is not the certified link key")
    return record.node_id


def _octet_string(data: bytes) -> bytes:
    """DER OCTET STRING (the extension value must be DER)."""
    size = len(data)
    if size < 0x80:
        return b"\x04" + bytes([size]) + data
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return b"\x04" + bytes([0x80 | len(length)]) + length + data
