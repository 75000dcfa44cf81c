"""The first-round peer messages: the link handshake, keepalive, Kademlia lookups of nodes,
keys and mail key records, mail store-and-forward, and the generic answers Ok and Fail."""

from __future__ import annotations

from .message_base import NODES, RID, Message, NodeInfo, Role
from .records import record
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


@record
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


@record
class Challenge(Message):
    nonce: bytes
    difficulty: int
    FIELDS = (("nonce", NONCE), ("difficulty", UINT))


@record
class Work(Message):
    work: int
    FIELDS = (("work", UINT),)


@record
class Welcome(Message):
    observed_host: str
    contact: str
    FIELDS = (("observed_host", TEXT), ("contact", TEXT))


@record
class Error(Message):
    code: int
    message: str
    FIELDS = (("code", UINT), ("message", TEXT))


# ----- open link ---------------------------------------------------------------------------


@record
class Ping(Message):
    rid: int
    FIELDS = (RID,)
    ROLE = Role.REQUEST


@record
class Pong(Message):
    rid: int
    FIELDS = (RID,)
    ROLE = Role.RESPONSE


@record
class FindNode(Message):
    rid: int
    target: bytes
    FIELDS = (RID, ("target", ID))
    ROLE = Role.REQUEST


@record
class Nodes(Message):
    rid: int
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("nodes", NODES))
    ROLE = Role.RESPONSE


@record
class FindKey(Message):
    rid: int
    node_id: bytes
    FIELDS = (RID, ("node_id", ID))
    ROLE = Role.REQUEST


@record
class KeyReply(Message):
    rid: int
    public_key: bytes  # empty: not held here, see `nodes`
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("public_key", PUBLIC_KEY), ("nodes", NODES))
    ROLE = Role.RESPONSE


@record
class StoreKey(Message):
    rid: int
    public_key: bytes
    FIELDS = (RID, ("public_key", PUBLIC_KEY))
    ROLE = Role.REQUEST


# Mail key records (mailkeys.py): filed under their node ID, checked against its RSA key.
MAIL_KEY_RECORD = Bytes(range(0, MAX_MAIL_KEY_RECORD + 1))


@record
class FindMailKey(Message):
    rid: int
    node_id: bytes
    FIELDS = (RID, ("node_id", ID))
    ROLE = Role.REQUEST


@record
class MailKeyReply(Message):
    rid: int
    record: bytes  # empty: not held here, see `nodes`
    nodes: tuple[NodeInfo, ...]
    FIELDS = (RID, ("record", MAIL_KEY_RECORD), ("nodes", NODES))
    ROLE = Role.RESPONSE


@record
class StoreMailKey(Message):
    rid: int
    record: bytes
    FIELDS = (RID, ("record", MAIL_KEY_RECORD))
    ROLE = Role.REQUEST


@record
class Deliver(Message):
    rid: int
    envelope: bytes
    FIELDS = (RID, ("envelope", BLOB))
    ROLE = Role.REQUEST


@record
class Store(Message):
    rid: int
    envelope: bytes
    FIELDS = (RID, ("envelope", BLOB))
    ROLE = Role.REQUEST


@record
class Fetch(Message):
    rid: int
    limit: int
    FIELDS = (RID, ("limit", UINT))
    ROLE = Role.REQUEST


@record
class MailBatch(Message):
    rid: int
    envelopes: tuple[bytes, ...]
    more: bool
    FIELDS = (RID, ("envelopes", ListOf(BLOB, MAX_ENVELOPES)), ("more", BOOL))
    ROLE = Role.RESPONSE


@record
class Delete(Message):
    rid: int
    uuids: tuple[bytes, ...]
    FIELDS = (RID, ("uuids", ListOf(UUID, MAX_UUIDS)))
    ROLE = Role.REQUEST


@record
class Notify(Message):
    """One-way: "mail is waiting for you"; the receiver answers with a Fetch."""

    ROLE = Role.NOTICE


@record
class Ok(Message):
    rid: int
    FIELDS = (RID,)
    ROLE = Role.RESPONSE


@record
class Fail(Message):
    rid: int
    code: int
    message: str
    FIELDS = (RID, ("code", UINT), ("message", TEXT))
    ROLE = Role.RESPONSE
