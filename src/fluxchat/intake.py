"""Envelopes addressed to us, a burst at a time: open and verify each, then commit them all
(each mail with the receipt we send back, each receipt for our mail) in one transaction.

Nothing is acknowledged before that commit: the callers answer `Ok` / `Delivered`, or delete
at the storer, only once `accept_all` returned. Every envelope a peer makes us open spends
its budget (mail_limits): v1 envelopes cost an RSA private-key operation, v2 an HPKE open.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

from . import envelope2
from .envelope import _OPEN_FAILURES as v1_failures
from .envelope import MAX_RECEIPT_REFS, UUID_BYTES, MailContent, OuterHeader, open_envelope_with_key, seal
from .envelope2 import Header2, open_split, open_v2, parse_header, version_of
from .errors import EnvelopeError, FluxError
from .fairshare import FairShare
from .identity import Identity
from .ids import short_id
from .mail_limits import (
    NODE_PRIVATE_OPS_BURST,
    NODE_PRIVATE_OPS_RATE,
    NODE_V2_OPENS_BURST,
    NODE_V2_OPENS_RATE,
    PRIVATE_OPS_BURST,
    PRIVATE_OPS_RATE,
    V2_OPENS_BURST,
    V2_OPENS_RATE,
)
from .mailer import CLOCK_SKEW, Mailer, receipt_uuid
from .mailkeys import MailKeyRecord
from .outbox_states import OutboxState as S
from .ratelimit import RateLimiter
from .records import record
from .sealing import off_loop
from .store import InboxMail, OutboxMail, Store
from .store_batch import DELIVERED, DUPLICATE, NEW, MailArrival, OurReceipt, ReceiptArrival
from .uuids import uuid_text

log = logging.getLogger("fluxchat.mail")
PEER_BUDGET_SPENT = "too much mail work for this peer; try again later"
NODE_BUDGET_SPENT = "too much mail work for this node; try again later"


class WorkRefused(FluxError):
    """A peer has spent its budget of private-key operations for now (see mail_limits)."""


class NotForUs(EnvelopeError):
    """The clear header names another node (a Deliver answers FORBIDDEN)."""


# Per envelope: True (new, committed), False (a copy of one already seen), or why not.
Outcome = bool | EnvelopeError | WorkRefused


@record
class _Opened:
    """One envelope opened and checked, ready to commit."""
    arrival: MailArrival | ReceiptArrival
    sender_key: bytes
    record: MailKeyRecord | None


class Intake:
    def __init__(self, identity: Identity, store: Store, mailer: Mailer) -> None:
        self.me, self.store, self.mailer = identity, store, mailer
        self._private_ops = RateLimiter(PRIVATE_OPS_RATE, PRIVATE_OPS_BURST)
        self._v2_ops = RateLimiter(V2_OPENS_RATE, V2_OPENS_BURST)
        now = time.monotonic()
        self._node_ops = FairShare(NODE_PRIVATE_OPS_RATE, NODE_PRIVATE_OPS_BURST, now)
        self._node_v2 = FairShare(NODE_V2_OPENS_RATE, NODE_V2_OPENS_BURST, now)
        self.private_ops = 0   # envelopes opened for peers since start (for tests, benchmarks)
        self.headers_read = 0  # envelopes from peers whose header we parsed (likewise)

    def now(self) -> int:
        return self.mailer.now()

    def header(self, envelope: bytes) -> OuterHeader:
        return parse_header(envelope, self.mailer.max_payload)

    async def accept_all(self, envelopes: Sequence[bytes], peer: bytes | None,
                         burst: bool = False) -> list[Outcome]:
        """Open, verify and commit envelopes for us, in one transaction; per envelope its
        Outcome. A copy of one already seen costs no private-key work. `peer` (None: our own
        caller) pays for the opening. A failed commit raises StorageError (nothing taken).
        `burst`: they came in one DeliverMany from their sender, which then understands one
        receipt for all of them; otherwise each mail gets its own."""
        outcomes: list[Outcome] = []
        pending: list[tuple[int, _Opened]] = []
        for index, envelope in enumerate(envelopes):
            try:
                if index == 0:
                    self._refuse_if_spent(envelope, peer)
                opened = await self._prepare(envelope, peer)
            except WorkRefused as refused:
                # Refusing must cost less than reading: the rest of the request goes unread.
                outcomes += [refused] * (len(envelopes) - index)
                break
            except EnvelopeError as exc:
                outcomes.append(exc)
                continue
            outcomes.append(opened is not None)
            if opened is not None:
                pending.append((len(outcomes) - 1, opened))
        if pending:
            now = self.now()
            # A burst's receipt goes in the mails' own commit; a lone mail is acknowledged
            # first (the shortest path into the inbox) and its receipt written right after.
            receipts = await self._receipts([opened for _, opened in pending], now,
                                            MAX_RECEIPT_REFS) if burst else []
            written: list[OutboxMail] = []
            taken = self.store.receive_all([opened.arrival for _, opened in pending], now,
                                           receipts, written)
            later: list[_Opened] = []
            for (index, opened), result in zip(pending, taken, strict=True):
                if isinstance(result, Exception):
                    raise result   # a bug or a broken database: the caller reports it
                outcomes[index] = result != DUPLICATE
                self._after_commit(opened.arrival, result, now)
                if result == NEW and not burst:
                    later.append(opened)
            self.mailer.worker.start_now(written)
            if later:
                self.mailer.tasks.spawn(self._receipts_after(later, now))
        return outcomes

    async def _receipts_after(self, mails: list[_Opened], now: int) -> None:
        """Receipts for mails already committed. A crash before this commit loses only the
        receipts: the sender's retry finds the mail without one and gets it then."""
        # Their mails are committed already: nothing left for the receipts to wait on.
        receipts = [OurReceipt(receipt.row, ()) for receipt in await self._receipts(mails, now, 1)]
        written: list[OutboxMail] = []
        self.store.receive_all([], now, receipts, written)   # one written before stays as it is
        self.mailer.worker.start_now(written)   # from memory if the sender is linked

    async def accept(self, envelope: bytes, peer: bytes | None = None) -> bool:
        """One envelope: True if new, False for a copy; raises EnvelopeError when it does not
        verify, WorkRefused when `peer` has spent its budget."""
        outcome = (await self.accept_all((envelope,), peer))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    # ----- one envelope: checks and crypto, no writes but the sender's key ------------------

    async def _prepare(self, envelope: bytes, peer: bytes | None) -> _Opened | None:
        split = None   # a v2 envelope is split once: for its header, then for opening
        if version_of(envelope, self.mailer.max_payload) == 2:
            try:
                split = envelope2.split(envelope, self.mailer.max_payload)
            except v1_failures:
                raise EnvelopeError() from None
            header = split[0].outer()
        else:
            header = self.header(envelope)
        if peer is not None:
            self.headers_read += 1
        if header.recipient != self.me.node_id:
            raise NotForUs()
        budget, node = self._budgets(header.version)
        if self.store.is_seen(header.uuid):   # no work for a copy...
            if self._receipt_lost(header.uuid):   # ...unless a crash lost the receipt: once per mail
                self._spend(peer, budget, node)
                await self._rewrite_receipt(header.uuid, self.now())
            self._resend_receipt(header.uuid, self.now())
            return None
        self._spend(peer, budget, node)
        self.private_ops += 1
        version, content, sender_key, record = await self.open(envelope, split)
        now = self.now()
        # A replay of an old envelope is refused even after its uuid was forgotten.
        if content.created_at > now + CLOCK_SKEW or \
                content.created_at < now - self.mailer.retention - CLOCK_SKEW:
            raise EnvelopeError()
        if self.store.get_key(content.sender) != sender_key:   # a read, not a write, per mail
            self.store.put_key(content.sender, sender_key, now)
        record = self._learn(content.sender, sender_key, record)
        if content.kind == "receipt":
            refs = tuple(content.ref[i:i + UUID_BYTES]
                         for i in range(0, len(content.ref), UUID_BYTES))
            return _Opened(ReceiptArrival(content.uuid, content.created_at, content.sender, refs,
                                          f"receipt from {short_id(content.sender)} verified"),
                           sender_key, record)
        mail = InboxMail(content.uuid, content.sender, content.recipient, content.subject,
                         content.body, content.created_at, now, ref=content.ref or None,
                         sender_name=content.sender_name)
        return _Opened(MailArrival(mail, version), sender_key, record)

    async def open(self, envelope: bytes, split: tuple[Header2, bytes] | None = None
                   ) -> tuple[int, MailContent, bytes, MailKeyRecord | None]:
        """(envelope version, content, sender's RSA key, sender's mail key record);
        `split`: the v2 envelope's parts if the caller has them."""
        version = version_of(envelope, len(envelope))
        if version == 1:
            content, sender_key = await off_loop(open_envelope_with_key, envelope, self.me)
            return 1, content, sender_key, None
        keyring = self.mailer.keyring
        if keyring is None:
            raise EnvelopeError()
        opened = open_split(*split, self.me.node_id, keyring.prekeys, keyring.records) \
            if split is not None else \
            open_v2(envelope, self.me.node_id, keyring.prekeys, keyring.records)
        return version, opened.content, opened.sender_der, opened.sender_record

    def _budgets(self, version: int) -> tuple[RateLimiter, FairShare]:
        """The peer's own budget and the node's for opening an envelope of `version`."""
        return (self._v2_ops, self._node_v2) if version == 2 else (self._private_ops, self._node_ops)

    def _spend(self, peer: bytes | None, budget: RateLimiter, node: FairShare) -> None:
        """`peer`'s own budget first, then its fair part of the node's."""
        if peer is None:
            return
        now = time.monotonic()
        if not budget.allow(peer.hex(), now):
            raise WorkRefused(PEER_BUDGET_SPENT)
        if not node.take(peer.hex(), 1.0, now):
            raise WorkRefused(NODE_BUDGET_SPENT)

    def _refuse_if_spent(self, envelope: bytes, peer: bytes | None) -> None:
        """WorkRefused before the envelope is read (its header parse costs more than the
        refusal) when the budgets its version draws on are spent already; even a copy of a
        mail we hold then waits for the peer's retry."""
        if peer is None:
            return
        budget, node = self._budgets(version_of(envelope, self.mailer.max_payload))
        now = time.monotonic()
        if not budget.ready(peer.hex(), now):
            raise WorkRefused(PEER_BUDGET_SPENT)
        if not node.ready(peer.hex(), 1.0, now):
            raise WorkRefused(NODE_BUDGET_SPENT)

    def _learn(self, sender: bytes, sender_key: bytes,
               record: MailKeyRecord | None) -> MailKeyRecord | None:
        """Keep the sender's record when it is newer than ours; the record to answer to."""
        keyring = self.mailer.keyring
        if keyring is None or record is None:
            return record
        return keyring.newest(sender, sender_key, record)

    def _after_commit(self, arrival: MailArrival | ReceiptArrival, result: str, now: int) -> None:
        if isinstance(arrival, ReceiptArrival):
            if result == DELIVERED and log.isEnabledFor(logging.INFO):
                log.info("receipt from %s verified for %d mail(s), the first %s",
                         short_id(arrival.sender), len(arrival.mail_uuids),
                         uuid_text(arrival.mail_uuids[0]))
            return
        if result == NEW:
            if log.isEnabledFor(logging.INFO):
                log.info("mail %s from %s received", uuid_text(arrival.mail.uuid),
                         short_id(arrival.mail.sender))
        elif result == DUPLICATE:   # a copy that raced the first into this batch
            self._resend_receipt(arrival.mail.uuid, now)

    # ----- receipts --------------------------------------------------------------------------

    async def _receipts(self, pending: list[_Opened], now: int,
                        refs: int) -> list[OurReceipt]:
        """One receipt per sender for its new mails among `pending` (at most `refs` each),
        sealed before the commit that writes them with the mails."""
        by_sender: dict[bytes, dict[bytes, _Opened]] = {}   # a copy in the burst: once
        for opened in pending:
            arrival = opened.arrival
            if isinstance(arrival, MailArrival) and arrival.mail.sender != self.me.node_id:
                by_sender.setdefault(arrival.mail.sender, {})[arrival.mail.uuid] = opened
        receipts = []
        for sender, by_uuid in by_sender.items():
            mails = list(by_uuid.items())
            for start in range(0, len(mails), refs):
                chunk = mails[start:start + refs]
                covers = tuple(uuid for uuid, _ in chunk)
                last = chunk[-1][1]   # its key and record: the newest we learned
                row = await self._receipt(sender, b"".join(covers), last.sender_key,
                                          last.record, now)
                receipts.append(OurReceipt(row, covers))
        return receipts

    async def _receipt(self, sender: bytes, refs: bytes, sender_key: bytes,
                       record: MailKeyRecord | None, now: int) -> OutboxMail:
        """Our receipt for the mails `refs` (their uuids, one after another) from `sender`,
        sealed at once, so retries resend the same bytes. Its uuid derives from what it
        confirms, so a mail (or burst) delivered again yields the same receipt."""
        expires = now + self.mailer.retention
        rid = receipt_uuid(refs)
        receipt = MailContent("receipt", rid, self.me.node_id, sender, now, "", "", refs)
        keyring = self.mailer.keyring
        if keyring is not None and keyring.signer is not None and record is not None \
                and record.valid_at(now):
            envelope = envelope2.seal(receipt, keyring.signer, record, expires)
        else:
            envelope = await off_loop(seal, receipt, self.me, sender_key, expires,
                                      os.urandom(32), os.urandom(12))
        return OutboxMail(rid, sender, "", "", now, expires, envelope=envelope, kind="receipt")

    def _receipt_lost(self, mail_uuid: bytes) -> bool:
        """A mail in our inbox with no receipt: we were killed between the two commits (a
        database written before receipts shared the inbox's transaction)."""
        return self.store.get_outbox(receipt_uuid(mail_uuid)) is None \
            and self.store.read_inbox(mail_uuid) is not None

    async def _rewrite_receipt(self, mail_uuid: bytes, now: int) -> None:
        """Write the lost receipt from the inbox row and the sender's key (and mail key record)
        cached when we opened the mail; otherwise the sender would retry until the mail expires."""
        mail = self.store.read_inbox(mail_uuid)
        key = None if mail is None else self.store.get_key(mail.sender)
        if mail is None or key is None or mail.sender == self.me.node_id:
            return
        log.info("mail %s had no receipt (a crash?); writing it now", uuid_text(mail_uuid))
        record = None if self.mailer.keyring is None else self.mailer.keyring.held(mail.sender, key)
        receipt = await self._receipt(mail.sender, mail.uuid, key, record, now)
        if self.store.get_outbox(receipt.uuid) is None:   # a second copy may have raced us here
            self.store.add_outbox(receipt, now)

    def _resend_receipt(self, mail_uuid: bytes, now: int) -> None:
        """The sender just reached us again, so our receipt for that mail, if it waits out a
        retry backoff, goes now (a receipt we never wrote, or one of a receipt: nothing)."""
        rid = receipt_uuid(mail_uuid)
        existing = self.store.get_outbox(rid)
        if existing is not None and (existing.state != S.QUEUED or existing.next_attempt_at > now):
            self.store.set_outbox_state(rid, S.QUEUED, now, "mail arrived again",
                                        next_attempt_at=0)
        self.mailer.wake.set()
