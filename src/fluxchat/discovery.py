"""LAN discovery announcements: who we are and which port we listen on.

An announcement only suggests an address. The receiver dials it with the announced ID
pinned, so trust still comes from the TLS handshake and a forged datagram costs nothing
but one failed handshake.
"""

from __future__ import annotations

import struct

from .ids import ID_BYTES
from .records import record

MAGIC = b"FXCD"
VERSION = 1
_LAYOUT = struct.Struct(f">4sB{ID_BYTES}sH")   # magic, version, node ID, port
SIZE = _LAYOUT.size


@record
class Announcement:
    node_id: bytes
    port: int


def encode_announcement(node_id: bytes, port: int) -> bytes:
    if len(node_id) != ID_BYTES or not 1 <= port <= 65535:
        raise ValueError("bad node ID or port")
    return _LAYOUT.pack(MAGIC, VERSION, node_id, port)


def decode_announcement(data: bytes) -> Announcement | None:
    """The announcement in a datagram, or None for anything else (never raises)."""
    if len(data) != SIZE:
        return None
    magic, version, node_id, port = _LAYOUT.unpack(data)
    if magic != MAGIC or version != VERSION or port == 0:
        return None
    return Announcement(node_id, port)
