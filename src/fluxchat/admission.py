"""Who may start a handshake with us: caps on handshakes in flight, per source prefix.

A handshake holds a slot from the moment we accept the TCP connection until the link is
established or given up. Newcomers' slots are counted per source prefix (/24 for IPv4, /64
for IPv6: what one host or one customer line typically owns), so one attacker with a few
addresses cannot hold them all; addresses that completed a handshake with us before are
counted on their own (neighbours in one prefix do not share their allowance), and part of
the slots is kept for them, so a flood of newcomers cannot lock out the peers we know.
Pure: no clock, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from .records import record

IPV4_PREFIX = 24
IPV6_PREFIX = 64
MAX_REMEMBERED = 4096


def prefix_of(host: str) -> str:
    """The source prefix a host belongs to; a host that is not an address is its own key."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


@record
class AdmissionLimits:
    max_handshakes: int          # handshakes in flight, all sources together
    per_prefix: int              # handshakes in flight from one source prefix
    reserved: int                # of max_handshakes, kept for addresses with a good history


class Slot:
    """One admitted handshake; `Admission.release` frees it exactly once."""

    __slots__ = ("host", "key", "released")

    def __init__(self, host: str, key: str) -> None:
        self.host, self.key, self.released = host, key, False


class Admission:
    def __init__(self, limits: AdmissionLimits, max_remembered: int = MAX_REMEMBERED) -> None:
        if not 0 <= limits.reserved < limits.max_handshakes:
            raise ValueError("reserved handshake slots must be fewer than max_handshakes")
        self.limits = limits
        self.in_flight = 0
        self._per_key: dict[str, int] = {}   # handshakes in flight per prefix or known host
        # Addresses that completed a handshake, least recently seen first (bounded).
        self._good: OrderedDict[str, None] = OrderedDict()
        self._max_remembered = max_remembered

    def key_of(self, host: str) -> str:
        """What `host` is counted as: itself if we know it, else its prefix."""
        return host if host in self._good else prefix_of(host)

    def admit(self, host: str) -> Slot | str:
        """A slot for a new connection from `host`, or why there is none."""
        key = self.key_of(host)
        if self._per_key.get(key, 0) >= self.limits.per_prefix:
            return f"too many handshakes from {key}"
        room = self.limits.max_handshakes
        if host not in self._good:
            room -= self.limits.reserved
        if self.in_flight >= room:
            return "too many handshakes in flight"
        self.in_flight += 1
        self._per_key[key] = self._per_key.get(key, 0) + 1
        return Slot(host, key)

    def release(self, slot: Slot, established: bool) -> None:
        if slot.released:
            return
        slot.released = True
        self.in_flight -= 1
        left = self._per_key[slot.key] - 1
        if left:
            self._per_key[slot.key] = left
        else:
            del self._per_key[slot.key]
        if established:
            self.remember(slot.host)

    def remember(self, host: str) -> None:
        """`host` completed a handshake: it may use the reserved slots from now on."""
        self._good[host] = None
        self._good.move_to_end(host)
        while len(self._good) > self._max_remembered:
            self._good.popitem(last=False)

    def in_flight_from(self, host: str) -> int:
        return self._per_key.get(self.key_of(host), 0)
