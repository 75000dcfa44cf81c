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
import uuid as uuidlib
from collections.abc import Sequence

from . import envelope2
from .envelope import MailContent, OuterHeader, open_envelope_with_key, seal
from .envelope2 import open_v2, parse_header, version_of
from .errors import EnvelopeError, FluxError
from .identity import Identity
from .ids import short_id
from .mail_limits import PRIVATE_OPS_BURST, PRIVATE_OPS_RATE, V2_OPENS_BURST, V2_OPENS_RATE
from .mailer import CLOCK_SKEW, Mailer, off_loop, receipt_uuid
from .mailkeys import MailKeyRecord
from .outbox_states import OutboxState as S
from .ratelimit import RateLimiter
from .store import InboxMail, OutboxMail, Store
from .store_batch import DELIVERED, DUPLICATE, NEW, MailArrival, ReceiptArrival

log = logging.getLogger("fluxchat.mail")


class WorkRefused(FluxError):
    """A peer has spent its budget of private-key operations for now (see mail_limits)."""


class NotForUs(EnvelopeError):
    """The clear header names another node (a Deliver answers FORBIDDEN)."""


# Per envelope: True (new, committed), False (a copy of one already seen), or why not.
Outcome = bool | EnvelopeError | WorkRefused


class Intake:
    def __init__(self, identity: Identity, store: Store, mailer: Mailer) -> None:
        self.me, self.store, self.mailer = identity, store, mailer
        self._private_ops = RateLimiter(PRIVATE_OPS_RATE, PRIVATE_OPS_BURST)
        self._v2_ops = RateLimiter(V2_OPENS_RATE, V2_OPENS_BURST)
        self.private_ops = 0   # envelopes opened for peers since start (for tests, benchmarks)

    def now(self) -> int:
        return self.mailer.now()

    def header(self, envelope: bytes) -> OuterHeader:
        return parse_header(envelope, self.mailer.max_payload)

    async def accept_all(self, envelopes: Sequence[bytes], peer: bytes | None) -> list[Outcome]:
        """Open, verify and commit envelopes for us, in one transaction; per envelope its
        Outcome. A copy of one already seen costs no private-key work. `peer` (None: our own
        caller) pays for the opening. A failed commit raises StorageError (nothing taken)."""
        outcomes: list[Outcome] = []
        pending: list[tuple[int, MailArrival | ReceiptArrival]] = []
        for envelope in envelopes:
            try:
                arrival = await self._prepare(envelope, peer)
            except (EnvelopeError, WorkRefused) as exc:
                outcomes.append(exc)
                continue
            outcomes.append(arrival is not None)
            if arrival is not None:
                pending.append((len(outcomes) - 1, arrival))
        if pending:
            now = self.now()
            taken = self.store.receive_all([arrival for _, arrival in pending], now)
            for (index, arrival), result in zip(pending, taken, strict=True):
                if isinstance(result, Exception):
                    raise result   # a bug or a broken database: the caller reports it
                outcomes[index] = result != DUPLICATE
                self._after_commit(arrival, result, now)
        return outcomes

    async def accept(self, envelope: bytes, peer: bytes | None = None) -> bool:
        """One envelope: True if new, False for a copy; raises EnvelopeError when it does not
        verify, WorkRefused when `peer` has spent its budget."""
        outcome = (await self.accept_all((envelope,), peer))[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    # ----- one envelope: checks and crypto, no writes but the sender's key ------------------

    async def _prepare(self, envelope: bytes, peer: bytes | None
                       ) -> MailArrival | ReceiptArrival | None:
        header = self.header(envelope)
        if header.recipient != self.me.node_id:
            raise NotForUs()
        budget = self._v2_ops if header.version == 2 else self._private_ops
        if self.store.is_seen(header.uuid):   # no work for a copy...
            if self._receipt_lost(header.uuid):   # ...unless a crash lost the receipt: once per mail
                self._spend(peer, budget)
                await self._rewrite_receipt(header.uuid, self.now())
            self._resend_receipt(header.uuid, self.now())
            return None
        self._spend(peer, budget)
        self.private_ops += 1
        version, content, sender_key, record = await self.open(envelope)
        now = self.now()
        # A replay of an old envelope is refused even after its uuid was forgotten.
        if content.created_at > now + CLOCK_SKEW or \
                content.created_at < now - self.mailer.retention - CLOCK_SKEW:
            raise EnvelopeError()
        if self.store.get_key(content.sender) != sender_key:   # a read, not a write, per mail
            self.store.put_key(content.sender, sender_key, now)
        record = self._learn(content.sender, sender_key, record)
        if content.kind == "receipt":
            return ReceiptArrival(content.uuid, content.created_at, content.sender, content.ref,
                                  f"receipt from {short_id(content.sender)} verified")
        mail = InboxMail(content.uuid, content.sender, content.recipient, content.subject,
                         content.body, content.created_at, now, ref=content.ref or None,
                         sender_name=content.sender_name)
        receipt = None
        if content.sender != self.me.node_id:   # sealed before the commit: one transaction
            receipt = await self._receipt(content, sender_key, record, now)
        return MailArrival(mail, version, receipt)

    async def open(self, envelope: bytes) -> tuple[int, MailContent, bytes, MailKeyRecord | None]:
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

    def _after_commit(self, arrival: MailArrival | ReceiptArrival, result: str, now: int) -> None:
        if isinstance(arrival, ReceiptArrival):
            if result == DELIVERED and log.isEnabledFor(logging.INFO):
                log.info("mail %s delivered (receipt verified)",
                         uuidlib.UUID(bytes=arrival.mail_uuid))
            return
        if result == NEW:
            if log.isEnabledFor(logging.INFO):
                log.info("mail %s from %s received", uuidlib.UUID(bytes=arrival.mail.uuid),
                         short_id(arrival.mail.sender))
            if arrival.receipt is not None:
                self.mailer.wake.set()
        elif result == DUPLICATE:   # a copy that raced the first into this batch
            self._resend_receipt(arrival.mail.uuid, now)

    # ----- receipts --------------------------------------------------------------------------

    async def _receipt(self, content: MailContent, sender_key: bytes,
                       record: MailKeyRecord | None, now: int) -> OutboxMail:
        """Our receipt for a mail, sealed at once, so retries resend the same bytes."""
        expires = now + self.mailer.retention
        rid = receipt_uuid(content.uuid)
        receipt = MailContent("receipt", rid, self.me.node_id, content.sender, now, "", "",
                              content.uuid)
        keyring = self.mailer.keyring
        if keyring is not None and keyring.signer is not None and record is not None \
                and record.valid_at(now):
            envelope = envelope2.seal(receipt, keyring.signer, record, expires)
        else:
            envelope = await off_loop(seal, receipt, self.me, sender_key, expires,
                                      os.urandom(32), os.urandom(12))
        return OutboxMail(rid, content.sender, "", "", now, expires, envelope=envelope,
                          kind="receipt")

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
        log.info("mail %s had no receipt (a crash?); writing it now", uuidlib.UUID(bytes=mail_uuid))
        record = None if self.mailer.keyring is None else self.mailer.keyring.held(mail.sender, key)
        content = MailContent("mail", mail.uuid, mail.sender, mail.recipient, mail.created_at,
                              mail.subject, mail.body, b"")
        receipt = await self._receipt(content, key, record, now)
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
