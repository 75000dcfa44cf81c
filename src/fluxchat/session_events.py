"""What a link session reports to its adapter: typed, frozen events."""

from __future__ import annotations

from . import messages as m
from .records import record


@record
class WorkNeeded:
    nonce: bytes
    difficulty: int
    dialer_id: bytes
    acceptor_id: bytes


@record
class Established:
    peer_id: bytes
    peer_key: bytes       # the peer's SPKI DER, already checked against peer_id
    contact: str          # what the peer advertises (`public`, `HOST:PORT`, …)
    observed_host: str    # how the acceptor sees the dialer (empty on the acceptor side)
    version: int
    link_record: bytes = b""   # the peer's link key record, verified


@record
class RequestReceived:
    message: m.Message


@record
class NoticeReceived:
    message: m.Message


@record
class ResponseReceived:
    rid: int
    message: m.Message


@record
class RequestFailed:
    rid: int
    reason: str


@record
class Closed:
    code: int
    message: str
    by_peer: bool


Event = (WorkNeeded | Established | RequestReceived | NoticeReceived | ResponseReceived
         | RequestFailed | Closed)
