"""How many delivery attempts run, and on which mail. Pure bookkeeping, no I/O.

The mailer starts attempts from two places, the outbox worker (due mail read from the store)
and a submit (mail just committed, still in memory); both take their slots here, so neither
starts a second attempt on a mail the other is working on, nor more than `per_recipient`
attempts to one recipient, nor more than `workers` in all.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from .batching import bursts

T = TypeVar("T")


class AttemptSlots:
    def __init__(self, workers: int, per_recipient: int) -> None:
        self.workers, self.per_recipient = workers, per_recipient
        self.busy: set[bytes] = set()   # uuids of mail an attempt is working on
        self.settling: set[bytes] = set()   # ... or whose outcome is yet to be written
        self.running = 0                # attempts in flight
        self._to: collections.Counter[bytes] = collections.Counter()   # ... per recipient

    def room(self) -> int:
        """Attempts that may start now."""
        return self.workers - self.running

    def room_for(self, recipient: bytes) -> int:
        """Attempts to `recipient` that may start now."""
        return self.per_recipient - self._to[recipient]

    def taken(self) -> set[bytes]:
        """Mail no attempt may start on now."""
        return self.busy | self.settling if self.settling else self.busy

    def full(self) -> list[bytes]:
        """Recipients that may get no further attempt now."""
        return [recipient for recipient, n in self._to.items() if n >= self.per_recipient]

    def plan(self, due: Sequence[T], recipient: Callable[[T], bytes], uuid: Callable[[T], bytes],
             size: int) -> list[list[T]]:
        """Cut `due` (not busy) into bursts of at most `size`, as many as the slots allow,
        and take a slot for each: the caller must start each burst and `release` it after."""
        planned = bursts(due, recipient, size, self.room(), self.room_for)
        for burst in planned:
            self.take(recipient(burst[0]), (uuid(item) for item in burst))
        return planned

    def take(self, recipient: bytes, uuids: Iterable[bytes]) -> None:
        self.running += 1
        self._to[recipient] += 1
        self.busy.update(uuids)

    def release(self, recipient: bytes, uuids: Iterable[bytes]) -> None:
        self.running -= 1
        self._to[recipient] -= 1
        if not self._to[recipient]:
            del self._to[recipient]
        self.busy.difference_update(uuids)
