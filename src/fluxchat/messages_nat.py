"""Peer messages for nodes behind NAT: dial-back reachability checks, relay reservations and
records, mail handed through a relay, and the coordinated simultaneous open (punch)."""

from __future__ import annotations

from .message_base import NODES, RID, Message, NodeInfo, Role
from .records import record
from .wire_fields import BLOB, BOOL, HOST, ID, PORT, TEXT, UINT

# ----- reachability (see reach.py) --------------------------------------------------------


@record
class DialBack(Message):
    """"Dial me back": the receiver dials the requester's observed address at `port`,
    pinned to the requester's ID, and tells whether that worked."""

    rid: int
    port: int
    FIELDS = (RID, ("port", PORT))
    ROLE = Role.REQUEST


@record
class DialBackReply(Message):
    rid: int
    reachable: bool
    host: str          # the address that was dialed (the requester's, as observed)
    FIELDS = (RID, ("reachable", BOOL), ("host", HOST))
    ROLE = Role.RESPONSE


# ----- relays (see relay.py, relaying.py) -------------------------------------------------


@record
class Reserve(Message):
    """An unreachable node asks the receiver to relay for it (or renews the reservation)."""

    rid: int
    FIELDS = (RID,)
    ROLE = Role.REQUEST


@record
class Reserved(Message):
    rid: int
    lifetime: int      # seconds the reservation lasts unless renewed
    FIELDS = (RID, ("lifetime", UINT))
    ROLE = Role.RESPONSE


@record
class StoreRelay(Message):
    rid: int
    record: bytes      # a signed relay record (relaying.RelayRecord)
    FIELDS = (RID, ("record", BLOB))
    ROLE = Role.REQUEST


@record
class FindRelay(Message):
    rid: int
    node_id: bytes
    FIELDS = (RID, ("node_id", ID))
    ROLE = Role.REQUEST


@record
class RelayReply(Message):
    rid: int
    record: bytes      # empty: not held here, see `nodes`
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("record", BLOB), ("nodes", NODES))
    ROLE = Role.RESPONSE


@record
class Relay(Message):
    """Hand an envelope to the recipient's relay, which forwards it over its open link."""

    rid: int
    envelope: bytes
    FIELDS = (RID, ("envelope", BLOB))
    ROLE = Role.REQUEST


@record
class Relayed(Message):
    rid: int
    held: bool         # False: the recipient took it; True: the relay holds it for later
    FIELDS = (RID, ("held", BOOL))
    ROLE = Role.RESPONSE


# ----- coordinated simultaneous open (see punch.py) ----------------------------------------


@record
class Punch(Message):
    """To a relay of `node_id`: "I will connect from `port`; tell it, and tell me its port"."""

    rid: int
    node_id: bytes
    port: int
    FIELDS = (RID, ("node_id", ID), ("port", PORT))
    ROLE = Role.REQUEST


@record
class PunchOffer(Message):
    """From a relay: node `node_id`, seen at `host`, connects to you from `port` now."""

    rid: int
    node_id: bytes
    host: str
    port: int
    FIELDS = (RID, ("node_id", ID), ("host", HOST), ("port", PORT))
    ROLE = Role.REQUEST


@record
class PunchReady(Message):
    """The other side connects from `port`; `host` is where its relay sees it (empty in the
    answer to PunchOffer: the relay fills it in)."""

    rid: int
    host: str
    port: int
    FIELDS = (RID, ("host", TEXT), ("port", PORT))
    ROLE = Role.RESPONSE
