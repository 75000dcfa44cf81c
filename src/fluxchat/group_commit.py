"""Group commit: writes that arrive in the same moment share one transaction.

A commit costs far more than the rows it writes (with SQLCipher, every page it touches is
encrypted and authenticated; store_batch explains the rest), so mails submitted together
should pay for one commit, not one each. Callers `add` an item and await its outcome, which
is set only after the COMMIT that holds the item returned: nobody is told "done" before it
is on disk, and a crash before that COMMIT loses only items whose callers were never told.

Grouping adds no waiting: the group is formed at the event loop's next turn, so it holds
whatever was added while the loop ran the callbacks that were ready (requests read from
several connections at once, a gather of submits); a lone item is written at once. A group
holds at most `limit` items; the rest form the next group, a turn later.

Work that need not wait for the commit overlaps it: `start(items, written)` runs when the
group is formed, and the commit follows in the next turn, after whatever `start` scheduled
for that turn (the mailer seals the mail and sends it to a linked recipient meanwhile);
`written` is done once the group is committed, and whatever records the outcome of that
work must await it first. Callers are still answered only after the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from .errors import StorageError

T = TypeVar("T")

# Writes every item in one transaction: per item None (written) or the StorageError that
# rolled it back alone; raises if the transaction as a whole failed (nothing written).
Commit = Callable[[Sequence[T]], Sequence[StorageError | None]]


class GroupCommit(Generic[T]):
    def __init__(self, commit: Commit[T], after: Callable[[list[T]], None], limit: int,
                 start: Callable[[list[T], Awaitable[None]], object] | None = None) -> None:
        self._commit, self._after, self.limit, self._start = commit, after, limit, start
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._scheduled = False
        self.commits = 0   # transactions written (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, item: T) -> asyncio.Future[None]:
        """Queue `item` for the next group; the future is done once that group's commit is
        (its exception: the StorageError that kept this item out)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._schedule()
        return future

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        group, self._pending = self._pending[:self.limit], self._pending[self.limit:]
        if self._pending:
            self._schedule()
        if not group:
            return
        if self._start is None:
            self._write(group, None)
            return
        loop = asyncio.get_running_loop()
        written: asyncio.Future[None] = loop.create_future()
        try:
            self._start([item for item, _ in group], written)
        finally:   # whatever happened to the work, the callers' commit comes
            loop.call_soon(self._write, group, written)

    def _write(self, group: list[tuple[T, asyncio.Future[None]]],
               written: asyncio.Future[None] | None) -> None:
        try:
            outcomes = self._commit([item for item, _ in group])
        except Exception as exc:   # the whole transaction failed: every caller hears why
            for _, future in group:
                _settle(future, exc)
            if written is not None:
                _settle(written, exc)
                written.exception()   # retrieved: whoever awaits it logs it
            return
        finally:
            self.commits += 1
        for (_, future), outcome in zip(group, outcomes, strict=True):
            _settle(future, outcome)
        if written is not None:
            _settle(written, None)
        self._after([item for (item, _), outcome in zip(group, outcomes, strict=True)
                     if outcome is None])


def _settle(future: asyncio.Future[None], outcome: BaseException | None) -> None:
    if future.done():   # its caller gave up (e.g. its connection closed): written anyway
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)
