"""A burst of mail in one transaction: what arrived (mail with the receipt we send back,
receipts for our mail) and how our own deliveries went (outbox state moves).

A commit costs far more than the rows it writes (the WAL frames of every page touched, the
index pages, the syscalls), so a batch of n mails costs about one commit instead of 2n. Crash
safety is unchanged: the caller acknowledges (sends `Ok`/`Delivered`) only after the method
returned, that is after the COMMIT; a crash before it loses only unacknowledged work, which
the sender sends again. Each item runs in its own SAVEPOINT, so an item that fails (a
constraint, a bug) is rolled back alone and reported, and the others still commit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from .errors import StorageError
from .outbox_states import OutboxState
from .sqldb import dbapi
from .store_base import StoreBase
from .store_inbox import InboxMail, insert_inbox, insert_seen, seen_in
from .store_outbox import OutboxMail, insert_outbox, keep_envelope, move_outbox

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class MailArrival:
    """A verified mail for us, and our sealed receipt for it (None: no receipt, e.g. our own)."""
    mail: InboxMail
    envelope_version: int
    receipt: OutboxMail | None


@dataclass(frozen=True)
class ReceiptArrival:
    """A verified receipt from `sender` for our mail `mail_uuid`."""
    uuid: bytes
    created_at: int
    sender: bytes
    mail_uuid: bytes
    detail: str


@dataclass(frozen=True)
class OutboxMove:
    """One call of set_outbox_state; `keep_envelope`: when the move is refused (a receipt came
    first), still record the envelope that was sent."""
    uuid: bytes
    state: OutboxState
    detail: str = ""
    reason: str | None = None
    stored_on: int | None = None
    next_attempt_at: int | None = None
    envelope: bytes | None = None
    attempted: bool = False
    keep_envelope: bool = False


# What receive_all says per arrival: a mail that was new, a copy of one already seen, a
# receipt that marked our mail delivered, one that did not (unknown mail, or already done).
NEW, DUPLICATE, DELIVERED, IGNORED = "new", "duplicate", "delivered", "ignored"


class BatchStore(StoreBase):
    def receive_all(self, arrivals: Sequence[MailArrival | ReceiptArrival],
                    now: int) -> list[str | StorageError]:
        """Commit every arrival in one transaction; per arrival NEW, DUPLICATE, DELIVERED,
        IGNORED, or the StorageError that rolled it (alone) back."""
        def one(db: dbapi.Connection, item: MailArrival | ReceiptArrival) -> str:
            if isinstance(item, MailArrival):
                return _take_mail(db, item, now)
            return _take_receipt(db, item, now)

        outcomes = self._each(arrivals, one)
        for item, outcome in zip(arrivals, outcomes, strict=True):
            if isinstance(item, MailArrival) and outcome == NEW:
                self._changed("inbox", item.mail.uuid)
                if item.receipt is not None:
                    self._changed("outbox", item.receipt.uuid)
            elif isinstance(item, ReceiptArrival) and outcome == DELIVERED:
                self._changed("outbox", item.mail_uuid)
        return outcomes

    def move_all(self, moves: Sequence[OutboxMove], now: int) -> list[bool | StorageError]:
        """set_outbox_state for each move, in one transaction: per move whether it was made."""
        def one(db: dbapi.Connection, move: OutboxMove) -> bool:
            moved = move_outbox(db, move.uuid, move.state, now, move.detail, move.reason,
                                move.stored_on, move.next_attempt_at, move.envelope,
                                move.attempted)
            if not moved and move.keep_envelope and move.envelope is not None:
                keep_envelope(db, move.uuid, move.envelope)
            return moved

        outcomes = self._each(moves, one)
        for move, outcome in zip(moves, outcomes, strict=True):
            if outcome is True:
                self._changed("outbox", move.uuid)
        return outcomes

    def _each(self, items: Sequence[T], work: Callable[[dbapi.Connection, T], R]
              ) -> list[R | StorageError]:
        if not items:
            return []
        outcomes: list[R | StorageError] = []
        with self._tx() as db:
            for item in items:
                db.execute("SAVEPOINT item")
                try:
                    outcomes.append(work(db, item))
                except (StorageError, dbapi.Error) as exc:
                    db.execute("ROLLBACK TO item")
                    outcomes.append(exc if isinstance(exc, StorageError)
                                    else StorageError(f"database error: {exc}"))
                db.execute("RELEASE item")
        return outcomes


def _take_mail(db: dbapi.Connection, item: MailArrival, now: int) -> str:
    if not insert_inbox(db, item.mail, item.envelope_version):
        return DUPLICATE
    receipt = item.receipt
    if receipt is not None and db.execute("SELECT 1 FROM outbox WHERE uuid = ?",
                                          (receipt.uuid,)).fetchone() is None:
        insert_outbox(db, receipt, now)
    return NEW


def _take_receipt(db: dbapi.Connection, item: ReceiptArrival, now: int) -> str:
    """Only the recipient of our mail can confirm it; the receipt's uuid is remembered either
    way, so a copy costs nothing next time."""
    row = db.execute("SELECT recipient, kind FROM outbox WHERE uuid = ?",
                     (item.mail_uuid,)).fetchone()
    delivered = row is not None and row[0] == item.sender and row[1] == "mail" and move_outbox(
        db, item.mail_uuid, OutboxState.DELIVERED, now, item.detail)
    if not seen_in(db, item.uuid):
        insert_seen(db, item.uuid, item.created_at, now)
    return DELIVERED if delivered else IGNORED
