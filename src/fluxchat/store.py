"""The node's SQLite database: inbox, outbox, envelopes held for others, seen uuids, contacts, keys, routing.

An adapter: it does SQLite I/O but reads no clock; callers pass `now` (unix seconds). Its parts,
one module each: store_base (connection, transactions, observers), store_inbox (inbox and seen
uuids), store_outbox (outbox and history), store_peers (held envelopes, keys, mail key records,
contacts, routing), store_batch (group commits of a burst of mail). Every state change runs in
one transaction, so a crash never leaves half a change behind; a method that returned has its
commit in the WAL file and survives the process being killed the next instant.
"""

from __future__ import annotations

from .held import QuotaExceeded, Quotas
from .store_base import StoreObserver
from .store_batch import BatchStore
from .store_inbox import INBOX_COLS, InboxMail, InboxStore, inbox_row
from .store_outbox import OUTBOX_COLS, OUTBOX_FROM, OutboxMail, OutboxStore, outbox_row
from .store_peers import PeerStore, RoutingEntry

__all__ = ["InboxMail", "OutboxMail", "QuotaExceeded", "Quotas", "RoutingEntry", "Store",
           "StoreObserver"]

# One row per peer we exchanged mail with: (peer, last activity, unread, total).
_CONVERSATIONS_SQL = (
    "SELECT peer, max(at), sum(unread), count(*) FROM ("
    " SELECT sender AS peer, received_at AS at, is_new AS unread FROM inbox"
    " UNION ALL SELECT recipient, created_at, 0 FROM outbox WHERE kind = 'mail')"
    " GROUP BY peer ORDER BY max(at) DESC LIMIT ?"
)


class Store(InboxStore, OutboxStore, PeerStore, BatchStore):
    """One SQLite database per node. Not thread-safe: use it from the event loop thread only."""

    # --- conversations: the inbox and the outbox together ---------------------------------------

    def conversations(self, limit: int) -> list[tuple[bytes, int, int, int]]:
        """(peer, last activity, unread, total) per peer we exchanged mail with, latest first."""
        rows = self._rows(_CONVERSATIONS_SQL, (limit,))
        return [(peer, int(at), int(unread), int(total)) for peer, at, unread, total in rows]

    def conversation(self, peer: bytes, limit: int) -> list[InboxMail | OutboxMail]:
        """The last `limit` mails exchanged with `peer`, oldest first (ours by creation time,
        theirs by arrival: our own clock orders both)."""
        got = self._rows(f"SELECT {INBOX_COLS} FROM inbox WHERE sender = ? "
                         "ORDER BY received_at DESC, rowid DESC LIMIT ?", (peer, limit))
        sent = self._rows(f"SELECT {OUTBOX_COLS} FROM {OUTBOX_FROM} WHERE recipient = ? "
                          "AND kind = 'mail' ORDER BY o.created_at DESC, o.rowid DESC LIMIT ?",
                          (peer, limit))
        mails: list[InboxMail | OutboxMail] = [inbox_row(r) for r in got] + [outbox_row(r) for r in sent]
        # Times are whole seconds: within one second, a reply goes after the mail it answers.
        depth = _reply_depths({m.uuid: m.ref for m in mails})
        mails.sort(key=lambda m: (m.received_at if isinstance(m, InboxMail) else m.created_at,
                                  depth[m.uuid]))
        return mails[-limit:]

    def uuids_between(self, low: bytes, high: bytes, limit: int) -> list[bytes]:
        """Mail uuids (inbox or sent) in [low, high]: how a uuid prefix finds its mail."""
        rows = self._rows("SELECT uuid FROM inbox WHERE uuid BETWEEN ?1 AND ?2 UNION "
                          "SELECT uuid FROM outbox WHERE uuid BETWEEN ?1 AND ?2 AND kind = 'mail' "
                          "LIMIT ?3", (low, high, limit))
        return [r[0] for r in rows]


def _reply_depths(refs: dict[bytes, bytes | None]) -> dict[bytes, int]:
    """How many replies deep each mail is among these mails (a forged cycle just ends)."""
    depth: dict[bytes, int] = {}
    for uuid in refs:
        path: list[bytes] = []
        cur: bytes | None = uuid
        while cur is not None and cur in refs and cur not in depth and cur not in path:
            path.append(cur)
            cur = refs[cur]
        known = depth.get(cur, -1) if cur is not None else -1
        for step in reversed(path):
            known += 1
            depth[step] = known
    return depth
