"""Handing envelopes to peers: to the recipient directly (one, or a burst in DeliverMany
frames), and to the storing nodes closest to it. What to send and when is the mailer's."""

from __future__ import annotations

import functools
import logging

from . import messages as m
from .batching import frames
from .errors import FluxError
from .ids import short_id
from .logsetup import about_peer
from .overlay import Overlay
from .peer_net import PeerNet
from .placement import replica_targets
from .routing import Peer
from .tasks import settle

log = logging.getLogger("fluxchat.mail")


class Courier:
    def __init__(self, own_id: bytes, net: PeerNet, overlay: Overlay, replicas: int,
                 max_payload: int) -> None:
        self.own_id, self.net, self.overlay = own_id, net, overlay
        self.replicas, self.max_payload = replicas, max_payload

    async def deliver(self, peer: Peer, envelope: bytes) -> bool:
        """Whether the recipient took the envelope (committed it)."""
        try:
            reply = await self.net.request(peer.host, peer.port, peer.node_id,
                                           lambda rid: m.Deliver(rid, envelope))
        except FluxError as exc:
            self._failed(peer, exc)
            return False
        return isinstance(reply, m.Ok)

    async def deliver_many(self, peer: Peer, envelopes: list[bytes]) -> list[bool]:
        """Whether the recipient took each envelope (committed it), in order."""
        taken: list[bool] = []
        for group in frames(envelopes, self.max_payload):
            chunk = tuple(envelopes[i] for i in group)
            if len(chunk) == 1:
                taken.append(await self.deliver(peer, chunk[0]))
                continue
            try:
                reply = await self.net.request(peer.host, peer.port, peer.node_id,
                                               functools.partial(m.DeliverMany, envelopes=chunk))
            except FluxError as exc:
                self._failed(peer, exc)
                reply = None
            if isinstance(reply, m.Delivered) and len(reply.codes) == len(chunk):
                taken += [code == 0 for code in reply.codes]
            else:
                taken += [False] * len(chunk)
        return taken

    async def replicate(self, envelope: bytes, recipient: bytes,
                        closest: list[Peer] | None = None) -> int:
        """STORE the envelope on the mail.replicas closest nodes to the recipient
        (`closest`: a lookup result the caller already has for that recipient)."""
        skip = {self.own_id, recipient}
        if closest is None:
            closest = await self.overlay.find_node(recipient)
        targets = replica_targets(closest, skip, self.replicas)
        return sum(await self.store_on(targets, envelope))

    async def store_on(self, peers: list[Peer], envelope: bytes) -> list[bool]:
        """STORE the envelope on each peer at once; which of them took it."""
        async def store_at(peer: Peer) -> bool:
            reply = await self.net.request(peer.host, peer.port, peer.node_id,
                                           lambda rid: m.Store(rid, envelope))
            if isinstance(reply, m.Fail):
                log.info("%s refused to store: %s", short_id(peer.node_id), reply.message,
                         extra=about_peer(peer.node_id))
            return isinstance(reply, m.Ok)

        results = await settle((store_at(p) for p in peers), "storing mail")
        return [r is True for r in results]

    def _failed(self, peer: Peer, exc: FluxError) -> None:
        log.info("direct delivery to %s failed: %s", short_id(peer.node_id), exc,
                 extra=about_peer(peer.node_id))
