"""Relays, pure: signed relay records, the directory that holds them, a relay's reservations
and byte budgets, and which relays an unreachable node keeps. No I/O, no clock.

A relay record says "reach node N through these relays until T". It carries N's public key
and is signed by it (RSA-PSS), so anyone can check it: the key must hash to N and the
signature must hold, exactly as keys in the key directory are checked.
"""

from __future__ import annotations

from dataclasses import field
from typing import ClassVar

from . import cbor
from .errors import FluxError, IdentityError, ProtocolError
from .identity import Identity, load_public_key, verify_signature
from .ids import id_from_spki
from .messages import NodeInfo
from .reachability import network_of
from .records import mutable_record, record
from .wire_fields import (
    ID,
    PUBLIC_KEY,
    SIGNATURE,
    UINT,
    Kind,
    ListOf,
    Record,
    decode_record,
    encode_record,
)

RECORD_DOMAIN = b"fluxchat-relay-record-v1\x00"
MAX_RELAYS = 8                 # relays named in one record
MAX_RECORD_BYTES = 4096
RECORD_LIFETIME = 1800         # seconds a record we publish stays valid
MAX_RECORD_LIFETIME = 3600     # longer ones are refused
CLOCK_SKEW = 600
MAX_RECORDS = 10_000           # records a directory node holds

RESERVATION_LIFETIME = 600     # seconds; the client renews well before
MAX_RESERVATIONS = 128         # per relay
MAX_PER_NETWORK = 8            # reservations per client /24 (IPv4) or /48 (IPv6)
BYTES_PER_MINUTE = 4 * 1024 * 1024   # relayed envelope bytes per reservation
WANTED_RELAYS = 3
RETRY_FIRST, RETRY_MAX = 2.0, 120.0  # seconds before a failed relay is asked again


class RelayError(FluxError):
    """A relay record that is malformed, forged, or out of date."""


@record
class RelayRecord:
    node_id: bytes
    public_key: bytes
    relays: tuple[NodeInfo, ...]
    issued_at: int
    expires_at: int
    signature: bytes
    FIELDS: ClassVar[tuple[tuple[str, Kind], ...]] = (
        ("node_id", ID), ("public_key", PUBLIC_KEY),
        ("relays", ListOf(Record(NodeInfo), MAX_RELAYS)), ("issued_at", UINT),
        ("expires_at", UINT), ("signature", SIGNATURE))

    def signed_part(self) -> bytes:
        return RECORD_DOMAIN + cbor.dumps(encode_record(self, "RelayRecord")[:-1])

    def encode(self) -> bytes:
        return cbor.dumps(encode_record(self, "RelayRecord"))


def make_record(me: Identity, relays: list[NodeInfo], now: int) -> RelayRecord:
    unsigned = RelayRecord(me.node_id, me.public_der, tuple(relays[:MAX_RELAYS]), now,
                           now + RECORD_LIFETIME, b"")
    return RelayRecord(unsigned.node_id, unsigned.public_key, unsigned.relays, now,
                       unsigned.expires_at, me.sign(unsigned.signed_part()))


def parse_record(data: bytes, now: int, expected: bytes | None = None) -> RelayRecord:
    """Decode and verify; RelayError unless it is well-formed, signed by the key that hashes
    to its node ID (and that ID is `expected`, when given), and valid now."""
    if len(data) > MAX_RECORD_BYTES:
        raise RelayError("relay record too large")
    try:
        record: RelayRecord = decode_record(RelayRecord, cbor.loads(data, max_depth=4,
                                                                    max_items=64), "RelayRecord")
        key = load_public_key(record.public_key)
    except (ProtocolError, IdentityError) as exc:
        raise RelayError(f"malformed relay record: {exc}") from None
    if id_from_spki(record.public_key) != record.node_id:
        raise RelayError("relay record key does not hash to its node ID")
    if expected is not None and record.node_id != expected:
        raise RelayError("relay record for another node")
    if record.issued_at > now + CLOCK_SKEW or record.expires_at <= now:
        raise RelayError("relay record expired or not yet valid")
    if not 0 < record.expires_at - record.issued_at <= MAX_RECORD_LIFETIME:
        raise RelayError("relay record lifetime out of bounds")
    if not verify_signature(key, record.signature, record.signed_part()):
        raise RelayError("relay record signature does not verify")
    return record


@mutable_record
class RelayDirectory:
    """Verified relay records held for others: the newest per node, bounded, expiring."""

    records: dict[bytes, RelayRecord] = field(default_factory=dict)

    def put(self, record: RelayRecord, now: int) -> bool:
        held = self.records.get(record.node_id)
        if held is not None and held.issued_at >= record.issued_at:
            return held.issued_at == record.issued_at   # a copy of what we hold is fine
        if held is None and len(self.records) >= MAX_RECORDS:
            self.expire(now)
            if len(self.records) >= MAX_RECORDS:
                return False
        self.records[record.node_id] = record
        return True

    def get(self, node_id: bytes, now: int) -> RelayRecord | None:
        record = self.records.get(node_id)
        if record is not None and record.expires_at <= now:
            del self.records[node_id]
            return None
        return record

    def expire(self, now: int) -> None:
        self.records = {k: r for k, r in self.records.items() if r.expires_at > now}


@mutable_record
class _Reservation:
    network: str
    expires_at: float
    budget: float          # bytes that may still be relayed
    updated: float


class Reservations:
    """A relay's promises: whom it relays for, until when, and how many bytes per minute."""

    def __init__(self, limit: int = MAX_RESERVATIONS, per_network: int = MAX_PER_NETWORK,
                 bytes_per_minute: int = BYTES_PER_MINUTE) -> None:
        self.limit, self.per_network, self.rate = limit, per_network, bytes_per_minute
        self._held: dict[bytes, _Reservation] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._held

    def reserve(self, node_id: bytes, host: str, now: float) -> str | None:
        """Grant or renew; returns the reason for a refusal, None when granted."""
        self.expire(now)
        held = self._held.get(node_id)
        if held is not None:
            held.expires_at = now + RESERVATION_LIFETIME
            return None
        network = network_of(host)
        if len(self._held) >= self.limit:
            return "relay is full"
        if sum(1 for r in self._held.values() if r.network == network) >= self.per_network:
            return f"too many reservations from {network}"
        self._held[node_id] = _Reservation(network, now + RESERVATION_LIFETIME, self.rate, now)
        return None

    def holds(self, node_id: bytes, now: float) -> bool:
        """Whether node_id has a reservation that has not run out."""
        held = self._held.get(node_id)
        return held is not None and held.expires_at > now

    def release(self, node_id: bytes) -> None:
        self._held.pop(node_id, None)

    def spend(self, node_id: bytes, size: int, now: float) -> str | None:
        """Charge `size` relayed bytes to node_id's reservation; the reason when refused."""
        held = self._held.get(node_id)
        if held is None or held.expires_at <= now:
            return "no reservation for the recipient"
        held.budget = min(self.rate, held.budget + (now - held.updated) * self.rate / 60.0)
        held.updated = now
        if size > held.budget:
            return "relay byte budget of the recipient exhausted"
        held.budget -= size
        return None

    def expire(self, now: float) -> None:
        for node_id in [n for n, r in self._held.items() if r.expires_at <= now]:
            del self._held[node_id]


def choose_relays(current: list[bytes], closest: list[bytes], failed: set[bytes],
                  wanted: int = WANTED_RELAYS) -> list[bytes]:
    """Keep working relays; fill up with the nodes closest to our ID that have not failed."""
    keep = [r for r in current if r not in failed][:wanted]
    for node_id in closest:
        if len(keep) >= wanted:
            break
        if node_id not in keep and node_id not in failed:
            keep.append(node_id)
    return keep


def retry_pause(failures: int) -> float:
    """Seconds before a relay that failed `failures` times in a row (its link dropped, a
    reservation went unanswered) is asked again: 2 s, doubling to 120 s. A blip that cut
    every relay link at once costs seconds, not minutes; a dead relay is dialed rarely."""
    return min(RETRY_MAX, RETRY_FIRST * 2.0 ** max(0, failures - 1))
