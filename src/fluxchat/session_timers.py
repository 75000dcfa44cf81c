"""The timers of one link session, as plain numbers: the handshake deadline, one deadline per
request we sent, the keepalive and the idle timeout. Pure: `now` always comes in."""

from __future__ import annotations

import math
from dataclasses import field

from .records import mutable_record


@mutable_record
class LinkTimers:
    idle_timeout: float
    ping_interval: float
    deadline: float                  # handshake deadline, then unused
    last_rx: float                   # any bytes: the peer is alive
    last_use: float                  # a request or notice either way: the link is useful
    ping_rid: int | None = None
    pending: dict[int, float] = field(default_factory=dict)   # rid -> deadline

    def requests(self) -> list[int]:
        """Our requests in flight, the keepalive ping left out."""
        return [rid for rid in self.pending if rid != self.ping_rid]

    def next_deadline(self, is_open: bool) -> float:
        """When something is next due (inf: never)."""
        if not is_open:
            return self.deadline
        deadlines = list(self.pending.values())
        if not self.pending:
            deadlines.append(self.last_use + self.idle_timeout)
        if self.ping_rid not in self.pending:
            deadlines.append(self.last_rx + self.ping_interval)
        return min(deadlines, default=math.inf)

    def expire(self, now: float) -> list[int]:
        """The requests whose deadline has passed, forgotten from now on."""
        late = [rid for rid, deadline in self.pending.items() if deadline <= now]
        for rid in late:
            del self.pending[rid]
        return late

    def idle(self, now: float) -> bool:
        """Unused for the idle timeout with nothing in flight. Keepalive pings prove the
        peer alive but do not make an unused link worth keeping."""
        return now - self.last_use >= self.idle_timeout and not self.pending

    def ping_due(self, now: float) -> bool:
        return now - self.last_rx >= self.ping_interval and self.ping_rid not in self.pending
