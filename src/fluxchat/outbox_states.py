"""The outbox's states and the moves allowed between them: the one table the mailer, the mailroom,
the store and the local API share.

    queued ─┬─> waiting_for_key ─┐      (the recipient's key is not found yet: retried with backoff,
            │                    │       at once when the key or a link to the recipient appears)
            ├─> stored (on n) ───┼─> delivered   (a verified receipt came back; final)
            └─> handed_over ─────┘
    any pending state ──> expired (the retention time ended) | failed (given up, with a reason)
    expired | failed ──> queued   (the user asked to resend) | delivered (a late receipt)

Pending states may also move among themselves: a stored mail is handed over directly when the
recipient is reached later, and a receipt goes back to queued when its mail arrives again.
"""

from __future__ import annotations

import enum
import functools


class OutboxState(enum.StrEnum):
    QUEUED = "queued"
    WAITING_FOR_KEY = "waiting_for_key"
    STORED = "stored"
    HANDED_OVER = "handed_over"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    FAILED = "failed"


S = OutboxState
PENDING: frozenset[OutboxState] = frozenset({S.QUEUED, S.WAITING_FOR_KEY, S.STORED, S.HANDED_OVER})
FINAL: frozenset[OutboxState] = frozenset({S.DELIVERED, S.EXPIRED, S.FAILED})
RESENDABLE: frozenset[OutboxState] = frozenset({S.EXPIRED, S.FAILED})

TRANSITIONS: dict[OutboxState, frozenset[OutboxState]] = {
    **{state: PENDING | FINAL for state in PENDING},
    S.DELIVERED: frozenset(),
    # A receipt may still come after we gave up: the mail did arrive, and delivered says so.
    S.EXPIRED: frozenset({S.QUEUED, S.DELIVERED}),
    S.FAILED: frozenset({S.QUEUED, S.DELIVERED}),
}


class TransitionError(ValueError):
    """A move the table does not allow (a bug in the caller, or a state that moved on meanwhile)."""


def allowed(old: str, new: str) -> bool:
    """Whether an outbox mail in state `old` may move to `new`; unknown names are never allowed."""
    try:
        return OutboxState(new) in TRANSITIONS[OutboxState(old)]
    except ValueError:
        return False


@functools.cache
def sources(new: OutboxState) -> tuple[OutboxState, ...]:
    """The states a mail may move to `new` from, sorted (for a `state IN (...)` clause)."""
    return tuple(sorted(old for old, targets in TRANSITIONS.items() if new in targets))


def parse_state(name: str) -> OutboxState:
    try:
        return OutboxState(name)
    except ValueError:
        raise TransitionError(f"unknown outbox state {name!r}") from None
