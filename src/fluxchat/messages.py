"""Peer-link messages: typed frozen dataclasses and their canonical CBOR payloads.

Every payload is one canonical CBOR array holding the message's fields in declaration
order; a nested record (NodeInfo) is itself an array. Each class states its wire schema in
`FIELDS` (name, kind) and its routing role in `ROLE`; `MESSAGE_TYPES` maps type bytes to
classes. Adding a message type is therefore one dataclass plus one table entry: encoding,
decoding, validation and the request/response sets all follow from those.

The classes live in message_base.py (Role, Message, NodeInfo), messages_overlay.py
(handshake, lookups, mail) and messages_nat.py (reachability, relays, punch); this module
gathers them with the table and the codec, so users write `messages.Deliver`.

Decoding is strict on purpose: exact arity, exact types, every length and range bounded, so
the layers above receive only well-formed values and a hostile peer costs one link.
"""

from __future__ import annotations

from dataclasses import fields

from . import cbor
from .errors import ProtocolError
from .message_base import (  # noqa: F401 (re-exported)
    NODES,
    RID,
    Message,
    NodeInfo,
    Role,
)
from .messages_mail import Delivered, DeliverMany  # noqa: F401 (re-exported)
from .messages_nat import (  # noqa: F401 (re-exported)
    DialBack,
    DialBackReply,
    FindRelay,
    Punch,
    PunchOffer,
    PunchReady,
    Relay,
    Relayed,
    RelayReply,
    Reserve,
    Reserved,
    StoreRelay,
)
from .messages_overlay import (  # noqa: F401 (re-exported)
    LINK_RECORD,
    LINK_SIGNATURE,
    MAIL_KEY_RECORD,
    Challenge,
    Delete,
    Deliver,
    Error,
    Fail,
    Fetch,
    FindKey,
    FindMailKey,
    FindNode,
    Hello,
    KeyReply,
    MailBatch,
    MailKeyReply,
    Nodes,
    Notify,
    Ok,
    Ping,
    Pong,
    Store,
    StoreKey,
    StoreMailKey,
    Welcome,
    Work,
)
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
