"""Mail arriving at this node: for us (inbox, receipts) or held for others (store-and-forward).

Only a link authenticated as the recipient may fetch or delete what we hold for it; every
acknowledgement is sent after the commit that makes it true.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from . import messages as m
from .config import MailConfig
from .envelope import MailContent, OuterHeader
from .envelope2 import parse_header
from .errors import EnvelopeError, FluxError
from .identity import Identity
from .ids import short_id
from .intake import Intake, NotForUs, Outcome, WorkRefused
from .link import Link
from .logsetup import about_peer
from .mail_limits import Drain, InHand, NoticeGate
from .mailer import CLOCK_SKEW, FETCH_BATCH, Mailer
from .mailkeys import MailKeyRecord
from .overlay import Overlay
from .peer_net import PeerNet
from .routing import Peer
from .store import QuotaExceeded, Store
from .tasks import NEW_LINKS_AT_ONCE, settle
from .uuids import uuid_text

log = logging.getLogger("fluxchat.mail")
E = m.ErrorCode
TOO_MUCH_IN_HAND = "too much of this peer's mail in hand; try again later"
# A MailBatch's CBOR around its envelopes, at most: its array header, the largest rid, the
# envelope list's header and the `more` flag; and per envelope its byte-string header. Counting
# them exactly is what lets every batch fit in one frame (a Store is smaller than a batch of one).
BATCH_OVERHEAD = 1 + 9 + 3 + 1
ENVELOPE_OVERHEAD = 5


def max_held_envelope(max_payload: int) -> int:
    """The largest envelope we hold for others: one that still fits a MailBatch alone."""
    return max_payload - BATCH_OVERHEAD - ENVELOPE_OVERHEAD



# What a Deliver is answered when its envelope is not taken.
_FAILURES: dict[type[Exception], tuple[E, str]] = {
    NotForUs: (E.FORBIDDEN, "not addressed to this node"),
    EnvelopeError: (E.INVALID, "envelope rejected"),
    WorkRefused: (E.RATE_LIMITED, ""),   # its own text: this peer's budget or the node's
}


def _code(outcome: Outcome) -> int:
    """0 for an envelope taken (or a copy of one taken before), else its ErrorCode."""
    return 0 if isinstance(outcome, bool) else int(_failure(outcome)[0])


def _failure(outcome: Exception) -> tuple[E, str]:
    code, text = next(v for k, v in _FAILURES.items() if isinstance(outcome, k))
    return code, text or str(outcome)


class Mailroom:
    def __init__(self, identity: Identity, store: Store, overlay: Overlay, net: PeerNet,
                 mailer: Mailer) -> None:
        self.me, self.store, self.overlay, self.net, self.mailer = (
            identity, store, overlay, net, mailer)
        self.config: MailConfig = mailer.config
        self.intake = Intake(identity, store, mailer)
        self._fetching: set[bytes] = set()
        self._notices = NoticeGate()
        self.in_hand = InHand()   # what each peer's Deliver requests make us hold
        # replication.py: learns whom a newly held recipient's storer gave the mail to.
        self.on_held: Callable[[bytes, bytes], None] = lambda recipient, storer: None

    @property
    def private_ops(self) -> int:
        """Envelopes opened for peers since start (for tests, benchmarks)."""
        return self.intake.private_ops

    def now(self) -> int:
        return self.mailer.now()

    def header(self, envelope: bytes) -> OuterHeader:
        return parse_header(envelope, self.mailer.max_payload)

    async def accept(self, envelope: bytes, peer: bytes | None = None) -> bool:
        """See Intake.accept."""
        return await self.intake.accept(envelope, peer)

    async def _open(self, envelope: bytes) -> tuple[int, MailContent, bytes,
                                                    MailKeyRecord | None]:
        return await self.intake.open(envelope)

    # ----- peer requests -------------------------------------------------------------------

    async def on_deliver(self, link: Link, request: m.Deliver) -> m.Message:
        size = len(request.envelope)
        if not self.in_hand.take(link.peer_id, size):
            return m.Fail(request.rid, int(E.RATE_LIMITED), TOO_MUCH_IN_HAND)
        try:
            outcome = (await self.intake.accept_all((request.envelope,), link.peer_id))[0]
        finally:
            self.in_hand.release(link.peer_id, size)
        if isinstance(outcome, bool):
            return m.Ok(request.rid)
        code, text = _failure(outcome)
        return m.Fail(request.rid, int(code), text)

    async def on_deliver_many(self, link: Link, request: m.DeliverMany) -> m.Message:
        """A burst of envelopes for us: opened one by one, committed together, then answered."""
        size = sum(len(envelope) for envelope in request.envelopes)
        if not self.in_hand.take(link.peer_id, size):
            return m.Fail(request.rid, int(E.RATE_LIMITED), TOO_MUCH_IN_HAND)
        try:
            outcomes = await self.intake.accept_all(request.envelopes, link.peer_id, burst=True)
        finally:
            self.in_hand.release(link.peer_id, size)
        return m.Delivered(request.rid, tuple(_code(outcome) for outcome in outcomes))

    async def on_store(self, link: Link, request: m.Store) -> m.Message:
        try:
            header = self.header(request.envelope)
        except EnvelopeError:
            return m.Fail(request.rid, int(E.INVALID), "envelope rejected")
        if header.recipient == self.me.node_id:
            return await self.on_deliver(link, m.Deliver(request.rid, request.envelope))
        if len(request.envelope) > max_held_envelope(self.mailer.max_payload):
            return m.Fail(request.rid, int(E.REFUSED), "envelope too large to hand out in a batch")
        now = self.now()
        if header.expires_at <= now:
            return m.Fail(request.rid, int(E.REFUSED), "envelope already expired")
        if header.expires_at > now + self.mailer.retention + CLOCK_SKEW:
            return m.Fail(request.rid, int(E.REFUSED), "expiry beyond our mail.retention_time")
        try:
            self.store.hold(header.uuid, header.recipient, link.peer_id, header.expires_at,
                            request.envelope, now, self.mailer.quotas)
        except QuotaExceeded as exc:
            return m.Fail(request.rid, int(E.REFUSED), str(exc))
        self.on_held(header.recipient, link.peer_id)
        waiting = self.net.links.get(header.recipient)
        if waiting is not None:
            waiting.notify(m.Notify())
        return m.Ok(request.rid)

    def on_fetch(self, link: Link, request: m.Fetch) -> m.Message:
        limit = max(1, min(request.limit, m.MAX_ENVELOPES))
        budget = self.mailer.max_payload - BATCH_OVERHEAD
        batch: list[bytes] = []
        # Sizes first, bytes only for what fits: a Fetch never loads more than one frame.
        held = self.store.held_sizes(link.peer_id, limit + 1)
        for uuid, size in held[:limit]:
            cost = size + ENVELOPE_OVERHEAD
            if cost > budget and not batch and size > max_held_envelope(self.mailer.max_payload):
                # Held before stores were capped: it can never be handed out, and would block the rest.
                log.warning("dropping held envelope %s: too large for a batch", uuid_text(uuid))
                self.store.delete_held(link.peer_id, [uuid])
                continue
            if cost > budget:
                break
            envelope = self.store.held_envelope(uuid)
            if envelope is not None:
                budget -= cost
                batch.append(envelope)
        return m.MailBatch(request.rid, tuple(batch), len(held) > len(batch))

    def on_delete(self, link: Link, request: m.Delete) -> m.Message:
        self.store.delete_held(link.peer_id, list(request.uuids))
        return m.Ok(request.rid)

    def on_notify(self, link: Link) -> None:
        """A notice costs a flag: one fetch worker per peer, at most one fetch per interval."""
        if self._notices.notice(link.peer_id):
            self.mailer.tasks.spawn(self._fetch_notified(Peer(link.peer_id, *link.address)))

    async def _fetch_notified(self, peer: Peer) -> None:
        again = True
        try:
            while again:
                await asyncio.sleep(self._notices.delay(peer.node_id, time.monotonic()))
                self._notices.started(peer.node_id, time.monotonic())
                await self.fetch_from(peer)
                again = self._notices.finished(peer.node_id)
        finally:
            if again:   # cancelled mid-way
                self._notices.abandoned(peer.node_id)

    # ----- fetching what others hold for us ---------------------------------------------

    async def fetch_all(self, lookup: bool = False) -> int:
        """Fetch from the nodes closest to our ID: a fresh lookup when joining, otherwise
        the routing table, which bucket refreshes keep current."""
        if lookup:
            peers = await self.overlay.find_node(self.me.node_id)
        else:
            peers = self.overlay.table.closest(self.me.node_id, self.overlay.config.k)
        counts = await settle((self.fetch_from(p) for p in peers), "fetching mail",
                              NEW_LINKS_AT_ONCE)
        return sum(c for c in counts if isinstance(c, int))

    async def fetch_from(self, peer: Peer) -> int:
        if peer.node_id in self._fetching:
            return 0
        self._fetching.add(peer.node_id)
        try:
            return await self._drain(peer)
        except FluxError as exc:
            log.info("fetch from %s failed: %s", short_id(peer.node_id), exc,
                     extra=about_peer(peer.node_id))
            return 0
        finally:
            self._fetching.discard(peer.node_id)

    async def _drain(self, peer: Peer) -> int:
        """Fetch batches until one brings no new valid mail, within the budgets of Drain."""
        drain, total = Drain(FETCH_BATCH), 0
        while True:
            reply = await self.net.request(peer.host, peer.port, peer.node_id,
                                           lambda rid: m.Fetch(rid, FETCH_BATCH))
            if not isinstance(reply, m.MailBatch) or not reply.envelopes:
                return total
            admitted = drain.admit(reply.envelopes)
            outcomes = await self.intake.accept_all(admitted, peer.node_id)
            # Deleted at the storer after our commit: taken, copies, and worthless ones
            # (they do not verify, or are not ours); what our budget refused stays there.
            done = [uuid for envelope, outcome in zip(admitted, outcomes, strict=True)
                    if not isinstance(outcome, WorkRefused)
                    and (uuid := self._uuid_of(envelope)) is not None]
            for outcome in outcomes:
                if isinstance(outcome, EnvelopeError):
                    log.info("dropping a stored envelope from %s that does not verify",
                             short_id(peer.node_id), extra=about_peer(peer.node_id))
            new = sum(outcome is True for outcome in outcomes)
            complete = not any(isinstance(outcome, WorkRefused) for outcome in outcomes)
            if done:   # deleted at the storer only after our commit
                await self._delete_at(peer, tuple(done))
            total += new
            if not drain.go_on(reply.more, new, complete):
                return total

    async def _delete_at(self, peer: Peer, uuids: tuple[bytes, ...]) -> None:
        await self.net.request(peer.host, peer.port, peer.node_id,
                               lambda rid: m.Delete(rid, uuids))

    def _uuid_of(self, envelope: bytes) -> bytes | None:
        try:
            return self.header(envelope).uuid
        except EnvelopeError:
            return None
