"""Peer-link messages: typed frozen dataclasses and their canonical CBOR payloads.

Every payload is one canonical CBOR array holding the message's fields in declaration
order; a nested record (NodeInfo) is itself an array. Each class states its wire schema in
`FIELDS` (name, kind) and its routing role in `ROLE`; `MESSAGE_TYPES` maps type bytes to
classes. Adding a message type is therefore one dataclass plus one table entry: encoding,
decoding, validation and the request/response sets all follow from those.

Decoding is strict on purpose: exact arity, exact types, every length and range bounded, so
the layers above receive only well-formed values and a hostile peer costs one link.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import ClassVar

from . import cbor
from .errors import ProtocolError
from .wire_fields import (  # noqa: F401 (re-exported)
    BLOB,
    BOOL,
    HOST,
    ID,
    ID_OR_EMPTY,
    MAX_ENVELOPES,
    MAX_MAIL_KEY_RECORD,
    MAX_NODES,
    MAX_PUBLIC_KEY,
    MAX_SIGNATURE,
    MAX_TEXT,
    MAX_UUIDS,
    NONCE,
    PORT,
    PUBLIC_KEY,
    SIGNATURE,
    TEXT,
    UINT,
    UUID,
    Bytes,
    ErrorCode,
    Kind,
    ListOf,
    Record,
    decode_record,
    encode_record,
)


class Role(enum.Enum):
    HANDSHAKE = "handshake"  # only before the link is open (Error: at any time)
    REQUEST = "request"      # carries a fresh rid; exactly one response follows
    RESPONSE = "response"    # carries the rid of its request
    NOTICE = "notice"        # one-way, no rid


@dataclass(frozen=True)
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


# ----- handshake --------------------------------------------------------------------------


LINK_RECORD = Bytes(range(1, 1201))    # a link key record (linkkeys.py)
LINK_SIGNATURE = Bytes(range(64, 65))  # Ed25519


@dataclass(frozen=True)
class Hello(Message):
    dialer_id: bytes
    acceptor_id: bytes  # empty: the dialer learnt the address only (bootstrap)
    contact: str
    link_record: bytes  # the dialer's link key record
    public_key: bytes   # the dialer's identity key (SPKI DER); hashes to dialer_id
    signature: bytes    # Ed25519 by the link key over this TLS session (linkkeys.py)
    FIELDS = (("dialer_id", ID), ("acceptor_id", ID_OR_EMPTY), ("contact", TEXT),
              ("link_record", LINK_RECORD), ("public_key", PUBLIC_KEY),
              ("signature", LINK_SIGNATURE))


@dataclass(frozen=True)
class Challenge(Message):
    nonce: bytes
    difficulty: int
    FIELDS = (("nonce", NONCE), ("difficulty", UINT))


@dataclass(frozen=True)
class Work(Message):
    work: int
    FIELDS = (("work", UINT),)


@dataclass(frozen=True)
class Welcome(Message):
    observed_host: str
    contact: str
    FIELDS = (("observed_host", TEXT), ("contact", TEXT))


@dataclass(frozen=True)
class Error(Message):
    code: int
    message: str
    FIELDS = (("code", UINT), ("message", TEXT))


# ----- open link ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping(Message):
    rid: int
    FIELDS = (RID,)
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Pong(Message):
    rid: int
    FIELDS = (RID,)
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class FindNode(Message):
    rid: int
    target: bytes
    FIELDS = (RID, ("target", ID))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Nodes(Message):
    rid: int
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("nodes", NODES))
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class FindKey(Message):
    rid: int
    node_id: bytes
    FIELDS = (RID, ("node_id", ID))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class KeyReply(Message):
    rid: int
    public_key: bytes  # empty: not held here, see `nodes`
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("public_key", PUBLIC_KEY), ("nodes", NODES))
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class StoreKey(Message):
    rid: int
    public_key: bytes
    FIELDS = (RID, ("public_key", PUBLIC_KEY))
    ROLE = Role.REQUEST


# Mail key records (mailkeys.py): filed under their node ID, checked against its RSA key.
MAIL_KEY_RECORD = Bytes(range(0, MAX_MAIL_KEY_RECORD + 1))


@dataclass(frozen=True)
class FindMailKey(Message):
    rid: int
    node_id: bytes
    FIELDS = (RID, ("node_id", ID))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class MailKeyReply(Message):
    rid: int
    record: bytes  # empty: not held here, see `nodes`
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("record", MAIL_KEY_RECORD), ("nodes", NODES))
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class StoreMailKey(Message):
    rid: int
    record: bytes
    FIELDS = (RID, ("record", MAIL_KEY_RECORD))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Deliver(Message):
    rid: int
    envelope: bytes
    FIELDS = (RID, ("envelope", BLOB))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class DeliverMany(Message):
    """Several envelopes for the receiving node in one request: a burst of mail or receipts
    costs one frame, one round trip and one commit at the receiver."""
    rid: int
    envelopes: tuple[bytes, ...]
    FIELDS = (RID, ("envelopes", ListOf(BLOB, MAX_ENVELOPES)))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Delivered(Message):
    """The answer to DeliverMany: per envelope, in order, 0 (committed) or an ErrorCode."""
    rid: int
    codes: tuple[int, ...]
    FIELDS = (RID, ("codes", ListOf(UINT, MAX_ENVELOPES)))
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class Store(Message):
    rid: int
    envelope: bytes
    FIELDS = (RID, ("envelope", BLOB))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Fetch(Message):
    rid: int
    limit: int
    FIELDS = (RID, ("limit", UINT))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class MailBatch(Message):
    rid: int
    envelopes: tuple[bytes, ...]
    more: bool
    FIELDS = (RID, ("envelopes", ListOf(BLOB, MAX_ENVELOPES)), ("more", BOOL))
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class Delete(Message):
    rid: int
    uuids: tuple[bytes, ...]
    FIELDS = (RID, ("uuids", ListOf(UUID, MAX_UUIDS)))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Notify(Message):
    """One-way: "mail is waiting for you"; the receiver answers with a Fetch."""

    ROLE = Role.NOTICE


@dataclass(frozen=True)
class Ok(Message):
    rid: int
    FIELDS = (RID,)
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class Fail(Message):
    rid: int
    code: int
    message: str
    FIELDS = (RID, ("code", UINT), ("message", TEXT))
    ROLE = Role.RESPONSE


# ----- reachability (see reach.py) --------------------------------------------------------


@dataclass(frozen=True)
class DialBack(Message):
    """"Dial me back": the receiver dials the requester's observed address at `port`,
    pinned to the requester's ID, and tells whether that worked."""

    rid: int
    port: int
    FIELDS = (RID, ("port", PORT))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class DialBackReply(Message):
    rid: int
    reachable: bool
    host: str          # the address that was dialed (the requester's, as observed)
    FIELDS = (RID, ("reachable", BOOL), ("host", HOST))
    ROLE = Role.RESPONSE


# ----- relays (see relay.py, relaying.py) -------------------------------------------------


@dataclass(frozen=True)
class Reserve(Message):
    """An unreachable node asks the receiver to relay for it (or renews the reservation)."""

    rid: int
    FIELDS = (RID,)
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Reserved(Message):
    rid: int
    lifetime: int      # seconds the reservation lasts unless renewed
    FIELDS = (RID, ("lifetime", UINT))
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class StoreRelay(Message):
    rid: int
    record: bytes      # a signed relay record (relaying.RelayRecord)
    FIELDS = (RID, ("record", BLOB))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class FindRelay(Message):
    rid: int
    node_id: bytes
    FIELDS = (RID, ("node_id", ID))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class RelayReply(Message):
    rid: int
    record: bytes      # empty: not held here, see `nodes`
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("record", BLOB), ("nodes", NODES))
    ROLE = Role.RESPONSE


@dataclass(frozen=True)
class Relay(Message):
    """Hand an envelope to the recipient's relay, which forwards it over its open link."""

    rid: int
    envelope: bytes
    FIELDS = (RID, ("envelope", BLOB))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class Relayed(Message):
    rid: int
    held: bool         # False: the recipient took it; True: the relay holds it for later
    FIELDS = (RID, ("held", BOOL))
    ROLE = Role.RESPONSE


# ----- coordinated simultaneous open (see punch.py) ----------------------------------------


@dataclass(frozen=True)
class Punch(Message):
    """To a relay of `node_id`: "I will connect from `port`; tell it, and tell me its port"."""

    rid: int
    node_id: bytes
    port: int
    FIELDS = (RID, ("node_id", ID), ("port", PORT))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class PunchOffer(Message):
    """From a relay: node `node_id`, seen at `host`, connects to you from `port` now."""

    rid: int
    node_id: bytes
    host: str
    port: int
    FIELDS = (RID, ("node_id", ID), ("host", HOST), ("port", PORT))
    ROLE = Role.REQUEST


@dataclass(frozen=True)
class PunchReady(Message):
    """The other side connects from `port`; `host` is where its relay sees it (empty in the
    answer to PunchOffer: the relay fills it in)."""

    rid: int
    host: str
    port: int
    FIELDS = (RID, ("host", TEXT), ("port", PORT))
    ROLE = Role.RESPONSE


MESSAGE_TYPES: dict[int, type[Message]] = {
    0x01: Hello, 0x02: Challenge, 0x03: Work, 0x04: Welcome, 0x05: Error,
    0x06: Ping, 0x07: Pong,
    0x10: FindNode, 0x11: Nodes, 0x12: FindKey, 0x13: KeyReply, 0x14: StoreKey,
    0x15: FindMailKey, 0x16: MailKeyReply, 0x17: StoreMailKey,
    0x20: Deliver, 0x21: Store, 0x22: Fetch, 0x23: MailBatch, 0x24: Delete, 0x25: Notify,
    0x26: DeliverMany, 0x27: Delivered,
    0x30: Ok, 0x31: Fail,
    0x40: DialBack, 0x41: DialBackReply, 0x42: Reserve, 0x43: Reserved, 0x44: StoreRelay,
    0x45: FindRelay, 0x46: RelayReply, 0x47: Relay, 0x48: Relayed, 0x49: Punch,
    0x4A: PunchOffer, 0x4B: PunchReady,
}
TYPE_CODES: dict[type[Message], int] = {cls: code for code, cls in MESSAGE_TYPES.items()}


def _role_set(role: Role) -> frozenset[type[Message]]:
    return frozenset(cls for cls in MESSAGE_TYPES.values() if cls.ROLE is role)


REQUEST_TYPES = _role_set(Role.REQUEST)
RESPONSE_TYPES = _role_set(Role.RESPONSE)
NOTICE_TYPES = _role_set(Role.NOTICE)
HANDSHAKE_TYPES = _role_set(Role.HANDSHAKE)


def _check_schemas() -> None:
    """A schema that disagrees with its dataclass would corrupt the wire silently: fail at import."""
    for cls in (*MESSAGE_TYPES.values(), NodeInfo):
        names = tuple(f.name for f in fields(cls))
        if names != tuple(name for name, _ in cls.FIELDS):  # type: ignore[attr-defined]
            raise AssertionError(f"{cls.__name__}.FIELDS does not match its fields {names}")


_check_schemas()

# Deepest payload: [rid, [[id, host, port], ...]]; the item budget covers the biggest lists.
_MAX_DEPTH = 3
_MAX_ITEMS = 4 * MAX_NODES + MAX_ENVELOPES + MAX_UUIDS + 16


def encode_message(msg: Message) -> tuple[int, bytes]:
    """(type byte, payload); ValueError if a field is out of range (a bug on our side)."""
    ftype = TYPE_CODES.get(type(msg))
    if ftype is None:
        raise TypeError(f"not a registered message: {type(msg).__name__}")
    return ftype, cbor.dumps(encode_record(msg, type(msg).__name__))


def decode_message(ftype: int, payload: bytes) -> Message:
    """Decode and validate; UNKNOWN_TYPE for an unregistered type, MALFORMED otherwise."""
    cls = MESSAGE_TYPES.get(ftype)
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type 0x{ftype:02x}")
    raw = cbor.loads(payload, max_depth=_MAX_DEPTH, max_items=_MAX_ITEMS)
    message: Message = decode_record(cls, raw, cls.__name__)
    return message
