"""The loop that drives one link's session over one connection.

Read bytes → feed the session → act on its events → write what it returns, until the
session closes. The loop sleeps until data arrives or the session's next timer is due;
whoever gives the session new work from outside (a request) calls `rearm()`, so that sleep
ends in time and the session's timers are the only ones a request needs. Before reading
more, the loop waits until the peer has taken our output (within the write deadline): a
peer that stops reading stops being read, and soon loses the link. Likewise a peer that
overdrew its frame budget is not read from until the budget has refilled, and one that took
more than its fair part of the node's budget of mail requests (all links together) is not read
from while that budget is spent.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import Awaitable, Callable

from .fairshare import FairShare
from .link import OutputLimits, drained, flush, shut
from .session import Session, State
from .session_events import Established, Event
from .tls_stream import TlsStream
from .wire_fields import ErrorCode

READ_CHUNK = 65536
MAIL_PAUSE = 0.05   # seconds a link held back by the node's mail budget waits to look again
E = ErrorCode

EventHandler = Callable[[Event], Awaitable[None]]


class LinkLoop:
    def __init__(self, session: Session, stream: TlsStream, output: OutputLimits) -> None:
        self.session, self.stream, self.output = session, stream, output
        self._timer: asyncio.Timeout | None = None
        self._pending: list[Event] = []
        # The node's budget of mail requests, shared by all links, and this peer's key in it.
        self.mail_budget: tuple[FairShare, str] | None = None

    def rearm(self) -> None:
        """The session's next deadline may have moved earlier: wake the sleep in time."""
        if self._timer is not None:
            self._timer.reschedule(_finite(self.session.next_deadline()))

    async def run(self, on_event: EventHandler, until_open: bool) -> None:
        """Drive the session until it closes, or (until_open) until it is established;
        events after the establishing one wait for the next `run`."""
        session = self.session
        try:
            while True:
                events, self._pending = self._pending, []
                for index, event in enumerate(events):
                    if until_open and isinstance(event, Established):
                        self._pending = events[index + 1:]
                        flush(session, self.stream)
                        return
                    await on_event(event)
                flush(session, self.stream)
                if events:
                    # What the events started (request handlers, requesters woken by their
                    # answers) runs before this loop re-arms its timers and waits for the peer:
                    # a lone Deliver is opened and committed one loop turn sooner.
                    await asyncio.sleep(0)
                if session.state is State.CLOSED:
                    self.finish()
                    return
                if not await drained(self.stream, self.output.write_timeout):
                    self._pending = session.close(E.TIMEOUT, "peer stopped reading")
                    continue
                self._pending = await self._read()
        except (OSError, ssl.SSLError) as exc:
            self._pending = session.close(E.SHUTDOWN, str(exc) or type(exc).__name__)
            for event in self._pending:
                await on_event(event)
            self.finish()
        except BaseException:
            self.stream.abort()
            raise

    def finish(self) -> None:
        """Send what is left (the Error frame) and let the connection go."""
        flush(self.session, self.stream)
        shut(self.stream, self.output.close_grace)

    async def _read(self) -> list[Event]:
        session = self.session
        now = time.monotonic()
        pause = max(session.read_delay(now), self._mail_pause(now))
        if pause > 0:
            # The peer overdrew its frame budget, or took more than its part of the node's
            # mail budget: leave its bytes in the socket for now.
            try:
                async with asyncio.timeout_at(_finite(session.next_deadline())) as timer:
                    self._timer = timer
                    await asyncio.sleep(pause)
            except TimeoutError:
                return session.tick(time.monotonic())
            finally:
                self._timer = None
            return []
        try:
            async with asyncio.timeout_at(_finite(session.next_deadline())) as timer:
                self._timer = timer
                data = await self.stream.read(READ_CHUNK)
        except TimeoutError:
            return session.tick(time.monotonic())
        finally:
            self._timer = None
        if not data:
            return session.close(E.SHUTDOWN, "peer closed the connection")
        before = session.mail_requests_received
        events = session.receive_data(data, time.monotonic())
        if self.mail_budget is not None and session.mail_requests_received > before:
            budget, peer = self.mail_budget
            budget.charge(peer, session.mail_requests_received - before, time.monotonic())
        return events

    def _mail_pause(self, now: float) -> float:
        """A light user of the node's mail budget (a newcomer, an honest sender beside a
        greedy crowd) is read at once; the others wait while it, or their part, is spent."""
        if self.mail_budget is None:
            return 0.0
        budget, peer = self.mail_budget
        return 0.0 if budget.ready(peer, 1.0, now) or budget.light(peer, now) else MAIL_PAUSE


def _finite(deadline: float) -> float | None:
    return None if deadline == math.inf else deadline
