"""Sending through a recipient's relay, the adapter: finds the recipient's signed relay record
(held already, in our own directory, or by a lookup) and hands the envelope to a relay named in
it with `Relay(envelope)`.

The relay side (reservations, the record directory, forwarding and holding) is relay.py;
records and their checks are relaying.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import messages as m
from .errors import FluxError
from .ids import short_id
from .logsetup import about_peer
from .lookup import Lookup
from .overlay import Overlay, to_peer
from .peer_net import PeerNet
from .relaying import RelayDirectory, RelayError, RelayRecord, parse_record
from .routing import Peer

log = logging.getLogger("fluxchat.relay")


class RelaySender:
    def __init__(self, node_id: bytes, net: PeerNet, overlay: Overlay,
                 directory: RelayDirectory, clock: Callable[[], float] = time.time) -> None:
        self.me, self.net, self.overlay, self.clock = node_id, net, overlay, clock
        self.directory = directory                  # records we hold as a directory node
        self._known: dict[bytes, RelayRecord] = {}  # records of recipients we sent to
        # punch.py: told when mail went through a relay, to try for a direct link.
        self.on_relayed: Callable[[bytes, bytes], None] | None = None

    def now(self) -> int:
        return int(self.clock())

    def held_record(self, node_id: bytes) -> RelayRecord | None:
        """A record of `node_id` we hold already and that has not expired: one we used
        before, or one we keep as a directory node (both were checked when they came in)."""
        known = self._known.get(node_id)
        if known is not None and known.expires_at > self.now():
            return known
        return self.directory.get(node_id, self.now())

    def knows(self, node_id: bytes) -> bool:
        """Whether mail for `node_id` can go to a relay without a lookup first (mailer.py)."""
        return self.held_record(node_id) is not None

    async def find_record(self, node_id: bytes) -> RelayRecord | None:
        held = self.held_record(node_id)
        if held is not None:
            return held
        lookup = Lookup(node_id, self.me,
                        self.overlay.table.closest(node_id, self.overlay.config.k),
                        k=self.overlay.config.k, alpha=self.overlay.config.alpha,
                        want_value=True)
        running: dict[asyncio.Task[m.Message], Peer] = {}
        try:
            while True:
                for peer in lookup.next_queries():
                    query = self.overlay._query(peer, lambda rid: m.FindRelay(rid, node_id))
                    running[asyncio.ensure_future(query)] = peer
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._settle(lookup, running.pop(task), task, node_id)
        finally:
            for task in running:
                task.cancel()
        if not lookup.found or not isinstance(lookup.value, RelayRecord):
            return None
        self._known[node_id] = lookup.value
        return lookup.value

    def _settle(self, lookup: Lookup, peer: Peer, task: asyncio.Task[m.Message],
                node_id: bytes) -> None:
        reply = None if task.exception() else task.result()
        if not isinstance(reply, m.RelayReply):
            lookup.on_failure(peer.node_id)
            return
        if reply.record:
            try:
                lookup.on_value(peer.node_id, parse_record(reply.record, self.now(), node_id))
            except RelayError as exc:
                log.info("%s served a bad relay record: %s", short_id(peer.node_id), exc,
                         extra=about_peer(peer.node_id))
                lookup.on_failure(peer.node_id)
            return
        lookup.on_reply(peer.node_id, [to_peer(n) for n in reply.nodes
                                       if n.node_id != self.me])

    async def send(self, envelope: bytes, recipient: bytes) -> tuple[str, bytes] | None:
        """Hand the envelope to one of the recipient's relays: ("forwarded" | "held", relay),
        or None when it has no record or no relay took it."""
        record = await self.find_record(recipient)
        if record is None:
            return None
        for info in record.relays:
            if info.node_id == self.me:
                continue
            try:
                reply = await self.net.request(info.host, info.port, info.node_id,
                                               lambda rid: m.Relay(rid, envelope))
            except FluxError as exc:
                log.info("relay %s for %s: %s", short_id(info.node_id), short_id(recipient), exc,
                         extra=about_peer(info.node_id))
                continue
            if isinstance(reply, m.Relayed):
                if not reply.held and self.on_relayed is not None:
                    self.on_relayed(recipient, info.node_id)
                return ("held" if reply.held else "forwarded"), info.node_id
            if isinstance(reply, m.Fail):
                log.info("relay %s refused mail for %s: %s", short_id(info.node_id),
                         short_id(recipient), reply.message, extra=about_peer(info.node_id))
        self._known.pop(recipient, None)   # stale: look it up again next time
        return None
