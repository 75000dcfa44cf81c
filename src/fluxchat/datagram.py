"""Link-less lookup datagrams (docs/PROTOCOL.md §16): the codec, pure.

A lookup query to a node we hold no link with costs one round trip as a UDP datagram instead
of the 3–4 of a new TLS link. Only node finding goes this way: the answer is a list of hints
that steer the lookup; nothing in it enters the routing table or is trusted until a TLS link
(or a contact probe) authenticates it.

No amplification: a request is always REQUEST_SIZE bytes (zero padding), and an answer is
never longer than the request that caused it (contacts are cut to fit). REQUEST_SIZE keeps a
datagram under the IPv6 minimum MTU (1280 - 40 - 8 = 1232 bytes of payload): no fragments.
Decoders never raise: anything that is not exactly one of our datagrams is None.
"""

from __future__ import annotations

import ipaddress
import struct

from .ids import ID_BYTES
from .records import record

MAGIC = b"FXDG"
VERSION = 1
FIND_NODE, NODES = 1, 2
TXID_BYTES = 16                 # random, chosen per request: an off-path forger must guess it
REQUEST_SIZE = 1200             # every request, padded; the cap of every answer
_HEAD = struct.Struct(f">4sBB{TXID_BYTES}s")              # magic, version, type, txid
_REQUEST = struct.Struct(f">4sBB{TXID_BYTES}s{ID_BYTES}s")  # ... target
_PADDING = bytes(REQUEST_SIZE - _REQUEST.size)
_PORT = struct.Struct(">H")
ANSWER_HEAD = _HEAD.size + 1    # ... contact count (u8)
FAMILY_BYTES = {4: 4, 6: 16}    # address family byte -> address length
MAX_CONTACTS = (REQUEST_SIZE - ANSWER_HEAD) // (ID_BYTES + 1 + 4 + 2)   # all IPv4: 30


@record
class FindNodeRequest:
    txid: bytes
    target: bytes


@record
class Contact:
    node_id: bytes
    host: str       # an IP literal, in its compressed form
    port: int


@record
class NodesAnswer:
    txid: bytes
    contacts: tuple[Contact, ...]


def encode_request(txid: bytes, target: bytes) -> bytes:
    if len(txid) != TXID_BYTES or len(target) != ID_BYTES:
        raise ValueError("bad transaction id or target")
    return _REQUEST.pack(MAGIC, VERSION, FIND_NODE, txid, target) + _PADDING


def decode_request(data: bytes) -> FindNodeRequest | None:
    """The request in a datagram: exactly REQUEST_SIZE bytes, zero padding."""
    if len(data) != REQUEST_SIZE or data[_REQUEST.size:] != _PADDING:
        return None
    magic, version, kind, txid, target = _REQUEST.unpack_from(data)
    if magic != MAGIC or version != VERSION or kind != FIND_NODE:
        return None
    return FindNodeRequest(txid, target)


def _entry(contact: Contact) -> bytes | None:
    """One contact on the wire: node ID, family (4 or 6), address, port; None if unusable."""
    try:
        address = ipaddress.ip_address(contact.host)
    except ValueError:
        return None
    if len(contact.node_id) != ID_BYTES or not 1 <= contact.port <= 65535:
        return None
    return contact.node_id + bytes([address.version]) + address.packed + _PORT.pack(contact.port)


def encode_answer(txid: bytes, contacts: list[Contact], limit: int = REQUEST_SIZE) -> bytes:
    """The answer to a request of `limit` bytes: the contacts in order, as many as fit."""
    if len(txid) != TXID_BYTES:
        raise ValueError("bad transaction id")
    body, count, size = bytearray(), 0, ANSWER_HEAD
    for contact in contacts:
        entry = _entry(contact)
        if entry is None:
            continue
        if size + len(entry) > limit or count == 255:
            break
        body += entry
        size += len(entry)
        count += 1
    return _HEAD.pack(MAGIC, VERSION, NODES, txid) + bytes([count]) + bytes(body)


def decode_answer(data: bytes) -> NodesAnswer | None:
    """An answer: every entry well formed, nothing left over, no larger than a request."""
    if not ANSWER_HEAD <= len(data) <= REQUEST_SIZE:
        return None
    magic, version, kind, txid = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION or kind != NODES:
        return None
    count, offset, contacts = data[_HEAD.size], ANSWER_HEAD, []
    for _ in range(count):
        family_at = offset + ID_BYTES
        if family_at >= len(data):
            return None
        width = FAMILY_BYTES.get(data[family_at])
        end = family_at + 1 + (width or 0) + _PORT.size
        if width is None or end > len(data):
            return None
        packed = data[family_at + 1:end - _PORT.size]
        address = ipaddress.IPv4Address(packed) if width == 4 else ipaddress.IPv6Address(packed)
        (port,) = _PORT.unpack_from(data, end - _PORT.size)
        if port == 0:
            return None
        contacts.append(Contact(bytes(data[offset:family_at]), address.compressed, port))
        offset = end
    if offset != len(data):
        return None
    return NodesAnswer(txid, tuple(contacts))


def kind_of(data: bytes) -> int | None:
    """FIND_NODE or NODES by the header alone (cheap dispatch), None for foreign datagrams."""
    if len(data) < _HEAD.size or data[:4] != MAGIC or data[4] != VERSION:
        return None
    return data[5] if data[5] in (FIND_NODE, NODES) else None
