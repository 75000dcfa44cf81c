"""The outbox: mail and receipts on their way out, their states (outbox_states.py) and history.

The writes are functions of an open transaction (`insert_outbox`, `move_outbox`, ...), so the
methods below and a group commit (store_batch) run the very same statements.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from .errors import StorageError
from .outbox_states import PENDING, RESENDABLE, OutboxState, allowed, parse_state, sources
from .records import record
from .sqldb import dbapi
from .store_base import StoreBase

PENDING_STATES = tuple(sorted(PENDING))  # outbox states that still need work
IN_PENDING = ", ".join("?" * len(PENDING_STATES))


@record
class OutboxMail:
    uuid: bytes
    recipient: bytes
    subject: str
    body: str
    created_at: int
    expires_at: int
    state: str = OutboxState.QUEUED
    reason: str | None = None
    envelope: bytes | None = None
    attempts: int = 0
    next_attempt_at: int = 0  # due once this is <= now; 0 means "at once"
    stored_on: int = 0  # how many storing nodes accepted the envelope
    updated_at: int = 0
    kind: str = "mail"  # "receipt": our signed receipt on its way back; hidden from listings
    ref: bytes | None = None  # the uuid of the mail this one replies to


# An OutboxMail's columns, from `outbox o` and its envelope (`outbox_envelopes e`, if sealed):
# select them FROM OUTBOX_FROM.
OUTBOX_COLS = (
    "o.uuid, o.recipient, o.subject, o.body, o.created_at, o.expires_at, o.state, o.reason, "
    "e.envelope, o.attempts, o.next_attempt_at, o.stored_on, o.updated_at, o.kind, o.ref"
)
OUTBOX_FROM = "outbox o LEFT JOIN outbox_envelopes e ON e.uuid = o.uuid"
_INSERT = ("INSERT INTO outbox (uuid, recipient, subject, body, created_at, expires_at, state, "
           "reason, attempts, next_attempt_at, stored_on, updated_at, kind, ref) "
           f"VALUES ({', '.join('?' * 14)})")
_HISTORY = "INSERT INTO outbox_history (uuid, at, state, detail) VALUES (?, ?, ?, ?)"
_MOVE = ("UPDATE outbox SET state = ?, updated_at = ?, reason = coalesce(?, reason), "
         "stored_on = coalesce(?, stored_on), next_attempt_at = coalesce(?, next_attempt_at), "
         "attempts = attempts + ? WHERE uuid = ?")
_SET_ENVELOPE = "INSERT OR REPLACE INTO outbox_envelopes (uuid, envelope) VALUES (?, ?)"


def outbox_row(row: Sequence[Any]) -> OutboxMail:
    return OutboxMail(*row)


def check_state(state: str) -> None:
    try:
        parse_state(state)
    except ValueError as exc:
        raise StorageError(str(exc)) from None


def history(db: dbapi.Connection, uuid: bytes, now: int, state: str, detail: str) -> None:
    db.execute(_HISTORY, (uuid, now, state, detail))


def history_many(db: dbapi.Connection, rows: Sequence[tuple[bytes, int, str, str]]) -> None:
    """History rows (uuid, at, state, detail), in one statement."""
    db.executemany(_HISTORY, rows)


def set_envelopes(db: dbapi.Connection, rows: Sequence[tuple[bytes, bytes]]) -> None:
    """Envelopes (uuid, envelope) of sealed mail, in one statement."""
    db.executemany(_SET_ENVELOPE, rows)


def insert_outbox(db: dbapi.Connection, mail: OutboxMail, now: int) -> None:
    """Within the caller's transaction: a new outbox row and its first history entry."""
    insert_outbox_many(db, [mail], now)


def insert_outbox_many(db: dbapi.Connection, mails: Sequence[OutboxMail], now: int) -> None:
    """Within the caller's transaction: insert_outbox for each mail, a statement for all the
    rows, one for their envelopes and one for their history (a group commit of submits)."""
    for mail in mails:
        check_state(mail.state)
    db.executemany(_INSERT, [(mail.uuid, mail.recipient, mail.subject, mail.body,
                              mail.created_at, mail.expires_at, mail.state, mail.reason,
                              mail.attempts, mail.next_attempt_at, mail.stored_on, now,
                              mail.kind, mail.ref) for mail in mails])
    db.executemany(_SET_ENVELOPE, [(mail.uuid, mail.envelope) for mail in mails
                                   if mail.envelope is not None])
    db.executemany(_HISTORY, [(mail.uuid, now, mail.state, "") for mail in mails])


def move_outbox(db: dbapi.Connection, uuid: bytes, state: str, now: int, detail: str = "",
                reason: str | None = None, stored_on: int | None = None,
                next_attempt_at: int | None = None, envelope: bytes | None = None,
                attempted: bool = False, current: str | None = None) -> bool:
    """Within the caller's transaction: see OutboxStore.set_outbox_state. `current`: the
    mail's state if the caller just read it in this transaction."""
    if not update_state(db, uuid, state, now, reason, stored_on, next_attempt_at, attempted,
                        current):
        return False
    if envelope is not None:
        db.execute(_SET_ENVELOPE, (uuid, envelope))
    history(db, uuid, now, state, detail)
    return True


def update_state(db: dbapi.Connection, uuid: bytes, state: str, now: int,
                 reason: str | None = None, stored_on: int | None = None,
                 next_attempt_at: int | None = None, attempted: bool = False,
                 current: str | None = None, recipient: bytes | None = None) -> bool:
    """Within the caller's transaction: the outbox row's part of move_outbox (no history,
    no envelope); whether the row moved. `recipient`: only a mail (not a receipt) to it."""
    check_state(state)
    # Unless the caller knows the state, the UPDATE checks it: one statement, not a read first.
    froms = () if current is not None else sources(OutboxState(state))
    if not (allowed(current, state) if current is not None else froms):
        return False
    where = f" AND state IN ({', '.join('?' * len(froms))})" if froms else ""
    if recipient is not None:
        where += " AND recipient = ? AND kind = 'mail'"
    params = (state, now, reason, stored_on, next_attempt_at, int(attempted), uuid, *froms)
    return bool(db.execute(_MOVE + where, params + ((recipient,) if recipient else ())).rowcount)


def keep_envelope(db: dbapi.Connection, uuid: bytes, envelope: bytes) -> None:
    db.execute("INSERT OR IGNORE INTO outbox_envelopes (uuid, envelope) VALUES (?, ?)",
               (uuid, envelope))


class OutboxStore(StoreBase):
    def add_outbox(self, mail: OutboxMail, now: int) -> None:
        with self._tx() as db:
            insert_outbox(db, mail, now)
        self._changed("outbox", mail.uuid)

    def set_outbox_state(
        self, uuid: bytes, state: str, now: int, detail: str = "", reason: str | None = None,
        stored_on: int | None = None, next_attempt_at: int | None = None,
        envelope: bytes | None = None, attempted: bool = False,
    ) -> bool:
        """Move a mail to `state` and append a history row, if outbox_states allows the move from the
        state the mail is in; False (nothing written) when it does not, e.g. a receipt marked the
        mail delivered or the user deleted it while a delivery attempt was under way. None keeps a
        field's current value; `attempted` adds one to `attempts`."""
        check_state(state)
        with self._tx() as db:
            moved = move_outbox(db, uuid, state, now, detail, reason, stored_on, next_attempt_at,
                                envelope, attempted)
        if moved:
            self._changed("outbox", uuid)
        return moved

    def hurry_outbox(self, recipient: bytes | None = None,
                     states: frozenset[OutboxState] = PENDING) -> int:
        """Make pending mail (to `recipient`, or all) due at once; returns how many rows changed."""
        wanted = tuple(sorted(states & PENDING))
        if not wanted:
            return 0
        where = f"state IN ({', '.join('?' * len(wanted))}) AND next_attempt_at > 0"
        params: tuple[Any, ...] = wanted
        if recipient is not None:
            where, params = where + " AND recipient = ?", (*wanted, recipient)
        with self._tx() as db:
            return db.execute(f"UPDATE outbox SET next_attempt_at = 0 WHERE {where}", params).rowcount

    def resend_outbox(self, uuid: bytes, now: int, expires_at: int) -> bool:
        """Queue a failed or expired mail again, dated `now` (an old date would be refused as a replay)
        and sealed afresh; False if there is no such mail or it is not in a resendable state."""
        with self._tx() as db:
            row = db.execute("SELECT state FROM outbox WHERE uuid = ? AND kind = 'mail'", (uuid,)).fetchone()
            if row is None or row[0] not in RESENDABLE:
                return False
            db.execute(
                "UPDATE outbox SET state = ?, reason = NULL, attempts = 0, "
                "next_attempt_at = 0, stored_on = 0, created_at = ?, expires_at = ?, updated_at = ? "
                "WHERE uuid = ?", (OutboxState.QUEUED, now, expires_at, now, uuid))
            db.execute("DELETE FROM outbox_envelopes WHERE uuid = ?", (uuid,))   # sealed afresh
            history(db, uuid, now, OutboxState.QUEUED, "resent by the user")
        self._changed("outbox", uuid)
        return True

    def keep_outbox_envelope(self, uuid: bytes, envelope: bytes) -> None:
        """Record the sealed envelope of a mail that has none yet, leaving its state alone."""
        with self._tx() as db:
            keep_envelope(db, uuid, envelope)

    def due_outbox(self, now: int, limit: int, exclude: Collection[bytes] = (),
                   skip_recipients: Collection[bytes] = ()) -> list[OutboxMail]:
        """Mail still needing work whose retry time has come (queued, or stored/handed over and
        awaiting a receipt), not yet past its expiry, not in `exclude` (mail an attempt is
        working on) and not to `skip_recipients` (no attempt to them may start now); most
        overdue first."""
        skip = f"AND o.uuid NOT IN ({', '.join('?' * len(exclude))}) " if exclude else ""
        if skip_recipients:
            skip += f"AND o.recipient NOT IN ({', '.join('?' * len(skip_recipients))}) "
        rows = self._rows(
            f"SELECT {OUTBOX_COLS} FROM {OUTBOX_FROM} WHERE state IN ({IN_PENDING}) "
            f"AND next_attempt_at <= ? AND expires_at > ? {skip}"
            "ORDER BY next_attempt_at, created_at, o.rowid LIMIT ?",
            (*PENDING_STATES, now, now, *exclude, *skip_recipients, limit),
        )
        return [outbox_row(r) for r in rows]

    def get_outbox(self, uuid: bytes) -> OutboxMail | None:
        rows = self._rows(f"SELECT {OUTBOX_COLS} FROM {OUTBOX_FROM} WHERE o.uuid = ?", (uuid,))
        return outbox_row(rows[0]) if rows else None

    def outbox_history(self, uuid: bytes) -> list[tuple[int, str, str]]:
        rows = self._rows("SELECT at, state, detail FROM outbox_history WHERE uuid = ? ORDER BY id", (uuid,))
        return [(int(at), state, detail) for at, state, detail in rows]

    def list_outbox(self, limit: int, offset: int) -> tuple[int, list[OutboxMail]]:
        total = self._value("SELECT count(*) FROM outbox WHERE kind = 'mail'")
        rows = self._rows(
            f"SELECT {OUTBOX_COLS} FROM {OUTBOX_FROM} WHERE kind = 'mail' "
            "ORDER BY o.created_at DESC, o.rowid DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return int(total), [outbox_row(r) for r in rows]

    def delete_outbox(self, uuid: bytes) -> bool:
        with self._tx() as db:  # history rows go with it (ON DELETE CASCADE)
            return db.execute("DELETE FROM outbox WHERE uuid = ?", (uuid,)).rowcount > 0

    def count_outbox(self) -> dict[str, int]:
        counts = dict.fromkeys([str(state) for state in OutboxState], 0)
        counts.update(self._rows("SELECT state, count(*) FROM outbox WHERE kind = 'mail' GROUP BY state"))
        return counts

    def expire_outbox(self, now: int) -> list[bytes]:
        with self._tx() as db:
            uuids = [r[0] for r in db.execute(
                f"SELECT uuid FROM outbox WHERE state IN ({IN_PENDING}) AND expires_at <= ?",
                (*PENDING_STATES, now))]
            for uuid in uuids:
                db.execute("UPDATE outbox SET state = ?, updated_at = ? WHERE uuid = ?",
                           (OutboxState.EXPIRED, now, uuid))
                history(db, uuid, now, OutboxState.EXPIRED, "retention time ended")
        for uuid in uuids:
            self._changed("outbox", uuid)
        return uuids
