"""Just enough DER reading to take the public key out of an X.509 certificate.

Loading `cryptography.x509` costs a node process about 8 MiB of memory for one job done at
every dial: find the SubjectPublicKeyInfo the acceptor's certificate carries. The walk below
only slices bytes; whatever it returns is then parsed and checked by `cryptography`
(load_public_key) and hashed against the expected node ID, so a lying certificate gains
nothing.
"""

from __future__ import annotations

import base64
import re

SEQUENCE = 0x30
CONTEXT_0 = 0xA0            # [0] EXPLICIT, the certificate's version field
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)


class Asn1Error(ValueError):
    """Not the DER structure we expected."""


def read_tlv(data: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `offset`."""
    if offset + 2 > len(data):
        raise Asn1Error("truncated element")
    tag, first = data[offset], data[offset + 1]
    start = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > len(data):
            raise Asn1Error("bad length")
        length = int.from_bytes(data[start:start + count], "big")
        start += count
    if start + length > len(data):
        raise Asn1Error("element runs past the end")
    return tag, start, start + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    """The (tag, element start, element end) of each element inside [start, end)."""
    found = []
    while start < end:
        tag, body, stop = read_tlv(data, start)
        if stop > end:
            raise Asn1Error("element runs past its parent")
        found.append((tag, start, stop))
        start = stop
    return found


def spki_from_certificate(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate (RFC 5280 §4.1)."""
    tag, start, end = read_tlv(cert_der, 0)
    if tag != SEQUENCE or end != len(cert_der):
        raise Asn1Error("not a certificate")
    tag, tbs_start, tbs_end = read_tlv(cert_der, start)
    if tag != SEQUENCE:
        raise Asn1Error("no tbsCertificate")
    fields = _children(cert_der, tbs_start, tbs_end)
    if fields and fields[0][0] == CONTEXT_0:
        fields = fields[1:]       # version
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo
    if len(fields) < 6 or fields[5][0] != SEQUENCE:
        raise Asn1Error("no subjectPublicKeyInfo")
    _, spki_start, spki_end = fields[5]
    return cert_der[spki_start:spki_end]


def pem_certificate_to_der(pem: bytes) -> bytes:
    match = _PEM_CERT.search(pem)
    if match is None:
        raise Asn1Error("no PEM certificate")
    try:
        return base64.b64decode(b"".join(match.group(1).split()), validate=True)
    except ValueError as exc:
        raise Asn1Error("bad base64 in PEM certificate") from exc
