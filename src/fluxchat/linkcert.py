"""The link certificate in DER (RFC 5280), written and read without `cryptography.x509`.

A node's TLS certificate is always the same shape (tls.py): self-signed, Ed25519 subject key
and signature, the node ID as common name, and one extension carrying the link key record.
`cryptography.x509` would build and parse it in a few calls, but importing it costs every
node process about 4 MiB (bench/rss.py), for this one shape. So the few DER elements are
written here, and reading takes out only the two things a dialer uses: the subject key and
the extension. Nothing read here is trusted: the key must be the one a record signed by the
node's identity certifies (handshake.py), and TLS proved that the peer holds it.

The bytes are what `x509.CertificateBuilder` makes for the same fields (tests/test_linkcert.py
compares them), so a certificate looks the same to every TLS implementation as before.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from .asn1 import SEQUENCE, Asn1Error, read_tlv

INTEGER, BIT_STRING, OCTET_STRING, OID, UTF8_STRING, SET = 0x02, 0x03, 0x04, 0x06, 0x0C, 0x31
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
CONTEXT_0, CONTEXT_3 = 0xA0, 0xA3
ED25519 = "1.3.101.112"
COMMON_NAME = "2.5.4.3"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def oid(dotted: str) -> bytes:
    arcs = [int(arc) for arc in dotted.split(".")]
    body = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        while arc := arc >> 7:
            chunk.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(chunk))
    return tlv(OID, bytes(body))


def integer(value: int) -> bytes:
    """A non-negative INTEGER, minimal: a leading zero byte only where the high bit is set."""
    return tlv(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def der_time(unix: int) -> bytes:
    """UTCTime until 2049, GeneralizedTime from 2050 on (RFC 5280 §4.1.2.5)."""
    when = _EPOCH + datetime.timedelta(seconds=unix)
    if when.year < 2050:
        return tlv(UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(GENERALIZED_TIME, when.strftime("%Y%m%d%H%M%SZ").encode())


def build(common_name: str, public_key: bytes, sign: Callable[[bytes], bytes], serial: int,
          not_before: int, not_after: int, extension: tuple[str, bytes]) -> bytes:
    """A self-signed Ed25519 certificate (DER): `public_key` is the raw 32-byte key, `sign`
    signs with its private half, `extension` is (OID, DER value), not critical."""
    algorithm = tlv(SEQUENCE, oid(ED25519))
    name = tlv(SEQUENCE, tlv(SET, tlv(SEQUENCE, oid(COMMON_NAME) + tlv(UTF8_STRING, common_name.encode()))))
    extension_oid, value = extension
    tbs = tlv(SEQUENCE, b"".join([
        tlv(CONTEXT_0, integer(2)),                       # version 3
        integer(serial), algorithm, name,
        tlv(SEQUENCE, der_time(not_before) + der_time(not_after)),
        name,
        tlv(SEQUENCE, algorithm + tlv(BIT_STRING, b"\x00" + public_key)),
        tlv(CONTEXT_3, tlv(SEQUENCE, tlv(SEQUENCE, oid(extension_oid) + tlv(OCTET_STRING, value)))),
    ]))
    return tlv(SEQUENCE, tbs + algorithm + tlv(BIT_STRING, b"\x00" + sign(tbs)))


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, element start, content start, end) of each element inside [start, end)."""
    found = []
    while start < end:
        tag, body, stop = read_tlv(data, start)
        if stop > end:
            raise Asn1Error("element runs past its parent")
        found.append((tag, start, body, stop))
        start = stop
    return found


def read(der: bytes, extension_oid: str) -> tuple[bytes, bytes]:
    """(SubjectPublicKeyInfo DER, value of extension `extension_oid`) of a certificate;
    Asn1Error if it is not a certificate or lacks that extension."""
    tag, start, end = read_tlv(der, 0)
    if tag != SEQUENCE or end != len(der):
        raise Asn1Error("not a certificate")
    parts = _children(der, start, end)
    if len(parts) != 3 or parts[0][0] != SEQUENCE:
        raise Asn1Error("not a certificate")
    fields = _children(der, parts[0][2], parts[0][3])
    if fields and fields[0][0] == CONTEXT_0:
        fields = fields[1:]   # version
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ..., [3] extensions
    if len(fields) < 7 or fields[5][0] != SEQUENCE or fields[-1][0] != CONTEXT_3:
        raise Asn1Error("no subject key or no extensions")
    spki = der[fields[5][1]:fields[5][3]]
    tag, start, end = read_tlv(der, fields[-1][2])
    if tag != SEQUENCE or end != fields[-1][3]:
        raise Asn1Error("bad extensions")
    wanted = oid(extension_oid)
    for _, _, body, stop in _children(der, start, end):
        items = _children(der, body, stop)   # extnID, [critical], extnValue
        if len(items) in (2, 3) and der[items[0][1]:items[0][3]] == wanted and items[-1][0] == OCTET_STRING:
            return spki, der[items[-1][2]:items[-1][3]]
    raise Asn1Error("no such extension")
