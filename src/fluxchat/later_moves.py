"""Outbox moves that acknowledge nothing to anyone, written later and together.

When our receipt has been handed over to the sender of its mails, marking it `handed_over` is
bookkeeping: no peer and no user waits for that commit. A commit of its own per receipt would
cost a commit per mail received one at a time, right in the path of the next mail. So these
moves wait, at most DELAY seconds or until BATCH of them are pending, and go in one
transaction. Until then their rows stay out of the outbox worker's reads (AttemptSlots
.settling), so nothing is sent twice. A crash before that commit loses only the bookkeeping:
the receipt goes once more after the restart, and its sender ignores the copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .attempt_slots import AttemptSlots
from .errors import FluxError
from .store import Store
from .store_batch import OutboxMove
from .tasks import Background

log = logging.getLogger("fluxchat.mail")
DELAY = 0.2   # seconds a move may wait
BATCH = 64    # moves that are written at once without waiting


class LaterMoves:
    def __init__(self, store: Store, now: Callable[[], int], slots: AttemptSlots,
                 tasks: Background) -> None:
        self.store, self.now, self.slots, self.tasks = store, now, slots, tasks
        self._pending: list[OutboxMove] = []
        self._waiting = False

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, move: OutboxMove) -> None:
        self._pending.append(move)
        self.slots.settling.add(move.uuid)
        if len(self._pending) >= BATCH:
            self.flush()
        elif not self._waiting:
            self._waiting = True
            self.tasks.spawn(self._later())

    async def _later(self) -> None:
        try:
            await asyncio.sleep(DELAY)
        finally:
            self._waiting = False
        self.flush()

    def flush(self) -> None:
        moves, self._pending = self._pending, []
        if not moves:
            return
        try:
            self.store.move_all(moves, self.now())
        except FluxError as exc:   # e.g. the disk is full: the rows stay as they were
            log.warning("outbox bookkeeping not written: %s", exc)
        finally:
            self.slots.settling.difference_update(move.uuid for move in moves)
