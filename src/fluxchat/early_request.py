"""The early request (PROTOCOL.md §5.3): a dialer's first request travels with its Hello, or
with its Work, instead of waiting a round trip for the Welcome.

The acceptor reads frames in order and deals with a Hello or a Work completely (checked,
answered) before it reads the next frame, so a request behind them is read only once the
dialer has proved who it is: after a Welcome it is an ordinary request on the open link.
Behind a Hello answered with a Challenge the request is dropped unread (at most one, of
bounded size), and the dialer sends it again behind its Work. Pure: no I/O.
"""

from __future__ import annotations

from . import messages as m
from .errors import ProtocolError
from .framing import Frame

E = m.ErrorCode


class FirstRequest:
    """The dialer's side. `status`: "held" (waits for our Work or the Welcome), "sent" (with
    the Hello), "resend" (challenged: the acceptor dropped it), then "with-work" or
    "after-welcome" once it went out again."""

    def __init__(self, message: m.Message, with_hello: bool) -> None:
        self.message = message
        self.status = "sent" if with_hello else "held"

    def challenged(self) -> None:
        if self.status == "sent":
            self.status = "resend"

    def release(self, status: str) -> m.Message | None:
        """The request, if it is still to be sent (behind our Work, or after Welcome)."""
        if self.status not in ("held", "resend"):
            return None
        self.status = status
        return self.message


def fits(message: m.Message, limit: int) -> bool:
    """Whether `message` is small enough to go before the link is open."""
    return len(m.encode_message(message)[1]) <= limit


def drop_unread(frame: Frame, after_hello: bool, dropped_before: bool, limit: int) -> None:
    """Acceptor: a request frame before the link is open, behind a Hello answered with a
    Challenge, is dropped unread (it has spent its frame budget). A request before the
    Hello, a second one, or one over `limit` bytes closes the link."""
    if not after_hello or dropped_before:
        raise ProtocolError(E.UNEXPECTED, "request before the link is open")
    if len(frame.payload) > limit:
        raise ProtocolError(E.TOO_LARGE, f"early request over {limit} bytes")
