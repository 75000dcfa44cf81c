"""How the outbox worker cuts due mail into bursts: per recipient, at most `size` mails per
burst, and each burst into DeliverMany frames that fit the link's payload limit. Pure.

One DeliverMany carries many envelopes, so a burst of mail costs one frame, one round trip
and one commit at each end instead of one per mail (and stays far inside the per-link frame
budget of session.py, which counts frames).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")

# A DeliverMany's CBOR around its envelopes, at most: array head, the largest rid, the list
# head; and per envelope its byte-string head.
MANY_OVERHEAD = 1 + 9 + 3
ENVELOPE_OVERHEAD = 5


def bursts(due: Sequence[T], recipient: Callable[[T], bytes], size: int, count: int,
           room: Callable[[bytes], int]) -> list[list[T]]:
    """At most `count` bursts of at most `size` items, each for one recipient and at most
    `room(recipient)` per recipient, in the order the recipients first appear in `due` (most
    overdue first)."""
    by_recipient: dict[bytes, list[list[T]]] = {}
    out: list[list[T]] = []
    for item in due:
        key = recipient(item)
        chunks = by_recipient.setdefault(key, [])
        if not chunks or len(chunks[-1]) >= size:
            if len(out) >= count or len(chunks) >= room(key):
                continue
            chunks.append([])
            out.append(chunks[-1])
        chunks[-1].append(item)
    return out


def frames(envelopes: Sequence[bytes], max_payload: int) -> Iterator[list[int]]:
    """Indexes of `envelopes` grouped so that each group's DeliverMany fits `max_payload`
    (an envelope too large to share a frame goes alone)."""
    group: list[int] = []
    used = MANY_OVERHEAD
    for index, envelope in enumerate(envelopes):
        cost = len(envelope) + ENVELOPE_OVERHEAD
        if group and used + cost > max_payload:
            yield group
            group, used = [], MANY_OVERHEAD
        group.append(index)
        used += cost
    if group:
        yield group
