"""The first-round peer messages: the link handshake, keepalive, Kademlia lookups of nodes,
keys and mail key records, mail store-and-forward, and the generic answers Ok and Fail."""

from __future__ import annotations

from dataclasses import dataclass

from .message_base import NODES, RID, Message, NodeInfo, Role
from .wire_fields import (
    BLOB,
    BOOL,
    ID,
    ID_OR_EMPTY,
    MAX_ENVELOPES,
    MAX_MAIL_KEY_RECORD,
    MAX_UUIDS,
    NONCE,
    PUBLIC_KEY,
    TEXT,
    UINT,
    UUID,
    Bytes,
    ListOf,
)

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
