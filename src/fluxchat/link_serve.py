"""What a peer sends on an open link, handed to the node: each request to the node's
handler in a task of its own, its answer back on the link; answers to our own requests to
the link that waits for them.

A flood of equal notices read at once costs one handler run, not one task each. A bug in a
handler answers `INTERNAL` and keeps the link; a request that arrives on a link already
closed (an early request on a link the registry refused) is not served.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from . import messages as m
from .ids import short_id
from .link import Link
from .link_setup import log_closed
from .logsetup import about_peer
from .session_events import (
    Closed,
    Event,
    NoticeReceived,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
)
from .tasks import Background
from .wire_fields import ErrorCode

log = logging.getLogger("fluxchat.peer")
E = ErrorCode

RequestHandler = Callable[[Link, m.Message], Awaitable[m.Message | None]]


class LinkServer:
    def __init__(self, handler: RequestHandler, tasks: Background) -> None:
        self._handler, self._tasks = handler, tasks

    def on_event(self, link: Link, event: Event) -> None:
        """One event of an open link's session."""
        if isinstance(event, RequestReceived):
            if not link.closed:
                self._tasks.spawn(self._serve(link, event.message))
        elif isinstance(event, NoticeReceived):
            # A notice equal to one still waiting to be served adds nothing.
            if event.message not in link.queued_notices:
                link.queued_notices.add(event.message)
                self._tasks.spawn(self._serve_notice(link, event.message))
        elif isinstance(event, (ResponseReceived, RequestFailed)):
            link.resolve(event)
        elif isinstance(event, Closed):
            log_closed(event, short_id(link.peer_id))

    async def _serve_notice(self, link: Link, message: m.Message) -> None:
        link.queued_notices.discard(message)   # from now on, an equal notice is news again
        await self._serve(link, message)

    async def _serve(self, link: Link, message: m.Message) -> None:
        try:
            answer = await self._handler(link, message)
        except Exception:  # a bug in one handler must not take the link down with it
            log.exception("handler for %s failed", type(message).__name__,
                          extra=about_peer(link.peer_id))
            rid = getattr(message, "rid", None)
            answer = None if rid is None else m.Fail(rid, int(E.INTERNAL), "internal error")
        if answer is not None and not link.closed:
            await link.respond(answer)
