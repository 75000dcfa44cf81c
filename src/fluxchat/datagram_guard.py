"""What a node spends on lookup datagrams, bounded (docs/PROTOCOL.md §16); pure: `now` is an
argument, the transaction ids come from the caller.

- `AnswerBudget`: the responder answers at most `per_source` requests per second per source
  prefix (/24 for IPv4, /64 for IPv6) and `total` per second in all; beyond that requests
  are dropped unanswered (the asker falls back to a TLS link, where the link limits hold).
- `Pending`: the requester's table of transactions waiting for an answer, at most
  `capacity`; an answer counts only with its transaction id, from the address asked, in time.
- `Silent`: contacts that did not answer a datagram but then answered over TLS (UDP filtered,
  an older node, datagrams off): asked over TLS for `hold` seconds before trying again.
"""

from __future__ import annotations

from collections import OrderedDict

from .admission import prefix_of
from .ratelimit import RateLimiter, TokenBucket
from .records import mutable_record

Address = tuple[str, int]


class AnswerBudget:
    def __init__(self, per_source: float, total: float, now: float,
                 max_sources: int = 10_000) -> None:
        # Bursts of 2 s worth: a lookup asks a node a handful of times at most.
        self._sources = RateLimiter(per_source, max(1.0, 2 * per_source), max_sources)
        self._total = TokenBucket(total, max(1.0, 2 * total), now)

    def allow(self, host: str, now: float) -> bool:
        """Whether to answer a request from host now (spends from both budgets if so)."""
        if not self._sources.allow(prefix_of(host), now):
            return False
        return self._total.take(now)


@mutable_record
class _Waiting:
    address: Address
    deadline: float


class Pending:
    """Transactions in flight, oldest first. A full table refuses new ones (the caller asks
    over TLS instead) rather than dropping a transaction someone still waits for."""

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._waiting: OrderedDict[bytes, _Waiting] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def expire(self, now: float) -> None:
        while self._waiting:
            txid, waiting = next(iter(self._waiting.items()))
            if waiting.deadline > now:
                break
            del self._waiting[txid]

    def open(self, txid: bytes, address: Address, deadline: float, now: float) -> bool:
        """Start waiting for txid's answer from address until deadline; False when full.
        (Expiry goes oldest first and stops at the first entry still waiting, so with
        varying waits an entry may outlive its deadline by at most the longest wait; the
        caller closes every transaction it gives up anyway.)"""
        self.expire(now)
        if len(self._waiting) >= self.capacity or txid in self._waiting:
            return False
        self._waiting[txid] = _Waiting(address, deadline)
        return True

    def claim(self, txid: bytes, address: Address, now: float) -> bool:
        """An answer arrived: True (and the transaction ends) only if it is one we wait for,
        from the address we asked, before its deadline. A forged answer from elsewhere
        leaves the transaction open for the real one."""
        waiting = self._waiting.get(txid)
        if waiting is None or waiting.address != address:
            return False
        del self._waiting[txid]
        return now < waiting.deadline

    def close(self, txid: bytes) -> None:
        """The requester stopped waiting (timeout, cancelled lookup)."""
        self._waiting.pop(txid, None)


class Silent:
    """Contacts to ask over TLS for a while; at most `capacity` remembered (oldest go)."""

    def __init__(self, hold: float = 600.0, capacity: int = 4096) -> None:
        self.hold, self.capacity = hold, capacity
        self._until: OrderedDict[Address, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def mark(self, address: Address, now: float) -> None:
        self._until.pop(address, None)
        self._until[address] = now + self.hold
        while len(self._until) > self.capacity:
            self._until.popitem(last=False)

    def skip(self, address: Address, now: float) -> bool:
        """Whether to ask this contact over TLS without trying a datagram first."""
        until = self._until.get(address)
        if until is None:
            return False
        if now >= until:
            del self._until[address]
            return False
        return True
