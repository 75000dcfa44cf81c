"""Mail arriving at this node: for us (inbox, receipts) or held for others (store-and-forward).

Only a link authenticated as the recipient may fetch or delete what we hold for it; every
acknowledgement is sent after the commit that makes it true.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid as uuidlib
from collections.abc import Callable

from . import envelope2
from . import messages as m
from .config import MailConfig
from .envelope import MailContent, OuterHeader, open_envelope_with_key, seal
from .envelope2 import open_v2, parse_header, version_of
from .errors import EnvelopeError, FluxError
from .identity import Identity
from .ids import short_id
from .link import Link
from .logsetup import about_peer
from .mail_limits import PRIVATE_OPS_BURST, PRIVATE_OPS_RATE, V2_OPENS_BURST, V2_OPENS_RATE, Drain, NoticeGate
from .mailer import CLOCK_SKEW, FETCH_BATCH, Mailer, off_loop, receipt_uuid
from .mailkeys import MailKeyRecord
from .outbox_states import OutboxState as S
from .overlay import Overlay
from .peer_net import PeerNet
from .ratelimit import RateLimiter
from .routing import Peer
from .store import InboxMail, OutboxMail, QuotaExceeded, Store
from .tasks import settle

log = logging.getLogger("fluxchat.mail")
E = m.ErrorCode
# A MailBatch's CBOR around its envelopes, at most: its array header, the largest rid, the
# envelope list's header and the `more` flag; and per envelope its byte-string header. Counting
# them exactly is what lets every batch fit in one frame (a Store is smaller than a batch of one).
BATCH_OVERHEAD = 1 + 9 + 3 + 1
ENVELOPE_OVERHEAD = 5


def max_held_envelope(max_payload: int) -> int:
    """The largest envelope we hold for others: one that still fits a MailBatch alone."""
    return max_payload - BATCH_OVERHEAD - ENVELOPE_OVERHEAD



class WorkRefused(FluxError):
    """A peer has spent its budget of private-key operations for now (see mail_limits)."""


class Mailroom:
    def __init__(self, identity: Identity, store: Store, overlay: Overlay, net: PeerNet,
                 mailer: Mailer) -> None:
        self.me, self.store, self.overlay, self.net, self.mailer = (
            identity, store, overlay, net, mailer)
        self.config: MailConfig = mailer.config
        self._fetching: set[bytes] = set()
        self._notices = NoticeGate()
        self._private_ops = RateLimiter(PRIVATE_OPS_RATE, PRIVATE_OPS_BURST)
        self._v2_ops = RateLimiter(V2_OPENS_RATE, V2_OPENS_BURST)
        self.private_ops = 0   # envelopes opened for peers since start (for tests, benchmarks)
        # replication.py: learns whom a newly held recipient's storer gave the mail to.
        self.on_held: Callable[[bytes, bytes], None] = lambda recipient, storer: None

    def now(self) -> int:
        return self.mailer.now()

    def header(self, envelope: bytes) -> OuterHeader:
        return parse_header(envelope, self.mailer.max_payload)

    # ----- accepting mail addressed to us ------------------------------------------------

    async def _open(self, envelope: bytes) -> tuple[int, MailContent, bytes,
                                                    MailKeyRecord | None]:
        """(envelope version, content, sender's RSA key, sender's mail key record)."""
        version = version_of(envelope, len(envelope))
        if version == 1:
            content, sender_key = await off_loop(open_envelope_with_key, envelope, self.me)
            return 1, content, sender_key, None
        keyring = self.mailer.keyring
        if keyring is None:
            raise EnvelopeError()
        opened = open_v2(envelope, self.me.node_id, keyring.prekeys, keyring.records)
        return version, opened.content, opened.sender_der, opened.sender_record

    async def accept(self, envelope: bytes, peer: bytes | None = None) -> bool:
        """Open, verify and commit an envelope for us; False for a copy of one already seen,
        which costs no private-key work. Raises EnvelopeError when it does not verify, and
        WorkRefused when `peer` (None: our own caller) has spent its budget."""
        header = self.header(envelope)
        budget = self._v2_ops if header.version == 2 else self._private_ops
        if self.store.is_seen(header.uuid):   # no work for a copy...
            if self._receipt_lost(header.uuid):   # ...unless a crash lost the receipt: once per mail
                self._spend(peer, budget)
                await self._rewrite_receipt(header.uuid, self.now())
            self._resend_receipt(header.uuid, self.now())
            return False
        self._spend(peer, budget)
        self.private_ops += 1
        version, content, sender_key, record = await self._open(envelope)
        now = self.now()
        # A replay of an old envelope is refused even after its uuid was forgotten.
        if content.created_at > now + CLOCK_SKEW or \
                content.created_at < now - self.mailer.retention - CLOCK_SKEW:
            raise EnvelopeError()
        if self.store.get_key(content.sender) != sender_key:   # a read, not a write, per mail
            self.store.put_key(content.sender, sender_key, now)
        record = self._learn(content.sender, sender_key, record)
        if content.kind == "receipt":
            self._accept_receipt(content, now)
        else:
            await self._accept_mail(content, sender_key, record, now, version)
        return True

    def _spend(self, peer: bytes | None, budget: RateLimiter) -> None:
        if peer is None:
            return
        if not budget.allow(peer.hex(), time.monotonic()):
            raise WorkRefused("too much mail work for this peer; try again later")

    def _learn(self, sender: bytes, sender_key: bytes,
               record: MailKeyRecord | None) -> MailKeyRecord | None:
        """Keep the sender's record when it is newer than ours; the record to answer to."""
        keyring = self.mailer.keyring
        if keyring is None or record is None:
            return record
        return keyring.newest(sender, sender_key, record)

    async def _accept_mail(self, content: MailContent, sender_key: bytes,
                           record: MailKeyRecord | None, now: int, version: int) -> None:
        mail = InboxMail(content.uuid, content.sender, content.recipient, content.subject,
                         content.body, content.created_at, now, ref=content.ref or None,
                         sender_name=content.sender_name)
        if self.store.add_inbox(mail, version):
            log.info("mail %s from %s received", uuidlib.UUID(bytes=content.uuid),
                     short_id(content.sender))
        await self._queue_receipt(content, sender_key, record, now)

    async def _seal_receipt(self, receipt: MailContent, sender_key: bytes,
                            record: MailKeyRecord | None, expires: int) -> bytes:
        keyring = self.mailer.keyring
        if keyring is not None and keyring.signer is not None and record is not None \
                and record.valid_at(self.now()):
            return envelope2.seal(receipt, keyring.signer, record, expires)
        return await off_loop(seal, receipt, self.me, sender_key, expires, os.urandom(32),
                              os.urandom(12))

    async def _queue_receipt(self, content: MailContent, sender_key: bytes,
                             record: MailKeyRecord | None, now: int) -> None:
        """Sealed at once, so retries resend the same bytes; a second copy of a mail
        (the sender did not see our receipt yet) puts the same receipt back in the queue.
        Should we crash before the receipt is queued, the sender's retry brings it back."""
        if content.sender == self.me.node_id:
            return
        rid = receipt_uuid(content.uuid)
        if self.store.get_outbox(rid) is None:
            expires = now + self.mailer.retention
            receipt = MailContent("receipt", rid, self.me.node_id, content.sender, now, "", "",
                                  content.uuid)
            envelope = await self._seal_receipt(receipt, sender_key, record, expires)
            if self.store.get_outbox(rid) is None:   # a second copy may have raced us here
                self.store.add_outbox(OutboxMail(rid, content.sender, "", "", now, expires,
                                                 envelope=envelope, kind="receipt"), now)
                self.mailer.wake.set()
                return
        self._resend_receipt(content.uuid, now)

    def _receipt_lost(self, mail_uuid: bytes) -> bool:
        """A mail in our inbox with no receipt: we were killed between the two commits."""
        return self.store.get_outbox(receipt_uuid(mail_uuid)) is None \
            and self.store.read_inbox(mail_uuid) is not None

    async def _rewrite_receipt(self, mail_uuid: bytes, now: int) -> None:
        """Write the lost receipt from the inbox row and the sender's key (and mail key record)
        cached when we opened the mail; otherwise the sender would retry until the mail expires."""
        mail = self.store.read_inbox(mail_uuid)
        key = None if mail is None else self.store.get_key(mail.sender)
        if mail is None or key is None:
            return
        log.info("mail %s had no receipt (a crash?); writing it now", uuidlib.UUID(bytes=mail_uuid))
        record = None if self.mailer.keyring is None else self.mailer.keyring.held(mail.sender, key)
        content = MailContent("mail", mail.uuid, mail.sender, mail.recipient, mail.created_at,
                              mail.subject, mail.body, b"")
        await self._queue_receipt(content, key, record, now)

    def _resend_receipt(self, mail_uuid: bytes, now: int) -> None:
        """The sender just reached us again, so our receipt for that mail, if it waits out a
        retry backoff, goes now (a receipt we never wrote, or one of a receipt: nothing)."""
        rid = receipt_uuid(mail_uuid)
        existing = self.store.get_outbox(rid)
        if existing is not None and (existing.state != S.QUEUED or existing.next_attempt_at > now):
            self.store.set_outbox_state(rid, S.QUEUED, now, "mail arrived again",
                                        next_attempt_at=0)
        self.mailer.wake.set()

    def _accept_receipt(self, content: MailContent, now: int) -> None:
        mail = self.store.get_outbox(content.ref)
        # Only the recipient of our mail can confirm it.
        if mail is None or mail.recipient != content.sender or mail.kind != "mail":
            self.store.remember_seen(content.uuid, content.created_at, now)
            return
        if self.store.set_outbox_state(mail.uuid, S.DELIVERED, now,
                                       f"receipt from {short_id(content.sender)} verified"):
            log.info("mail %s delivered (receipt verified)", uuidlib.UUID(bytes=mail.uuid))
        self.store.remember_seen(content.uuid, content.created_at, now)

    # ----- peer requests -------------------------------------------------------------------

    async def on_deliver(self, link: Link, request: m.Deliver) -> m.Message:
        try:
            header = self.header(request.envelope)
            if header.recipient != self.me.node_id:
                return m.Fail(request.rid, int(E.FORBIDDEN), "not addressed to this node")
            await self.accept(request.envelope, link.peer_id)
        except EnvelopeError:
            return m.Fail(request.rid, int(E.INVALID), "envelope rejected")
        except WorkRefused as exc:
            return m.Fail(request.rid, int(E.RATE_LIMITED), str(exc))
        return m.Ok(request.rid)

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
                log.warning("dropping held envelope %s: too large for a batch", uuidlib.UUID(bytes=uuid))
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
        counts = await settle((self.fetch_from(p) for p in peers), "fetching mail")
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
            done: list[bytes] = []   # uuids to delete at the storer: taken or worthless
            new, complete = 0, True
            for envelope in drain.admit(reply.envelopes):
                try:
                    uuid, fresh = await self._take(envelope, peer.node_id)
                except WorkRefused:
                    complete = False   # the rest stays at the storer for a later fetch
                    break
                new += fresh
                if uuid is not None:
                    done.append(uuid)
            if done:   # deleted at the storer only after our commit
                await self._delete_at(peer, tuple(done))
            total += new
            if not drain.go_on(reply.more, new, complete):
                return total

    async def _delete_at(self, peer: Peer, uuids: tuple[bytes, ...]) -> None:
        await self.net.request(peer.host, peer.port, peer.node_id,
                               lambda rid: m.Delete(rid, uuids))

    async def _take(self, envelope: bytes, peer: bytes) -> tuple[bytes | None, bool]:
        """Commit one fetched envelope: (its uuid for deletion, also for bad ones; whether
        it was new valid mail)."""
        try:
            header = self.header(envelope)
        except EnvelopeError:
            return None, False
        try:
            return header.uuid, await self.accept(envelope, peer)
        except EnvelopeError:
            log.info("dropping a stored envelope from %s that does not verify", short_id(peer),
                     extra=about_peer(peer))
            return header.uuid, False
