"""Reachability, the adapter: asks peers to dial us back, serves their dial-backs, and lets
only verified contacts into the routing table.

A node that failed dial-back advertises `private` (no dialable contact) until a later check
succeeds; it keeps using the DHT as a client and is reached through relays (relay.py).
Decisions live in reachability.py; this module only dials and keeps the schedule.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable

from . import messages as m
from .contact import advertise, resolve
from .errors import FluxError
from .ids import short_id
from .link import Link
from .logsetup import about_peer
from .overlay import Overlay
from .peer_net import PeerNet
from .probe import probe
from .reachability import (
    MAX_PROBES,
    AddressBook,
    DialBackGuard,
    Status,
    Verdict,
    judge,
    pick_helpers,
)
from .routing import Peer
from .tasks import Background
from .wire_fields import MAX_TEXT
from .wire_fields import ErrorCode as E

log = logging.getLogger("fluxchat.reach")
PROBE_TIMEOUT = 5.0      # a silent NAT drops our SYN: this long is "nobody answers"
HELPERS = 3              # dial-backs asked per check (at least two networks when we can)
RECHECK_INTERVAL = 600.0
UNKNOWN_RETRY = 5.0      # nobody answered yet: ask again this soon
MIN_RECHECK_GAP = 2.0    # seconds between two checks at least
UNREACHABLE_RETRY = 60.0  # first recheck of an unreachable verdict
START_WAIT = 8.0         # seconds after start to wait for links before checking anyway
MAX_PENDING_CHECKS = 256  # inbound contacts waiting for verification


class Reach:
    def __init__(self, net: PeerNet, overlay: Overlay, contact: str, port: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.listen_port = port
        self.net, self.overlay, self.clock = net, overlay, clock
        self.configured = contact
        # The port others should dial: ours, or the one the contact names (a port forward).
        own = resolve(advertise(contact, port), "localhost")
        self.private = own is None
        self.port = own[1] if own is not None else port
        self.book = AddressBook()
        self.guard = DialBackGuard()
        self.tasks = Background()
        self.changed = asyncio.Event()     # the verdict's status changed
        self.observers: list[Callable[[], None]] = []   # told on each change (the event stream)
        self._recheck = asyncio.Event()
        self._unreachable_wait = UNREACHABLE_RETRY / 2
        self._slots = asyncio.Semaphore(MAX_PROBES)
        self._pending = 0
        self.verdict = Verdict(Status.UNREACHABLE if self.private else Status.UNKNOWN)

    @property
    def reachable(self) -> bool:
        return self.verdict.status is Status.REACHABLE

    def describe(self) -> dict[str, object]:
        v = self.verdict
        return {"status": v.status.value, "address": v.address or None,
                "checked_at": int(v.checked_at) if v.checked_at else None,
                "dial_backs": v.answers, "succeeded": v.successes,
                "contact": self.net.config.contact}

    # ----- serving others -----------------------------------------------------------

    async def on_dial_back(self, link: Link, request: m.DialBack) -> m.Message:
        """Dial the requester's own observed address (never another), pinned to its ID."""
        host = link.address[0]
        if not self.guard.admit(link.peer_id, host, time.monotonic()):
            return m.Fail(request.rid, int(E.RATE_LIMITED), "dial-back rate limited")
        self.guard.begin()
        try:
            ok = await probe(host, request.port, link.peer_id, PROBE_TIMEOUT)
        finally:
            self.guard.end()
        return m.DialBackReply(request.rid, ok, host[:MAX_TEXT])

    def admit(self, link: Link, peer: Peer) -> None:
        """An inbound link's contact enters the routing table only after we reached it."""
        self.verify(peer)

    def verify(self, peer: Peer) -> None:
        """Observe peer once a probe of its address met its TLS key (at once if it did
        recently); also used for lookup datagram responders (PROTOCOL.md §16)."""
        now = self.clock()
        if self.book.is_verified(peer.node_id, peer.host, peer.port, now):
            self.overlay.observe(peer)
        elif self._pending < MAX_PENDING_CHECKS and \
                self.book.dial_allowed(peer.host, peer.port, now):
            self._pending += 1
            self.tasks.spawn(self._verify(peer))

    async def _verify(self, peer: Peer) -> None:
        try:
            async with self._slots:
                ok = await probe(peer.host, peer.port, peer.node_id, PROBE_TIMEOUT)
        finally:
            self._pending -= 1
        if ok:
            self.book.succeeded(peer.node_id, peer.host, peer.port, self.clock())
            self.overlay.observe(peer)
        else:
            self.book.failed(peer.host, peer.port, self.clock())
            log.info("contact %s:%d of %s does not answer: kept out of the routing table",
                     peer.host, peer.port, short_id(peer.node_id), extra=about_peer(peer.node_id))

    # ----- checking ourselves -------------------------------------------------------

    async def run(self) -> None:
        """Check soon after start, then now and then, and when our observed address moves."""
        if self.private:
            log.info("reachability: contact is private, not checked")
            return
        deadline = time.monotonic() + START_WAIT
        while not self.net.links and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        while True:
            try:
                await self.check()
            except FluxError as exc:
                log.warning("reachability check failed: %s", exc)
            self._recheck.clear()
            try:
                async with asyncio.timeout(self._next_check()):
                    await self._recheck.wait()
            except TimeoutError:
                pass
            await asyncio.sleep(MIN_RECHECK_GAP)   # triggers come in bursts (new links)

    def _next_check(self) -> float:
        """Seconds to the next periodic check: soon while unknown; an unreachable verdict is
        checked again after 1 minute, doubling to 10 (a probe slowed by load may have
        misjudged us); a reachable one every 10 minutes."""
        status = self.verdict.status
        if status is Status.UNKNOWN:
            return UNKNOWN_RETRY
        if status is Status.UNREACHABLE:
            self._unreachable_wait = min(self._unreachable_wait * 2, RECHECK_INTERVAL)
            return self._unreachable_wait
        self._unreachable_wait = UNREACHABLE_RETRY / 2
        return RECHECK_INTERVAL

    def on_link(self, link: Link) -> None:
        """Check again when we may learn something new: someone new to ask while we know
        nothing, an inbound link while we think nobody can reach us, or an outbound link that
        reports another observed address."""
        if self.private:
            return
        if self.verdict.status is Status.UNKNOWN:
            self._recheck.set()   # someone new to ask
            return
        if link.direction == "in" and self.verdict.status is Status.UNREACHABLE:
            # Someone reached us after all (a slow probe under load misjudged us?): ask again.
            self._recheck.set()
            return
        seen = link.observed_host
        if link.direction == "out" and seen and self.verdict.address and \
                not self.verdict.address.startswith(f"{seen}:"):
            self._recheck.set()

    async def check(self) -> Verdict:
        candidates = [(link.peer_id, link.address[0]) for link in self.net.links.values()
                      if link.direction == "out"]
        candidates += [(link.peer_id, link.address[0]) for link in self.net.links.values()
                       if link.direction == "in"]
        candidates += [(p.node_id, p.host) for p in
                       self.overlay.table.closest(self.overlay.me.node_id, HELPERS * 2)]
        helpers = pick_helpers(candidates, HELPERS)
        if not helpers:   # no link, nobody known yet (joining is retried): nothing to learn
            return self.verdict
        answers = await asyncio.gather(*(self._ask(node_id) for node_id in helpers))
        results = [a for a in answers if a is not None]
        hosts = collections.Counter(host for _, host in results)
        address = f"{hosts.most_common(1)[0][0]}:{self.port}" if hosts else ""
        self._apply(judge(address, [ok for ok, _ in results], self.clock()))
        return self.verdict

    async def _ask(self, node_id: bytes) -> tuple[bool, str] | None:
        link = self.net.links.get(node_id)
        peer = Peer(node_id, *link.address) if link else self.overlay.table.get(node_id)
        if peer is None:
            return None
        try:
            reply = await self.net.request(peer.host, peer.port, node_id,
                                           lambda rid: m.DialBack(rid, self.port))
        except FluxError as exc:
            log.info("dial-back via %s: %s", short_id(node_id), exc, extra=about_peer(node_id))
            return None
        if isinstance(reply, m.DialBackReply):
            return reply.reachable, reply.host
        return None

    def _apply(self, verdict: Verdict) -> None:
        before = self.verdict.status
        if verdict.status is Status.UNKNOWN and before is not Status.UNKNOWN:
            return   # no answers: keep what we knew
        self.verdict = verdict
        contact = "private" if verdict.status is Status.UNREACHABLE else \
            advertise(self.configured, self.listen_port)
        self.net.config = dataclasses.replace(self.net.config, contact=contact)
        log.info("reachability: %s at %s (%d of %d dial-backs succeeded)%s",
                 verdict.status.value, verdict.address or "?", verdict.successes,
                 verdict.answers, "; advertising no contact" if contact == "private" else "")
        if verdict.status is not before:
            self.changed.set()
            for observer in self.observers:
                observer()
