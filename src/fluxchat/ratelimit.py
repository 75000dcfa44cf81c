"""Token buckets: one alone (a per-link budget) or one per key (e.g. per source prefix).

Pure: the caller passes `now`.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; starts full."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self.tokens, self.updated = burst, now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many; False (nothing spent) otherwise."""
        self.refill(now)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


    def charge(self, now: float, cost: float = 1.0) -> None:
        """Spend `cost` tokens even if that leaves a debt (work already done)."""
        self.refill(now)
        self.tokens -= cost

    def wait_time(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0 if it is not in debt)."""
        self.refill(now)
        return max(0.0, -self.tokens / self.rate)


class RateLimiter:
    """Allows `rate` events per second per key with bursts of `burst`.

    Memory is bounded by `max_keys`: beyond it the key used least recently is forgotten
    (its bucket is the most likely to have refilled anyway), so a flood of new keys evicts
    only keys that are quiet, never everybody at once."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def ready(self, key: str, now: float) -> bool:
        """Whether `allow` would say yes now, spending nothing (a key not seen: yes)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return True
        bucket.refill(now)
        return bucket.tokens >= 1

    def allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)
