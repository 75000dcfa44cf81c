"""What every peer-link message is built from: its routing role, the Message base class, the
NodeInfo record that lookups return, and the request id field. See messages.py for the table
of types and the codec."""

from __future__ import annotations

import enum
from typing import ClassVar

from .records import record
from .wire_fields import HOST, ID, MAX_NODES, PORT, UINT, Kind, ListOf, Record


class Role(enum.Enum):
    HANDSHAKE = "handshake"  # only before the link is open (Error: at any time)
    REQUEST = "request"      # carries a fresh rid; exactly one response follows
    RESPONSE = "response"    # carries the rid of its request
    NOTICE = "notice"        # one-way, no rid


@record
class NodeInfo:
    """Where a node can be reached; the ID is checked by the TLS pin when dialing."""

    node_id: bytes
    host: str
    port: int
    FIELDS: ClassVar[tuple[tuple[str, Kind], ...]] = (("node_id", ID), ("host", HOST),
                                                      ("port", PORT))


NODES = ListOf(Record(NodeInfo), MAX_NODES)


class Message:
    """Base of every link message; subclasses are frozen dataclasses."""

    FIELDS: ClassVar[tuple[tuple[str, Kind], ...]] = ()
    ROLE: ClassVar[Role] = Role.HANDSHAKE

    @property
    def is_request(self) -> bool:
        return self.ROLE is Role.REQUEST

    @property
    def is_response(self) -> bool:
        return self.ROLE is Role.RESPONSE


RID = ("rid", UINT)
