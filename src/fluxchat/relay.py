"""Relays, the adapter: serves reservations, relay records and relayed mail, and keeps relays
for this node while it is unreachable.

An unreachable node reserves a slot at a few reachable nodes closest to its ID (so they are
its storers too), renews the reservations (which also keeps those links from going idle),
and publishes a signed relay record naming them. A sender that cannot dial the recipient
finds the record and sends `Relay(envelope)` to a relay, which forwards it as `Deliver` over
the recipient's open link, or holds it like a storer and pushes it when the link is back.
Decisions live in relaying.py; the sender's side (finding a record, `Relay`) is relay_sender.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import messages as m
from .envelope2 import parse_header  # either envelope version
from .errors import EnvelopeError, FluxError
from .identity import Identity
from .ids import short_id
from .link import Link
from .logsetup import about_peer
from .mailer import Mailer
from .overlay import Overlay, to_info
from .peer_net import PeerNet
from .reach import Reach
from .reachability import Status
from .relaying import (
    RESERVATION_LIFETIME,
    WANTED_RELAYS,
    RelayDirectory,
    RelayError,
    Reservations,
    choose_relays,
    make_record,
    parse_record,
    retry_pause,
)
from .routing import Peer
from .store import QuotaExceeded, Store
from .tasks import Background
from .wire_fields import ErrorCode as E

log = logging.getLogger("fluxchat.relay")
RENEW_INTERVAL = 60.0     # seconds between renewals (keeps the relay links in use)
REPUBLISH_INTERVAL = 600.0
REFUSED_FOR = 5.0         # seconds a node that refused to relay is not asked again (e.g. it
                          # did not know yet that it is reachable); failures: retry_pause()
MAX_FAILURES_KEPT = 64    # relays whose failures in a row we count
FORWARD_TIMEOUT = 5.0     # a relay waits this long for the recipient, then holds the mail
                          # (well within the sender's request timeout)
SHORT_RETRY_MAX = 15.0    # seconds between looks for more relays while short of them


class Relays:
    def __init__(self, identity: Identity, net: PeerNet, overlay: Overlay, store: Store,
                 mailer: Mailer, reach: Reach, idle_timeout: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.me, self.net, self.overlay, self.store = identity, net, overlay, store
        self.mailer, self.reach, self.clock = mailer, reach, clock
        self.renew_every = min(RENEW_INTERVAL, idle_timeout / 3)
        self.reservations = Reservations()
        self.directory = RelayDirectory()
        self.tasks = Background()
        self.relays: dict[bytes, Peer] = {}        # our relays while we are unreachable
        self.published_at = 0.0
        self._failed: dict[bytes, float] = {}     # node ID -> monotonic time it may be asked
        self._failures: dict[bytes, int] = {}     # node ID -> failures in a row
        self._wake = asyncio.Event()
        self._retry = 0.5

    def now(self) -> int:
        return int(self.clock())

    def keeps_link(self, peer_id: bytes) -> bool:
        """Links a reservation uses, at either end: never closed to make room (peer_net)."""
        return peer_id in self.relays or self.reservations.holds(peer_id, time.monotonic())

    def describe(self) -> list[str]:
        return [f"{short_id(p.node_id)} {p.host}:{p.port}" for p in self.relays.values()]

    # ----- serving as a relay and as a record directory -----------------------------

    def on_reserve(self, link: Link, request: m.Reserve) -> m.Message:
        if not self.reach.reachable:
            return m.Fail(request.rid, int(E.REFUSED), "not reachable: cannot relay")
        refused = self.reservations.reserve(link.peer_id, link.address[0], time.monotonic())
        if refused is not None:
            return m.Fail(request.rid, int(E.REFUSED), refused)
        return m.Reserved(request.rid, RESERVATION_LIFETIME)

    def on_store_relay(self, link: Link, request: m.StoreRelay) -> m.Message:
        try:
            record = parse_record(request.record, self.now())
        except RelayError as exc:
            return m.Fail(request.rid, int(E.INVALID), str(exc))
        if not self.directory.put(record, self.now()):
            return m.Fail(request.rid, int(E.REFUSED), "relay directory full or newer record held")
        return m.Ok(request.rid)

    def on_find_relay(self, link: Link, request: m.FindRelay) -> m.Message:
        record = self.directory.get(request.node_id, self.now())
        if record is not None:
            return m.RelayReply(request.rid, record.encode(), ())
        return m.RelayReply(request.rid, b"",
                            self.overlay.closest_infos(request.node_id, link.peer_id))

    async def on_relay(self, link: Link, request: m.Relay) -> m.Message:
        try:
            header = parse_header(request.envelope, self.mailer.max_payload)
        except EnvelopeError:
            return m.Fail(request.rid, int(E.INVALID), "envelope rejected")
        refused = self.reservations.spend(header.recipient, len(request.envelope),
                                          time.monotonic())
        if refused is not None:
            return m.Fail(request.rid, int(E.REFUSED), refused)
        target = self.net.links.get(header.recipient)
        if target is not None:
            try:
                answer = await target.request(lambda rid: m.Deliver(rid, request.envelope),
                                              FORWARD_TIMEOUT)
            except FluxError as exc:
                log.info("relaying to %s failed: %s; holding the mail",
                         short_id(header.recipient), exc, extra=about_peer(header.recipient))
            else:
                if isinstance(answer, m.Ok):
                    return m.Relayed(request.rid, False)
                if isinstance(answer, m.Fail):
                    return m.Fail(request.rid, answer.code, answer.message)
        return self._hold(link, request, header.recipient, header.uuid, header.expires_at)

    def _hold(self, link: Link, request: m.Relay, recipient: bytes, uuid: bytes,
              expires_at: int) -> m.Message:
        now = self.now()
        if not now < expires_at <= now + self.mailer.retention + 600:
            return m.Fail(request.rid, int(E.REFUSED), "expiry out of range")
        try:
            self.store.hold(uuid, recipient, link.peer_id, expires_at, request.envelope, now,
                            self.mailer.quotas)
        except QuotaExceeded as exc:
            return m.Fail(request.rid, int(E.REFUSED), str(exc))
        waiting = self.net.links.get(recipient)
        if waiting is not None:   # the link is up but the forward failed: it fetches now
            waiting.notify(m.Notify())
        return m.Relayed(request.rid, True)

    def on_link(self, link: Link) -> None:
        """A node we hold mail for is back: tell it at once (it answers with a Fetch)."""
        if self.store.held_for(link.peer_id, 1):
            link.notify(m.Notify())
        if self.reach.verdict.status is Status.UNREACHABLE and \
                len(self.relays) < WANTED_RELAYS and link.peer_id not in self._failed:
            self._wake.set()   # a new candidate relay

    def on_unlink(self, link: Link) -> None:
        if link.peer_id in self.relays:
            log.info("relay %s lost", short_id(link.peer_id))
            del self.relays[link.peer_id]
            self._failed_at(link.peer_id)
            self._wake.set()

    # ----- keeping relays while we are unreachable ------------------------------------

    async def run(self) -> None:
        while True:
            self._wake.clear()
            self.reach.changed.clear()
            if self.reach.verdict.status is Status.UNREACHABLE:
                try:
                    await self.maintain()
                except FluxError as exc:
                    log.warning("keeping relays: %s", exc)
                except Exception:   # keep the node alive; the traceback goes to the log
                    log.exception("keeping relays failed")
            elif self.relays:
                log.info("reachable again: releasing %d relays", len(self.relays))
                self.relays.clear()
            # Short of relays: look again soon (1 s, doubling to 15 s), and at once on a new link.
            short = self.reach.verdict.status is Status.UNREACHABLE and \
                len(self.relays) < WANTED_RELAYS
            self._retry = min(self._retry * 2, SHORT_RETRY_MAX, self.renew_every) if short else 0.5
            waits = [asyncio.ensure_future(e.wait()) for e in (self._wake, self.reach.changed)]
            try:
                await asyncio.wait(waits, timeout=self._retry if short else self.renew_every,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()

    async def maintain(self) -> None:
        """Renew the reservations we hold (first: a slow lookup must not let their links
        go idle), replace failed relays, publish when they change."""
        before = set(self.relays)
        held = list(self.relays.values())
        renewed = await asyncio.gather(*(self._reserve(p) for p in held))
        # A relay whose link dropped meanwhile (on_unlink) stays dropped.
        self.relays = {p.node_id: p for p, ok in zip(held, renewed, strict=True)
                       if ok and p.node_id in self.relays}
        closest: list[Peer] | None = None
        if len(self.relays) < WANTED_RELAYS:
            closest = await self._fill()
        changed = set(self.relays) != before
        if changed:
            log.info("relays: %s", ", ".join(self.describe()) or "none")
        if self.relays and (changed or self.clock() - self.published_at >= REPUBLISH_INTERVAL):
            await self.publish(closest if closest is not None else
                               await self.overlay.find_node(self.me.node_id))

    async def _fill(self) -> list[Peer]:
        """Reserve at the closest nodes to our ID that have not failed us lately; returns
        the lookup's result (the nodes our relay record goes to)."""
        moment = time.monotonic()
        self._failed = {n: t for n, t in self._failed.items() if moment < t}
        for link in list(self.net.links.values()):   # our links are all the table we have
            if link.direction == "out" and link.peer_id not in self.overlay.table:
                self.overlay.on_link(link)
        closest = await self.overlay.find_node(self.me.node_id)
        by_id = {p.node_id: p for p in closest}
        wanted = [n for n in choose_relays(list(self.relays), list(by_id), set(self._failed))
                  if n not in self.relays]
        results = await asyncio.gather(*(self._reserve(by_id[n]) for n in wanted))
        log.debug("reservations at %d of %d new relays asked", sum(results), len(wanted))
        self.relays.update((n, by_id[n]) for n, ok in zip(wanted, results, strict=True) if ok)
        return closest

    async def _reserve(self, peer: Peer) -> bool:
        try:
            reply = await self.net.request(peer.host, peer.port, peer.node_id, m.Reserve)
        except FluxError as exc:
            log.info("reservation at %s failed: %s", short_id(peer.node_id), exc, extra=about_peer(peer.node_id))
            reply = None
        if isinstance(reply, m.Reserved):
            self._failures.pop(peer.node_id, None)
            return True
        if isinstance(reply, m.Fail):
            log.info("%s refused to relay: %s", short_id(peer.node_id), reply.message,
                     extra=about_peer(peer.node_id))
            self._failed[peer.node_id] = time.monotonic() + REFUSED_FOR
        else:
            self._failed_at(peer.node_id)
        return False

    def _failed_at(self, node_id: bytes) -> None:
        """A relay failed us (no answer, or its link dropped): ask it again after a pause
        that grows with each failure in a row."""
        failures = self._failures[node_id] = self._failures.get(node_id, 0) + 1
        if len(self._failures) > MAX_FAILURES_KEPT:   # bounded: forget the oldest
            self._failures.pop(next(iter(self._failures)))
        self._failed[node_id] = time.monotonic() + retry_pause(failures)

    async def publish(self, closest: list[Peer]) -> int:
        """Store our signed relay record on the nodes closest to our ID."""
        record = make_record(self.me, [to_info(p) for p in self.relays.values()], self.now())
        data = record.encode()

        async def push(peer: Peer) -> bool:
            reply = await self.net.request(peer.host, peer.port, peer.node_id,
                                           lambda rid: m.StoreRelay(rid, data))
            return isinstance(reply, m.Ok)

        results = await asyncio.gather(*(push(p) for p in closest), return_exceptions=True)
        self.published_at = self.clock()
        stored = sum(1 for r in results if r is True)
        log.info("relay record stored on %d nodes", stored)
        return stored
