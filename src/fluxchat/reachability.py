"""Reachability decisions, pure: whom to ask for a dial-back, what the answers mean, whether
to serve a dial-back, which contacts are verified, and when a failed address may be dialed
again. The adapter (reach.py) performs the dials; everything here takes `now` as an argument.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import field

from .ratelimit import RateLimiter
from .records import mutable_record, record

DIAL_BACK_PER_ID = 1 / 30.0      # dial-backs served per requester ID per second (burst 2)
DIAL_BACK_PER_NET = 4 / 30.0     # ... per requester /24 (IPv4) or /48 (IPv6)
MAX_PROBES = 8                   # dial-backs and contact checks in flight at once
VERIFIED_FOR = 3600.0            # seconds a verified contact stays verified
BACKOFF_BASE, BACKOFF_MAX = 5.0, 600.0
MAX_REMEMBERED = 10_000


class Status(enum.Enum):
    UNKNOWN = "unknown"
    REACHABLE = "reachable"
    UNREACHABLE = "unreachable"


@record
class Verdict:
    """What a node knows about its own reachability, for `info` and the log."""

    status: Status
    address: str = ""        # host:port that was checked
    checked_at: float = 0.0
    answers: int = 0         # dial-backs that answered
    successes: int = 0


def network_of(host: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) a host is in; the host itself for names."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def pick_helpers(candidates: list[tuple[bytes, str]], count: int) -> list[bytes]:
    """Up to `count` node IDs from (id, host) candidates in order, one per network first,
    so that no single /24 decides our reachability alone."""
    chosen: list[bytes] = []
    seen_nets: set[str] = set()
    for node_id, host in candidates:
        if len(chosen) < count and network_of(host) not in seen_nets and node_id not in chosen:
            chosen.append(node_id)
            seen_nets.add(network_of(host))
    for node_id, _ in candidates:
        if len(chosen) < count and node_id not in chosen:
            chosen.append(node_id)
    return chosen


def judge(address: str, results: list[bool], now: float) -> Verdict:
    """The verdict from dial-back answers: reachable when the successes are at least as many
    as the failures (a pinned dial that worked cannot be faked by a third party), unreachable
    when failures are the majority, unknown without any answer."""
    successes = sum(results)
    if not results:
        status = Status.UNKNOWN
    elif successes and successes >= len(results) - successes:
        status = Status.REACHABLE
    else:
        status = Status.UNREACHABLE
    return Verdict(status, address, now, len(results), successes)


class DialBackGuard:
    """Whether to serve a dial-back or contact check now: per requester, per network, and
    a cap on probes in flight, so a node cannot be made into a dialing machine."""

    def __init__(self) -> None:
        self._per_id = RateLimiter(DIAL_BACK_PER_ID, 2)
        self._per_net = RateLimiter(DIAL_BACK_PER_NET, 8)
        self.in_flight = 0

    def admit(self, requester: bytes, host: str, now: float) -> bool:
        if self.in_flight >= MAX_PROBES:
            return False
        if not self._per_net.allow(network_of(host), now):
            return False
        return self._per_id.allow(requester.hex(), now)

    def begin(self) -> None:
        self.in_flight += 1

    def end(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)


@mutable_record
class _Failure:
    count: int
    retry_at: float


@mutable_record
class AddressBook:
    """Verified contacts (node ID → address, when) and per-address dial backoff."""

    verified: dict[bytes, tuple[str, int, float]] = field(default_factory=dict)
    failures: dict[tuple[str, int], _Failure] = field(default_factory=dict)

    def is_verified(self, node_id: bytes, host: str, port: int, now: float) -> bool:
        known = self.verified.get(node_id)
        return known is not None and known[:2] == (host, port) and now - known[2] < VERIFIED_FOR

    def dial_allowed(self, host: str, port: int, now: float) -> bool:
        failure = self.failures.get((host, port))
        return failure is None or now >= failure.retry_at

    def succeeded(self, node_id: bytes | None, host: str, port: int, now: float) -> None:
        self.failures.pop((host, port), None)
        if node_id is not None:
            if len(self.verified) >= MAX_REMEMBERED and node_id not in self.verified:
                self.verified.pop(next(iter(self.verified)))   # the oldest entry
            self.verified[node_id] = (host, port, now)

    def failed(self, host: str, port: int, now: float) -> float:
        """Record a failed dial; returns when the address may be dialed again."""
        previous = self.failures.pop((host, port), None)
        count = 1 if previous is None else previous.count + 1
        if len(self.failures) >= MAX_REMEMBERED:
            self.failures.pop(next(iter(self.failures)))
        retry_at = now + min(BACKOFF_MAX, BACKOFF_BASE * 2.0 ** (count - 1))
        self.failures[(host, port)] = _Failure(count, retry_at)
        return retry_at
