"""Coordinated simultaneous open, pure: who plays which part, and when to try again.

Two nodes that reach each other only through a relay both connect, at the same moment, from a
fresh port to the port the other announced (through the relay). Where each NAT keeps the
inside port and lets in replies to what went out, the two SYNs cross and one TCP connection
forms; neither end accepted it, so the smaller node ID takes the TLS server's part.
"""

from __future__ import annotations

from dataclasses import field

from .records import mutable_record

PUNCH_TIMEOUT = 3.0          # seconds both ends keep trying to connect
RETRY_AFTER = 600.0          # seconds before trying the same peer again after a failure
RELAY_PUNCHES_PER_SECOND = 0.2   # punches a relay coordinates per requester (burst 3)
MAX_REMEMBERED = 10_000


def tls_server(me: bytes, peer: bytes) -> bool:
    """Whether we take the acceptor's part on a connection both ends dialed."""
    return me < peer


def accept_offer(me: bytes, peer: bytes, busy_with_peer: bool) -> bool:
    """Both ends may start at once; then the attempt begun by the smaller ID goes ahead."""
    return not busy_with_peer or peer < me


@mutable_record
class PunchBook:
    """Per-peer attempts: one at a time, and not again soon after a failure; counts."""

    retry_at: dict[bytes, float] = field(default_factory=dict)
    busy: set[bytes] = field(default_factory=set)
    attempts: int = 0
    succeeded: int = 0

    def due(self, peer: bytes, now: float) -> bool:
        return peer not in self.busy and now >= self.retry_at.get(peer, 0.0)

    def begin(self, peer: bytes) -> None:
        self.busy.add(peer)
        self.attempts += 1

    def end(self, peer: bytes, ok: bool, now: float) -> None:
        self.busy.discard(peer)
        if ok:
            self.succeeded += 1
            self.retry_at.pop(peer, None)
            return
        if len(self.retry_at) >= MAX_REMEMBERED:
            self.retry_at = {p: t for p, t in self.retry_at.items() if t > now}
        self.retry_at[peer] = now + RETRY_AFTER
