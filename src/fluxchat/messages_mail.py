"""Peer messages for bursts of mail (issue 13): many envelopes in one request, one answer
per envelope. See PROTOCOL.md §11."""

from __future__ import annotations

from .message_base import RID, Message, Role
from .records import record
from .wire_fields import BLOB, MAX_ENVELOPES, UINT, ListOf


@record
class DeliverMany(Message):
    """Several envelopes for the receiving node in one request: a burst of mail or receipts
    costs one frame, one round trip and one commit at the receiver."""
    rid: int
    envelopes: tuple[bytes, ...]
    FIELDS = (RID, ("envelopes", ListOf(BLOB, MAX_ENVELOPES)))
    ROLE = Role.REQUEST


@record
class Delivered(Message):
    """The answer to DeliverMany: per envelope, in order, 0 (committed) or an ErrorCode."""
    rid: int
    codes: tuple[int, ...]
    FIELDS = (RID, ("codes", ListOf(UINT, MAX_ENVELOPES)))
    ROLE = Role.RESPONSE
