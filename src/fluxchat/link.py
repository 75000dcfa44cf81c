"""One established peer link as the rest of the node sees it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from . import messages as m
from .errors import FluxError
from .session import Established, RequestFailed, ResponseReceived, Session


class LinkClosed(FluxError):
    """The link closed before the answer came."""


class RequestTimeout(FluxError):
    """The peer did not answer in time."""


class Link:
    def __init__(self, session: Session, writer: asyncio.StreamWriter, direction: str,
                 address: tuple[str, int], established: Established, now: float,
                 request_timeout: float) -> None:
        self._session, self._writer = session, writer
        self.direction, self.address = direction, address
        self.peer_id = established.peer_id
        self.peer_key = established.peer_key
        self.contact = established.contact
        self.observed_host = established.observed_host
        self.established_at = now
        self.request_timeout = request_timeout
        self.closed = False
        self._waiting: dict[int, asyncio.Future[m.Message]] = {}

    async def request(self, build: Callable[[int], m.Message],
                      timeout: float | None = None) -> m.Message:
        """Send a request and wait for its answer (which may be a Fail)."""
        if self.closed:
            raise LinkClosed("link is closed")
        timeout = self.request_timeout if timeout is None else timeout
        rid = self._session.send_request(build, time.monotonic(), timeout)
        future: asyncio.Future[m.Message] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        self._flush()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestTimeout(f"no answer within {timeout:g} s") from None
        finally:
            self._waiting.pop(rid, None)

    def idle_since(self) -> float | None:
        """When the link was last used, or None while requests are in flight either way."""
        if self._waiting or self._session.has_work():
            return None
        return self._session.timers.last_use

    def respond(self, message: m.Message) -> None:
        self._session.respond(message)
        self._flush()

    def notify(self, message: m.Message) -> None:
        self._session.notify(message)
        self._flush()

    def close(self, code: int, text: str) -> None:
        self._session.close(code, text)
        self._flush()
        self.mark_closed()
        self._writer.close()

    def resolve(self, event: ResponseReceived | RequestFailed) -> None:
        future = self._waiting.get(event.rid)
        if future is None or future.done():
            return
        if isinstance(event, ResponseReceived):
            future.set_result(event.message)
        else:
            future.set_exception(LinkClosed(f"request {event.reason}"))

    def mark_closed(self) -> None:
        self.closed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(LinkClosed("link closed"))

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)
