"""A node-wide budget of costly work (private-key operations for peers' mail), shared fairly
between the peers that cause it. Each peer also keeps its own budget (mail_limits); this one
bounds what all of them together can make the node spend.

`rate` units per second in all, bursts of `burst`. While more than half the burst is left,
any peer may spend. Below half the node is contended: a peer may spend only while its own
recent use is at most an equal share of all active peers' recent use (use decays with a
half-life of `half_life` seconds; a peer is active while it spent within `active` seconds).
So the peers that took the most wait, and one that took little, such as a newcomer, is
served from what refills. Memory is bounded: a peer idle for `active` seconds is forgotten,
and at most `max_peers` are kept. Pure: the caller passes `now`.
"""

from __future__ import annotations

import math
from collections import OrderedDict

from .ratelimit import TokenBucket


class FairShare:
    def __init__(self, rate: float, burst: float, now: float, half_life: float = 10.0,
                 active: float = 30.0, max_peers: int = 4096) -> None:
        self._bucket = TokenBucket(rate, burst, now)
        self._decay = math.log(2) / half_life
        self._active, self._max_peers = active, max_peers
        self._use: OrderedDict[str, tuple[float, float]] = OrderedDict()  # peer -> (use, at)
        self._total, self._total_at = 0.0, now

    def take(self, peer: str, cost: float, now: float) -> bool:
        """Spend `cost` units for `peer` if the node-wide budget and fairness allow it."""
        if not self.ready(peer, cost, now):
            return False
        self.charge(peer, cost, now)
        return True

    def charge(self, peer: str, cost: float, now: float) -> None:
        """Spend `cost` units for `peer` even into debt (work already done, such as requests
        read before they could be counted); the debt delays everyone until it is refilled."""
        self._forget_idle(now)
        self._bucket.refill(now)
        use = self._decayed(*self._use.get(peer, (0.0, now)), now)
        total = self._decayed(self._total, self._total_at, now)
        self._bucket.tokens -= cost
        self._use[peer] = (use + cost, now)
        self._use.move_to_end(peer)
        self._total, self._total_at = total + cost, now

    def ready(self, peer: str, cost: float, now: float) -> bool:
        """Whether `take` would say yes now, spending nothing."""
        self._forget_idle(now)
        bucket = self._bucket
        bucket.refill(now)
        if bucket.tokens < cost:
            return False
        if bucket.tokens < bucket.burst / 2:
            use = self._decayed(*self._use.get(peer, (0.0, now)), now)
            total = self._decayed(self._total, self._total_at, now)
            peers = len(self._use) + (peer not in self._use)
            return use <= total / peers
        return True

    def light(self, peer: str, now: float) -> bool:
        """Whether `peer`'s recent use is at most half an equal share of all active peers'
        (a newcomer's is none): such a peer may go ahead even into debt (link_loop.py)."""
        self._forget_idle(now)
        total = self._decayed(self._total, self._total_at, now)
        peers = len(self._use) + (peer not in self._use)
        return self.share_of(peer, now) <= total / peers / 2

    def share_of(self, peer: str, now: float) -> float:
        """`peer`'s recent use (decayed units), for tests and benchmarks."""
        return self._decayed(*self._use.get(peer, (0.0, now)), now)

    def _decayed(self, value: float, at: float, now: float) -> float:
        return value * math.exp(-self._decay * max(0.0, now - at))

    def _forget_idle(self, now: float) -> None:
        # Ordered by last spend: the idle ones are at the front.
        while self._use:
            peer, (use, at) = next(iter(self._use.items()))
            if now - at < self._active and len(self._use) < self._max_peers:
                break
            del self._use[peer]
            total = self._decayed(self._total, self._total_at, now)
            self._total = max(0.0, total - self._decayed(use, at, now))
            self._total_at = now
