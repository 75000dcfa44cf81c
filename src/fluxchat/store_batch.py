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
from typing import TypeVar

from .errors import StorageError
from .outbox_states import OutboxState
from .records import record
from .sqldb import dbapi
from .store_base import StoreBase
from .store_inbox import InboxMail, insert_inbox, insert_seen, seen_in
from .store_outbox import (
    OutboxMail,
    history_many,
    insert_outbox,
    insert_outbox_many,
    keep_envelope,
    move_outbox,
    set_envelopes,
    update_state,
)

T = TypeVar("T")
R = TypeVar("R")


@record
class MailArrival:
    """A verified mail for us."""
    mail: InboxMail
    envelope_version: int


@record
class ReceiptArrival:
    """A verified receipt from `sender` for our mails `mail_uuids` (one, or a burst)."""
    uuid: bytes
    created_at: int
    sender: bytes
    mail_uuids: tuple[bytes, ...]
    detail: str


@record
class OurReceipt:
    """Our sealed receipt for the mails `covers` (all from its recipient): written in the same
    transaction as those mails, and only if every one of them was taken."""
    row: OutboxMail
    covers: tuple[bytes, ...]


@record
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
    def receive_all(self, arrivals: Sequence[MailArrival | ReceiptArrival], now: int,
                    receipts: Sequence[OurReceipt] = (),
                    written: list[OutboxMail] | None = None) -> list[str | StorageError]:
        """Commit every arrival, and our receipts for the mails among them, in one
        transaction; per arrival NEW, DUPLICATE, DELIVERED (a receipt that confirmed at least
        one of our mails), IGNORED, or the StorageError that rolled it (alone) back. The
        receipts actually written (not there before) are appended to `written`."""
        delivered: list[bytes] = []

        def one(db: dbapi.Connection, item: MailArrival | ReceiptArrival) -> str:
            if isinstance(item, MailArrival):
                return DUPLICATE if not insert_inbox(db, item.mail, item.envelope_version) else NEW
            confirmed = _take_receipt(db, item, now)
            delivered.extend(confirmed)
            return DELIVERED if confirmed else IGNORED

        if not arrivals and not receipts:
            return []
        with self._tx() as db:
            # A mail is one statement (insert_inbox): atomic without a savepoint of its own.
            outcomes = self._each_in(db, arrivals, one,
                                     lambda item: isinstance(item, MailArrival))
            taken = {item.mail.uuid for item, outcome in zip(arrivals, outcomes, strict=True)
                     if isinstance(item, MailArrival) and outcome in (NEW, DUPLICATE)}
            rows = [receipt.row for receipt in receipts
                    if taken.issuperset(receipt.covers) and _insert_receipt(db, receipt, now)]
        if written is not None:
            written += rows
        for item, outcome in zip(arrivals, outcomes, strict=True):
            if isinstance(item, MailArrival) and outcome == NEW:
                self._changed("inbox", item.mail.uuid)
        for uuid in (*(row.uuid for row in rows), *delivered):
            self._changed("outbox", uuid)
        return outcomes

    def add_outbox_all(self, mails: Sequence[OutboxMail], now: int) -> list[StorageError | None]:
        """add_outbox for each mail, in one transaction (a group commit of submits): per mail
        None (written) or the StorageError that rolled it back alone."""
        outcomes: list[StorageError | None]
        try:   # a few statements for all; if one fails, again one mail at a time
            with self._tx() as db:
                insert_outbox_many(db, mails, now)
            outcomes = [None] * len(mails)
        except StorageError:
            outcomes = self._each(mails, lambda db, mail: insert_outbox(db, mail, now))
        for mail, outcome in zip(mails, outcomes, strict=True):
            if outcome is None:
                self._changed("outbox", mail.uuid)
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

        if not moves:
            return []
        outcomes: list[bool | StorageError]
        try:   # an UPDATE per move, the rest in a few statements; if one fails, one at a time
            with self._tx() as db:
                outcomes = list(_move_many(db, moves, now))
        except StorageError:
            outcomes = self._each(moves, one)
        for move, outcome in zip(moves, outcomes, strict=True):
            if outcome is True:
                self._changed("outbox", move.uuid)
        return outcomes

    def _each(self, items: Sequence[T], work: Callable[[dbapi.Connection, T], R]
              ) -> list[R | StorageError]:
        if not items:
            return []
        with self._tx() as db:
            return self._each_in(db, items, work)

    @staticmethod
    def _each_in(db: dbapi.Connection, items: Sequence[T],
                 work: Callable[[dbapi.Connection, T], R],
                 one_statement: Callable[[T], bool] = lambda item: False
                 ) -> list[R | StorageError]:
        """`work` on each item in a savepoint of its own, so a failure undoes that item alone;
        an item whose work is `one_statement` needs none (SQLite undoes a failed statement
        by itself), which spares two statements per item."""
        outcomes: list[R | StorageError] = []
        for item in items:
            alone = one_statement(item)
            if not alone:
                db.execute("SAVEPOINT item")
            try:
                outcomes.append(work(db, item))
            except (StorageError, dbapi.Error) as exc:
                if alone and not db.in_transaction:
                    raise   # an error that ended the whole transaction (disk full, I/O)
                if not alone:
                    db.execute("ROLLBACK TO item")
                outcomes.append(exc if isinstance(exc, StorageError)
                                else StorageError(f"database error: {exc}"))
            if not alone:
                db.execute("RELEASE item")
        return outcomes


def _insert_receipt(db: dbapi.Connection, receipt: OurReceipt, now: int) -> bool:
    """Our receipt's outbox row, unless it is there already (a copy of the same burst)."""
    if db.execute("SELECT 1 FROM outbox WHERE uuid = ?", (receipt.row.uuid,)).fetchone():
        return False
    insert_outbox(db, receipt.row, now)
    return True


def _move_many(db: dbapi.Connection, moves: Sequence[OutboxMove], now: int) -> list[bool]:
    """move_outbox for each move: an UPDATE each, then their envelopes and history rows."""
    moved = [update_state(db, move.uuid, move.state, now, move.reason, move.stored_on,
                          move.next_attempt_at, move.attempted) for move in moves]
    done = [move for move, ok in zip(moves, moved, strict=True) if ok]
    set_envelopes(db, [(move.uuid, move.envelope) for move in done if move.envelope is not None])
    for move, ok in zip(moves, moved, strict=True):   # refused: a receipt came first
        if not ok and move.keep_envelope and move.envelope is not None:
            keep_envelope(db, move.uuid, move.envelope)
    history_many(db, [(move.uuid, now, move.state, move.detail) for move in done])
    return moved


def _take_receipt(db: dbapi.Connection, item: ReceiptArrival, now: int) -> list[bytes]:
    """The mails the receipt confirmed: only the recipient of our mail can confirm it. The
    receipt's uuid is remembered either way, so a copy costs nothing next time."""
    confirmed = [uuid for uuid in item.mail_uuids
                 if update_state(db, uuid, OutboxState.DELIVERED, now, recipient=item.sender)]
    history_many(db, [(uuid, now, OutboxState.DELIVERED, item.detail) for uuid in confirmed])
    if not seen_in(db, item.uuid):
        insert_seen(db, item.uuid, item.created_at, now)
    return confirmed
