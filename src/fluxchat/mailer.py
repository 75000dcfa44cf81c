"""Mail delivery: the user's mail into the outbox, direct and store-and-forward delivery.

The outbox's states and allowed moves are in outbox_states.py. A mail whose recipient's key is not
found yet waits (`waiting_for_key`) and is retried with backoff until it expires; a link to the
recipient, its key turning up, or our first link after none makes its mail due at once. Everything
the node acknowledges, to a peer or to the user, is committed to the store first.

Mail the user sends (`send`) is committed in groups (group_commit.py): mails submitted in the same
moment share one transaction, and each caller hears back once the commit that holds its mail is
done. Mail to a recipient we hold a link to is attempted at once from memory, as far as attempt
slots are free: sealed and sent while its commit is written, its outcome recorded after that
commit. The rest waits for the outbox worker (outbox_worker.py), which reads due mail from the
store, as do all retries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from . import messages as m
from .config import MailConfig
from .courier import Courier
from .errors import FluxError
from .group_commit import GroupCommit
from .identity import Identity
from .ids import short_id
from .later_moves import LaterMoves
from .mail_rules import body_problem, subject_problem
from .mailkeyring import MailKeyring
from .outbox_states import OutboxState
from .outbox_worker import BURST, OutboxWorker
from .overlay import Overlay
from .peer_net import PeerNet
from .routing import Peer
from .sealing import seal_all
from .store import InboxMail, OutboxMail, Quotas, Store
from .store_batch import OutboxMove
from .tasks import settle
from .uuids import new_uuid

log = logging.getLogger("fluxchat.mail")
S = OutboxState
E = m.ErrorCode
RETRY_BASE = 5.0          # seconds before the first retry; doubles per attempt
RETRY_MAX = 600.0
CLOCK_SKEW = 600          # seconds a sender's clock may run ahead of ours
FETCH_BATCH = 64
FALLBACK_AT_ONCE = 8      # mails of a burst the recipient did not take, attempted at once
# Submits committed in one transaction at most: a larger backlog goes in several, and the first
# group's mail is on its way before the next is written.
GROUP_LIMIT = 2 * BURST


class MailError(FluxError):
    """A mail the user asked to send is not acceptable (size, subject, recipient)."""


def receipt_uuid(mail_uuid: bytes) -> bytes:
    """Deterministic, so a re-delivered mail re-sends the same receipt instead of a new one."""
    return hashlib.sha256(b"fluxchat-receipt\x00" + mail_uuid).digest()[:16]


class Mailer:
    def __init__(self, identity: Identity, store: Store, overlay: Overlay, net: PeerNet,
                 config: MailConfig, max_payload: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.me, self.store, self.overlay, self.net = identity, store, overlay, net
        self.courier = Courier(identity.node_id, net, overlay, config.replicas, max_payload)
        self.config, self.max_payload, self.clock = config, max_payload, clock
        self.retention = int(config.retention_time * 3600)
        self.quotas = Quotas(config.quota_per_recipient, config.quota_per_peer, config.quota_total,
                             config.quota_per_sender_recipient)
        self.worker = OutboxWorker(store, self.now, self._attempt_any,
                                   lambda mail: self._retry(mail, "internal error"),
                                   lambda recipient: recipient in self.net.links)
        self.wake, self.tasks = self.worker.wake, self.worker.tasks
        self.later = LaterMoves(store, self.now, self.worker.slots, self.tasks)
        # Mail to a linked recipient is sealed and sent while its commit is under way.
        self.submits: GroupCommit[OutboxMail] = GroupCommit(
            lambda mails: self.store.add_outbox_all(mails, self.now()), self.worker.start_now,
            GROUP_LIMIT, self.worker.start_linked)
        # relay_sender.py: hands an envelope to the recipient's relay when it cannot be dialed;
        # returns ("forwarded" | "held", relay ID) or None.
        self.relay: Callable[[bytes, bytes], Awaitable[tuple[str, bytes] | None]] | None = None
        # relay_sender.py: whether we hold a valid relay record of a node; its mail then goes
        # to the relay first, without a lookup (which could only fail to dial it).
        self.relay_known: Callable[[bytes], bool] = lambda node_id: False
        # Set by the node when mail keys are on: then mail goes as envelope v2 to every
        # recipient with a valid record, else as v1.
        self.keyring: MailKeyring | None = None

    def now(self) -> int:
        return int(self.clock())

    # ----- the user's side -------------------------------------------------------------

    def _new_mail(self, recipient: bytes, subject: str, body: str,
                  ref: bytes | None) -> OutboxMail:
        problem = subject_problem(subject) or body_problem(body, self.config.max_body_bytes)
        if problem is not None:
            raise MailError(problem)
        now = self.now()
        return OutboxMail(uuid=new_uuid(), recipient=recipient, subject=subject,
                          body=body, created_at=now, expires_at=now + self.retention,
                          updated_at=now, ref=ref)   # the row as add_outbox writes it

    async def send(self, recipient: bytes, subject: str, body: str,
                   ref: bytes | None = None) -> OutboxMail:
        """Queue a mail as `submit` does, its commit shared with the mails submitted in the same
        moment; returns once that commit is done (a StorageError if it failed)."""
        if recipient == self.me.node_id:
            return self.submit(recipient, subject, body, ref)
        mail = self._new_mail(recipient, subject, body, ref)
        await self.submits.add(mail)
        return mail

    def submit(self, recipient: bytes, subject: str, body: str,
               ref: bytes | None = None) -> OutboxMail:
        """Queue a mail in a commit of its own; `ref` is the uuid of the mail it replies to
        (signed with the content)."""
        mail = self._new_mail(recipient, subject, body, ref)
        now = mail.created_at
        self.store.add_outbox(mail, now)
        if recipient == self.me.node_id:   # mail to oneself: straight into the inbox
            self.store.add_inbox(InboxMail(mail.uuid, recipient, recipient, subject, body, now, now,
                                           ref=ref, sender_name=self.config.display_name))
            self.store.set_outbox_state(mail.uuid, S.DELIVERED, now, "to ourselves")
            return self.store.get_outbox(mail.uuid) or mail
        self.wake.set()
        return mail

    def resend(self, uuid: bytes) -> bool:
        """Queue a failed or expired mail again (dated now, sealed afresh); False if it is neither."""
        now = self.now()
        if not self.store.resend_outbox(uuid, now, now + self.retention):
            return False
        self.wake.set()
        return True

    # ----- delivery attempts -------------------------------------------------------------

    async def run_outbox(self) -> None:
        await self.worker.run()

    async def _attempt_any(self, burst: list[OutboxMail], written: Awaitable[None] | None
                           ) -> None:
        await (self.attempt(burst[0], written) if len(burst) == 1
               else self.attempt_burst(burst, written))

    async def _on_disk(self, written: Awaitable[None] | None) -> bool:
        """Wait for the commit an attempt's mail waited for (group_commit); False if it failed:
        the mail is not ours to record (its submitter heard why)."""
        if written is None:
            return True
        try:
            await written
        except FluxError as exc:
            log.warning("a mail went out but could not be stored: %s", exc)
            return False
        return True

    def _backoff(self, mail: OutboxMail) -> int:
        return self.now() + int(min(RETRY_MAX, RETRY_BASE * 2 ** mail.attempts))

    def _retry(self, mail: OutboxMail, detail: str, envelope: bytes | None = None,
               state: OutboxState | None = None) -> None:
        # The store refuses the move if, while the attempt awaited the network, a receipt marked
        # the mail delivered or the user deleted it: the attempt's outcome must not overwrite that.
        if state is None:   # a mail sealed at last stops waiting for its key
            state = S.QUEUED if mail.state == S.WAITING_FOR_KEY else S(mail.state)
        self.store.set_outbox_state(mail.uuid, state, self.now(), detail,
                                    next_attempt_at=self._backoff(mail), envelope=envelope,
                                    attempted=True)

    async def attempt(self, mail: OutboxMail, written: Awaitable[None] | None = None) -> None:
        envelope = mail.envelope or await self._seal(mail, written)
        if envelope is None:
            return
        relayed = await self.relay(envelope, mail.recipient) \
            if self.relay and self._relay_first(mail.recipient) else None
        if relayed is None:   # no known relay, or it failed: look the recipient up
            peer = await self.overlay.find_contact(mail.recipient)
            if peer is not None and await self._deliver_direct(peer, envelope):
                if await self._on_disk(written):
                    self._progress(mail, S.HANDED_OVER,
                                   f"handed over to {short_id(mail.recipient)}", envelope)
                return
            relayed = await self.relay(envelope, mail.recipient) if self.relay else None
        if not await self._on_disk(written):
            return
        if relayed is not None:
            how, relay = relayed
            state, detail = (S.HANDED_OVER, "handed over") if how == "forwarded" else \
                (S.STORED, "held")
            self._progress(mail, state, f"{detail} through relay {short_id(relay)}", envelope,
                           None if how == "forwarded" else 1)
            return
        stored = await self.replicate(envelope, mail.recipient)
        if stored:
            self._progress(mail, S.STORED, f"stored on {stored} nodes", envelope, stored)
        else:
            self._retry(mail, "recipient unreachable and no node took the mail", envelope)

    def _relay_first(self, recipient: bytes) -> bool:
        """Not linked to the recipient, but we hold its relay record: the relay comes first."""
        return recipient not in self.net.links and self.relay_known(recipient)

    def _progress(self, mail: OutboxMail, state: OutboxState, detail: str, envelope: bytes,
                  stored_on: int | None = None) -> None:
        self._record([(mail, self._move(mail, state, detail, envelope, stored_on))])

    def _record(self, moves: list[tuple[OutboxMail, OutboxMove]]) -> None:
        """Write the outcome of attempts; a receipt handed over waits for company (later_moves)."""
        now_moves = []
        for mail, move in moves:
            if mail.kind == "receipt" and move.state == S.HANDED_OVER:
                self.later.add(move)
            else:
                now_moves.append(move)
        self.store.move_all(now_moves, self.now())

    def _move(self, mail: OutboxMail, state: OutboxState, detail: str, envelope: bytes,
              stored_on: int | None = None) -> OutboxMove:
        # A receipt needs no receipt: once handed over or stored, it is on its way for good.
        again = mail.expires_at if mail.kind == "receipt" else self._backoff(mail)
        # If the receipt beat our own bookkeeping, still keep what was sent (`status` shows
        # its protection).
        # The envelope is written once: a receipt's row has it from the start.
        return OutboxMove(mail.uuid, state, detail, stored_on=stored_on, next_attempt_at=again,
                          envelope=None if mail.envelope == envelope else envelope,
                          attempted=True, keep_envelope=True)

    async def attempt_burst(self, burst: list[OutboxMail],
                            written: Awaitable[None] | None = None) -> None:
        """Several mails to one recipient: sealed, handed over in DeliverMany requests, and
        their progress committed together; what the recipient did not take goes the
        one-mail way (relays, storers)."""
        unsealed = [mail for mail in burst if mail.envelope is None]
        fresh = iter(await self._seal_all(unsealed, written) or ())
        sealed = [(mail, envelope) for mail in burst
                  if (envelope := mail.envelope or next(fresh, None)) is not None]
        if not sealed:
            return
        recipient = sealed[0][0].recipient
        peer = None if self._relay_first(recipient) else await self.overlay.find_contact(recipient)
        taken = await self._deliver_many(peer, [envelope for _, envelope in sealed]) \
            if peer is not None else [False] * len(sealed)
        if not await self._on_disk(written):
            return
        detail = f"handed over to {short_id(recipient)}"
        self._record([(mail, self._move(mail, S.HANDED_OVER, detail, envelope))
                      for (mail, envelope), ok in zip(sealed, taken, strict=True) if ok])
        # The rest goes the one-mail way, a few at a time: as many lookups and stores in
        # flight as the one-mail attempts of the whole worker used to have, not a burst's worth.
        slots = asyncio.Semaphore(FALLBACK_AT_ONCE)

        async def one(mail: OutboxMail) -> None:
            async with slots:
                await self.attempt(mail)

        await settle((one(dataclasses.replace(mail, envelope=envelope))
                      for (mail, envelope), ok in zip(sealed, taken, strict=True) if not ok),
                     "delivering mail")

    async def _seal(self, mail: OutboxMail, written: Awaitable[None] | None = None
                    ) -> bytes | None:
        envelopes = await self._seal_all([mail], written)
        return envelopes[0] if envelopes else None

    async def _seal_all(self, mails: list[OutboxMail], written: Awaitable[None] | None = None
                        ) -> list[bytes] | None:
        """Envelopes for mails to one recipient; None (each mail waiting for the key) if its
        key was not found."""
        sealed = await seal_all(mails, self.me, self.overlay, self.keyring,
                                self.config.display_name)
        if sealed is None and await self._on_disk(written):   # keep trying until expiry
            for mail in mails:
                self._retry(mail, "the recipient's key was not found; trying again later",
                            state=S.WAITING_FOR_KEY)
        return sealed

    async def _deliver_many(self, peer: Peer, envelopes: list[bytes]) -> list[bool]:
        return await self.courier.deliver_many(peer, envelopes)

    async def _deliver_direct(self, peer: Peer, envelope: bytes) -> bool:
        return await self.courier.deliver(peer, envelope)

    async def replicate(self, envelope: bytes, recipient: bytes,
                        closest: list[Peer] | None = None) -> int:
        """See Courier.replicate."""
        return await self.courier.replicate(envelope, recipient, closest)

    async def store_on(self, peers: list[Peer], envelope: bytes) -> list[bool]:
        """See Courier.store_on."""
        return await self.courier.store_on(peers, envelope)
