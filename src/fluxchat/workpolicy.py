"""When an acceptor demands proof of work of a dialer.

A new link costs the acceptor an Ed25519 verification, plus one RSA verification for a link
key record it has not seen. Known peers pay nothing for that. Work is demanded of:
- a dialer whose (ID, link key record) we have not verified on a link before (an unknown
  node, or a new record: one solve per peer per record lifetime);
- a dialer whose ID or source misbehaved recently (it broke the protocol, failed to
  authenticate, let a handshake time out);
- everybody while many handshakes are in flight (we are under load).
The claim is checked only afterwards: a dialer naming a known ID without its link key costs
us one Ed25519 verification and fails, so claiming a known ID buys an attacker nothing.
Pure: no clock (`now` is passed in), no I/O.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from .records import record


@record
class WorkLimits:
    difficulty: int                # bits demanded when work is demanded
    busy_handshakes: int           # from this many handshakes in flight, everybody pays
    blame_seconds: float = 600.0   # how long misbehaviour is remembered
    remember: int = 4096           # known peers (and blamed sources) kept, LRU


class WorkPolicy:
    def __init__(self, limits: WorkLimits) -> None:
        self.limits = limits
        self._known: OrderedDict[bytes, bytes] = OrderedDict()    # ID -> record digest
        self._blamed: OrderedDict[bytes | str, float] = OrderedDict()   # ID/source -> until

    def difficulty(self, peer_id: bytes, record: bytes, source: str, in_flight: int,
                   now: float) -> int:
        """Bits to demand of a dialer claiming `peer_id` with link key `record`, coming
        from `source` (a host or prefix key), with `in_flight` handshakes running."""
        if in_flight >= self.limits.busy_handshakes:
            return self.limits.difficulty
        if self._is_blamed(peer_id, now) or self._is_blamed(source, now):
            return self.limits.difficulty
        if self._known.get(peer_id) != _digest(record):
            return self.limits.difficulty
        self._known.move_to_end(peer_id)
        return 0

    def knows(self, peer_id: bytes) -> bool:
        """Whether a link with `peer_id` opened lately (and it has not misbehaved since)."""
        return peer_id in self._known

    def learn(self, peer_id: bytes, record: bytes) -> None:
        """A link with `peer_id` opened: its record verified and its link key proved."""
        if not record:
            return
        self._known[peer_id] = _digest(record)
        self._known.move_to_end(peer_id)
        while len(self._known) > self.limits.remember:
            self._known.popitem(last=False)

    def blame(self, who: bytes | str, now: float) -> None:
        """`who` (a verified peer ID, or a source) misbehaved: it pays work for a while,
        and a blamed ID is no longer known."""
        if isinstance(who, bytes):
            self._known.pop(who, None)
        self._blamed[who] = now + self.limits.blame_seconds
        self._blamed.move_to_end(who)
        while len(self._blamed) > self.limits.remember:
            self._blamed.popitem(last=False)

    def _is_blamed(self, who: bytes | str, now: float) -> bool:
        until = self._blamed.get(who)
        if until is None:
            return False
        if until <= now:
            del self._blamed[who]
            return False
        return True


def _digest(record: bytes) -> bytes:
    return hashlib.sha256(record).digest()
