"""A deadline that does not charge a peer for our own stalls, pure: the caller passes `now`.

The TLS deadline of an accepted connection (`links.tls_timeout`, 3 s) bounds how long a
socket that has not proven anything holds one of our handshake slots. On a machine so loaded
that our own process is not scheduled for seconds (a load average of 20 on 2 cores), or
whose event loop is busy, an honest peer's handshake can miss it through no fault of its own.
So the waiting side looks at the clock every `SLICE` seconds and moves the deadline later by
how late those looks came (the time we were not running), up to `grace` seconds in all:
the peer is timed on what it could do, and the slot is still given back within
`timeout + grace`. It stays a bound on purpose: how many slots silent sockets can hold is
capped per prefix (admission.py); this caps for how long, also while an attacker keeps our
CPU busy. link_setup.accept_tls does the looking.
"""

from __future__ import annotations

SLICE = 0.25        # seconds between looks at our own lateness
NOISE = 0.005       # lateness below this per look is timer resolution, not a stall


class LagDeadline:
    def __init__(self, deadline: float, grace: float) -> None:
        self.deadline, self.grace = deadline, grace
        self.lag = 0.0                  # our own lateness so far, at most `grace`
        self._wake_at: float | None = None

    def due(self) -> float:
        return self.deadline + self.lag

    def expired(self, now: float) -> bool:
        return now >= self.due()

    def wait(self, now: float) -> float:
        """Seconds to wait before the next look (0 once expired); call `woke` after it."""
        span = max(0.0, min(SLICE, self.due() - now))
        self._wake_at = now + span
        return span

    def woke(self, now: float) -> None:
        """The wait asked for by `wait` ended at `now`: lateness beyond it is our own lag."""
        if self._wake_at is not None:
            late = now - self._wake_at
            if late > NOISE:
                self.lag = min(self.grace, self.lag + late)
            self._wake_at = None


GRACE = 2.0         # our own stalls forgiven, in multiples of the TLS timeout


def tls_deadline(accepted: float, timeout: float, handshake_timeout: float) -> LagDeadline:
    """The TLS deadline of a connection accepted at `accepted`: `timeout` later, moved by our
    own stalls up to `GRACE` times as much; never past the whole handshake's deadline."""
    base = min(timeout, handshake_timeout)
    return LagDeadline(accepted + base, max(0.0, min(GRACE * base, handshake_timeout - base)))
