"""Keeping held mail alive under churn: exact re-replication.

A node holding mail for an offline recipient is one of the recipient's closest nodes, so its
own routing table knows that neighbourhood. When the table gains or loses nodes, the node
reads each held recipient's replica set from the table (no lookup, no RPC) and stores the
recipient's envelopes only on the members that newly entered it (`placement.ReplicaSets`).
Once per republish interval the sets come from real lookups instead, which corrects what the
table may have missed. Before, every change meant a lookup per held recipient and a STORE of
every envelope to every member (bench/sim.py: most of a node's upkeep traffic).
"""

from __future__ import annotations

import logging

from .mailer import Mailer
from .overlay import Overlay
from .placement import ReplicaSets, replica_targets
from .routing import Peer
from .store import Store

log = logging.getLogger("fluxchat.mail")
PAGE = 256     # held envelopes listed per page (uuid and recipient only)


class Replication:
    def __init__(self, me: bytes, store: Store, overlay: Overlay, mailer: Mailer) -> None:
        self.me, self.store, self.overlay, self.mailer = me, store, overlay, mailer
        # One entry per held recipient, each at most k + 1 IDs: bounded by the held quotas.
        self.sets = ReplicaSets()

    def _targets(self, recipient: bytes, closest: list[Peer]) -> list[Peer]:
        return replica_targets(closest, {self.me, recipient}, self.mailer.config.replicas)

    def _in_table(self, recipient: bytes) -> list[Peer]:
        return self.overlay.table.closest(recipient, self.overlay.config.k)

    def arrived(self, recipient: bytes, storer: bytes) -> None:
        """Mailroom.on_store kept an envelope: its storer filled the replica set we see."""
        self.sets.arrived(recipient, storer, self._targets(recipient, self._in_table(recipient)))

    def _recipients(self) -> set[bytes]:
        recipients: set[bytes] = set()
        after = 0
        while page := self.store.held_page(after, PAGE):
            after = page[-1][0]
            recipients.update(recipient for _, _, recipient in page)
        return recipients

    async def push(self, lookup: bool = False) -> int:
        """Store held envelopes on the members new to their recipient's replica set (sets
        from the routing table, or from lookups with `lookup`); returns the copies stored."""
        self.store.expire_held(self.mailer.now())
        recipients = self._recipients()
        self.sets.keep_only(recipients)
        plan: dict[bytes, tuple[list[Peer], list[Peer]]] = {}
        for recipient in recipients:
            closest = (await self.overlay.find_node(recipient) if lookup
                       else self._in_table(recipient))
            newcomers = self.sets.newcomers(recipient, self._targets(recipient, closest))
            if newcomers:
                plan[recipient] = (closest, newcomers)
            else:
                self.sets.given(recipient, closest, [])
        if not plan:
            return 0
        return await self._store(plan)

    async def _store(self, plan: dict[bytes, tuple[list[Peer], list[Peer]]]) -> int:
        """Page through held mail (one envelope in memory at a time); a newcomer counts as a
        holder once it took every envelope of the recipient."""
        missed: dict[bytes, set[bytes]] = {r: set() for r in plan}
        pushed, after = 0, 0
        while page := self.store.held_page(after, PAGE):
            after = page[-1][0]
            for _rowid, uuid, recipient in page:
                if recipient not in plan:
                    continue
                envelope = self.store.held_envelope(uuid)   # gone meanwhile: fetched or expired
                if envelope is None:
                    continue
                newcomers = plan[recipient][1]
                took = await self.mailer.store_on(newcomers, envelope)
                pushed += sum(took)
                missed[recipient].update(p.node_id for p, ok in zip(newcomers, took, strict=True)
                                         if not ok)
        for recipient, (closest, newcomers) in plan.items():
            self.sets.given(recipient, closest,
                            [p for p in newcomers if p.node_id not in missed[recipient]])
        return pushed
