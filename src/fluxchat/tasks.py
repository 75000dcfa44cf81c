"""Who owns a task, and what happens to its failure.

Every task has an owner that cancels it on close: the node's TaskGroup for the long-running
loops, a `Background` (owned by the component that spawned it, closed by the node's stop) for
short jobs. Every failure is logged exactly once: a FluxError is something a peer or the network
did (the caller decides what it means), anything else is a bug of ours, logged with its traceback
and never counted against a peer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from .errors import FluxError

log = logging.getLogger("fluxchat.tasks")
T = TypeVar("T")

# Jobs that may each open a new peer link (a key publication, a fetch round) run at most this
# many at once: a link's TLS and link handshake hold about 20 KiB while they run, and memory
# taken at a peak stays. Dialing 25 new links at once left 45 KiB per link end against 35 KiB
# with 8 or fewer at once (bench/linkmem.py --side dial --at-once N).
NEW_LINKS_AT_ONCE = 8


class Bug(FluxError):
    """Stands in for an unexpected exception of ours, already logged with its traceback."""


def report(task: asyncio.Task[Any], what: str = "background task") -> None:
    """Log a finished task's failure once: a FluxError briefly, anything else with its traceback."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, FluxError):
        log.info("%s %s: %s", what, task.get_name(), error)
    elif error is not None:
        log.error("bug in %s %s", what, task.get_name(), exc_info=error)


class Background:
    """Short jobs of one owner: keeps a reference to each (so none is collected mid-flight),
    logs each failure once (see `report`), and cancels whatever still runs when closed."""

    def __init__(self, name: str = "background task") -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.adopt(task)
        return task

    def adopt(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        report(task, self.name)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:   # outcomes were logged by _done; waiting makes sure none outlives its owner
            await asyncio.wait(tasks)


async def settle(jobs: Iterable[Awaitable[T]], what: str,
                 at_once: int | None = None) -> list[T | FluxError]:
    """Run `jobs` concurrently to the end (at most `at_once` at a time, if given); each outcome
    is its result or the FluxError it raised. A bug (any other exception) is logged here with
    its traceback and comes back as `Bug`, so a caller that blames peers for failures can tell
    our fault from theirs."""
    if at_once is not None:
        slots = asyncio.Semaphore(at_once)

        async def bounded(job: Awaitable[T]) -> T:
            async with slots:
                return await job

        jobs = [bounded(job) for job in jobs]
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    settled: list[T | FluxError] = []
    for outcome in outcomes:
        if isinstance(outcome, FluxError):
            settled.append(outcome)
        elif isinstance(outcome, asyncio.CancelledError):   # that job was cancelled, not us
            settled.append(FluxError(f"{what}: cancelled"))
        elif isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):   # an exit: not ours to swallow
                raise outcome
            log.error("bug in %s", what, exc_info=outcome)
            settled.append(Bug(f"internal error in {what} (logged)"))
        else:
            settled.append(outcome)
    return settled
