"""What a link session reports to its adapter: typed, frozen events."""

from __future__ import annotations

from dataclasses import dataclass

from . import messages as m


@dataclass(frozen=True)
class WorkNeeded:
    nonce: bytes
    difficulty: int
    dialer_id: bytes
    acceptor_id: bytes


@dataclass(frozen=True)
class Established:
    peer_id: bytes
    peer_key: bytes       # the peer's SPKI DER, already checked against peer_id
    contact: str          # what the peer advertises (`public`, `HOST:PORT`, …)
    observed_host: str    # how the acceptor sees the dialer (empty on the acceptor side)
    version: int
    link_record: bytes = b""   # the peer's link key record, verified


@dataclass(frozen=True)
class RequestReceived:
    message: m.Message


@dataclass(frozen=True)
class NoticeReceived:
    message: m.Message


@dataclass(frozen=True)
class ResponseReceived:
    rid: int
    message: m.Message


@dataclass(frozen=True)
class RequestFailed:
    rid: int
    reason: str


@dataclass(frozen=True)
class Closed:
    code: int
    message: str
    by_peer: bool


Event = (WorkNeeded | Established | RequestReceived | NoticeReceived | ResponseReceived
         | RequestFailed | Closed)
