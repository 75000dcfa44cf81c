"""One established peer link as the rest of the node sees it.

Requests are timed by the session alone (one timer per request): the link wakes the link
loop so its sleep ends at the new deadline. Output is bounded: answers wait until the
socket drains, past `max_queued` bytes a request is refused instead of answered, and a peer
that does not read within `write_timeout` loses the link, which is then aborted (a plain
close would keep the unsent bytes in memory for as long as the peer keeps the socket open).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import messages as m
from .errors import FluxError
from .session import Session
from .session_events import Established, RequestFailed, ResponseReceived
from .tls_stream import TlsStream
from .wire_fields import ErrorCode

E = ErrorCode

class LinkClosed(FluxError):
    """The link closed before the answer came."""


class RequestTimeout(FluxError):
    """The peer did not answer in time."""


@dataclass
class EarlyRequest:
    """A dial's first request, sent with the Hello (`with_hello`) or its Work (PROTOCOL.md
    §5.3); `answer` is set when it went out on the link the dial produced."""

    build: Callable[[int], m.Message]
    with_hello: bool
    rid: int | None = None
    answer: asyncio.Future[m.Message] | None = None


@dataclass(frozen=True)
class OutputLimits:
    max_queued: int = 4 * 1024 * 1024   # bytes waiting to be sent on one link
    write_timeout: float = 20.0         # a full queue must start draining within this
    close_grace: float = 2.0            # for the last frames after close, then abort


def flush(session: Session, stream: TlsStream) -> None:
    """Hand whatever the session produced to the connection (encrypted a record at a time)."""
    data = session.data_to_send()
    if data:
        stream.write(data)


def shut(stream: TlsStream, grace: float) -> None:
    """Close the connection and free its buffers: at once if output is stuck, else after
    `grace` at the latest (a peer that stops reading would keep the last frames queued)."""
    stream.close()
    if stream.queued():
        stream.abort()
    else:
        stream.abort_after(grace)


async def drained(stream: TlsStream, timeout: float) -> bool:
    """Wait until the transport's buffer is below its high-water mark; False if the peer
    did not read for `timeout` seconds. A lost connection raises ConnectionError."""
    try:
        async with asyncio.timeout(timeout):
            await stream.drain()
    except TimeoutError:
        return False
    return True


class Link:
    def __init__(self, session: Session, stream: TlsStream, direction: str,
                 address: tuple[str, int], established: Established, now: float,
                 request_timeout: float, output: OutputLimits = OutputLimits(),
                 rearm: Callable[[], None] = lambda: None) -> None:
        self._session, self._stream = session, stream
        self.direction, self.address = direction, address
        self.peer_id = established.peer_id
        self.peer_key = established.peer_key
        self.contact = established.contact
        self.observed_host = established.observed_host
        self.established_at = now
        self.request_timeout = request_timeout
        self.output = output
        self._rearm = rearm
        self.closed = False
        self.refused_for_output = 0
        self.peak_queued = 0
        self.queued_notices: set[m.Message] = set()   # received, handler not started yet
        self._waiting: dict[int, asyncio.Future[m.Message]] = {}

    async def request(self, build: Callable[[int], m.Message],
                      timeout: float | None = None) -> m.Message:
        """Send a request and wait for its answer (which may be a Fail).

        RequestTimeout when the session's timer for it fires, LinkClosed if the link ends."""
        if self.closed:
            raise LinkClosed("link is closed")
        timeout = self.request_timeout if timeout is None else timeout
        rid = self._session.send_request(build, time.monotonic(), timeout)
        future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        flush(self._session, self._stream)
        self._rearm()
        try:
            return await future
        finally:
            self._waiting.pop(rid, None)

    def expect(self, rid: int) -> asyncio.Future[m.Message]:
        """The answer to request `rid`, already sent by the session (an early request)."""
        future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        future.add_done_callback(lambda _: self._waiting.pop(rid, None))
        if self.closed:
            future.set_exception(LinkClosed("link closed"))
        return future

    def queued(self) -> int:
        """Bytes accepted for sending that the peer has not taken yet."""
        return self._stream.queued()

    def idle_since(self) -> float | None:
        """When the link was last used, or None while requests are in flight either way."""
        if self._waiting or self._session.has_work():
            return None
        return self._session.timers.last_use

    async def respond(self, message: m.Message) -> None:
        """Answer a peer request, then wait until the peer has read enough of our output.

        A peer that lets its answers pile up is refused further answers (a cheap Fail) and,
        if it does not read at all, loses the link."""
        rid = getattr(message, "rid", None)
        if rid is not None and self.queued() >= self.output.max_queued:
            self.refused_for_output += 1
            message = m.Fail(rid, int(E.RATE_LIMITED), "output queue full: read your answers")
        self._session.respond(message)
        flush(self._session, self._stream)
        self.peak_queued = max(self.peak_queued, self.queued())
        try:
            if not await drained(self._stream, self.output.write_timeout):
                self.close(E.TIMEOUT, "peer stopped reading")
        except ConnectionError:
            pass   # the link loop sees the loss too and closes the link

    def notify(self, message: m.Message) -> None:
        """Send a notice; dropped when output is already queued (a notice is only a hint)."""
        if self.closed or self.queued() >= self.output.max_queued:
            return
        self._session.notify(message)
        flush(self._session, self._stream)

    def close(self, code: int, text: str) -> None:
        if self.closed:
            return
        self._session.close(code, text)
        flush(self._session, self._stream)
        self.mark_closed()
        shut(self._stream, self.output.close_grace)

    def resolve(self, event: ResponseReceived | RequestFailed) -> None:
        future = self._waiting.get(event.rid)
        if future is None or future.done():
            return
        if isinstance(event, ResponseReceived):
            future.set_result(event.message)
        elif event.reason == "timeout":
            future.set_exception(RequestTimeout(f"no answer within {self.request_timeout:g} s"))
        else:
            future.set_exception(LinkClosed(f"request {event.reason}"))

    def mark_closed(self) -> None:
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkClosed("link closed"))
