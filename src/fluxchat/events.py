"""The live event stream: what `watch` and the web app's live pages receive.

The node publishes small JSON-ready dicts (mail arrived, delivery state changed, peer linked or
unlinked, reachability changed); every subscriber has its own bounded queue. Publishing never
waits: a subscriber whose queue is full is cut off (its `overflowed` flag set, its stream ended),
so a slow reader costs itself the subscription and never slows the node or other readers.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

Event = dict[str, Any]

QUEUE_LIMIT = 256        # events one subscriber may have waiting
MAX_SUBSCRIBERS = 32     # across IPC and web; more are refused


class TooManySubscribers(Exception):
    pass


class Subscription:
    """One reader's queue. Iterate it (async) to receive events until it is closed."""

    def __init__(self, hub: EventHub, limit: int) -> None:
        self._hub, self._limit = hub, limit
        self._queue: collections.deque[Event] = collections.deque()
        self._ready = asyncio.Event()
        self.closed = False
        self.overflowed = False
        # Called when the queue overflows, e.g. to drop a connection stuck on a full socket.
        self.on_overflow: Callable[[], None] | None = None

    def push(self, event: Event) -> None:
        if self.closed:
            return
        if len(self._queue) >= self._limit:
            self.overflowed = True
            self.close()
            if self.on_overflow is not None:
                self.on_overflow()
            return
        self._queue.append(event)
        self._ready.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._queue.clear()
            self._ready.set()
            self._hub.discard(self)

    async def next(self) -> Event | None:
        """The next event, or None once the subscription is closed."""
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while (event := await self.next()) is not None:
            yield event


class EventHub:
    def __init__(self, queue_limit: int = QUEUE_LIMIT, max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        self.queue_limit, self.max_subscribers = queue_limit, max_subscribers
        self._subscribers: set[Subscription] = set()
        self._seq = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        if len(self._subscribers) >= self.max_subscribers:
            raise TooManySubscribers(f"at most {self.max_subscribers} event subscribers")
        subscription = Subscription(self, self.queue_limit)
        self._subscribers.add(subscription)
        return subscription

    def discard(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def publish(self, event: Event) -> None:
        """Hand `event` (plus a sequence number) to every subscriber; never blocks."""
        self._seq += 1
        event = {"seq": self._seq, **event}
        for subscription in list(self._subscribers):
            subscription.push(event)

    def close(self) -> None:
        for subscription in list(self._subscribers):
            subscription.close()
