"""The outbox worker: starts delivery attempts on due mail, a burst per recipient at a time.

Attempts start from two places: the worker's loop, which reads due mail from the store (every
retry, mail whose recipient had no link, whatever a submit could not start), and `start_now`,
called right after a group of submits was committed, which starts mail to linked recipients
from memory. Both take their slots from one AttemptSlots, so a mail never has two attempts.
What an attempt does is the mailer's (`attempt`); the worker only schedules.

Mail to one recipient is handed over in the order it was submitted: once committed mail to a
recipient was left to the loop (no slot was free), later mail to it is left there too, until
a read of the due mail found none of it left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .attempt_slots import AttemptSlots
from .errors import FluxError
from .outbox_states import OutboxState as S
from .store import OutboxMail, Store
from .tasks import Background
from .uuids import uuid_text

log = logging.getLogger("fluxchat.mail")
Attempt = Callable[[list[OutboxMail], Awaitable[None] | None], Awaitable[None]]
WORKERS = 16              # outbox attempts in flight at once
BURST = 64                # mails to one recipient handed over in one attempt (DeliverMany)
# Attempts in flight to one recipient: two keep it busy (it opens one burst while the next
# is on its way) without queueing so much that its answers come late.
PER_RECIPIENT = 2
DUE_BURSTS = 4            # bursts' worth of due mail read per look at the outbox
EXPIRY_INTERVAL = 10      # seconds between scans for expired outbox mail


class OutboxWorker:
    def __init__(self, store: Store, now: Callable[[], int],
                 attempt: Attempt,
                 failed: Callable[[OutboxMail], None], linked: Callable[[bytes], bool]) -> None:
        """`attempt`: delivers a burst to one recipient (given the commit its mail waits for,
        if any, see start_linked); `failed`: schedules a retry of a mail
        whose attempt hit a bug; `linked`: whether we hold a link to a recipient."""
        self.store, self.now, self.attempt, self.failed, self.linked = (
            store, now, attempt, failed, linked)
        self.wake = asyncio.Event()
        self.slots = AttemptSlots(WORKERS, PER_RECIPIENT)
        self.tasks = Background("mail task")
        self._next_expiry = 0
        self._queued_for: set[bytes] = set()   # recipients with mail left to the loop
        # Whether mail was left unstarted for want of a slot since the last look: only then
        # does the end of an attempt wake the loop (a look costs a read of the outbox, which
        # would find nothing after most attempts on mail received or sent one at a time).
        self._held_back = False

    # ----- hurrying mail along when the network changes -----------------------------------

    def link_opened(self, peer_id: bytes, links_open: int) -> None:
        """A link to `peer_id` is up: its mail goes now instead of after its backoff. With our first
        link (the network is back) mail that is queued or waiting for a key goes now too."""
        hurried = self.store.hurry_outbox(peer_id)
        if links_open <= 1:
            hurried += self.store.hurry_outbox(states=frozenset({S.QUEUED, S.WAITING_FOR_KEY}))
        if hurried:
            self.wake.set()

    def key_appeared(self, node_id: bytes) -> None:
        """`node_id`'s key reached us (published to us or proven on a link): mail waiting for it goes."""
        if self.store.hurry_outbox(node_id, frozenset({S.WAITING_FOR_KEY})):
            self.wake.set()

    # ----- starting attempts ----------------------------------------------------------------

    async def run(self) -> None:
        while True:
            self.wake.clear()
            self._held_back = False   # this look sets it again if it leaves mail behind
            try:
                self._start_due()
            except FluxError as exc:   # e.g. the disk is full: say so, try again shortly
                log.error("outbox: %s", exc)
            # Not wait_for: on 3.11 it swallows a cancel that comes as the wake-up fires,
            # and this loop would then outlive the node's stop.
            try:
                async with asyncio.timeout(1.0):
                    await self.wake.wait()
            except TimeoutError:
                pass

    def _start_due(self) -> None:
        now = self.now()
        if now >= self._next_expiry:   # a scan of the outbox: not at every wake-up
            self._next_expiry = now + EXPIRY_INTERVAL
            for expired in self.store.expire_outbox(now):
                log.info("mail %s expired undelivered", uuid_text(expired))
        room = self.slots.room()
        if room <= 0:   # every attempt slot is taken: no need to look
            self._held_back = True
            return
        # Mail being worked on stays due until its attempt has committed: skip it, and the
        # recipients that may get no further attempt now. A few bursts' worth per look.
        limit, full = min(room, DUE_BURSTS) * BURST, self.slots.full()
        due = self.store.due_outbox(now, limit, exclude=self.slots.taken(), skip_recipients=full)
        self._start(due)
        if full or len(due) >= limit or any(mail.uuid not in self.slots.busy for mail in due):
            self._held_back = True
        if len(due) < limit:   # all due mail was read: whoever has none left may go first again
            left = {mail.recipient for mail in due if mail.uuid not in self.slots.busy}
            self._queued_for = {r for r in self._queued_for if r in left or r in full}

    def start_now(self, mails: list[OutboxMail]) -> None:
        """Mail just committed: attempted at once if a link to its recipient is open and a slot
        is free (no look at the store); the worker's loop takes the rest. It is woken only for
        recipients with a free slot: the end of an attempt wakes it for the others (a read now
        would skip them, walking all their due mail to do so)."""
        mails = [mail for mail in mails if mail.uuid not in self.slots.busy]
        self.start_linked(mails)
        left = [mail for mail in mails if mail.uuid not in self.slots.busy]
        if any(self.slots.room_for(mail.recipient) > 0 for mail in left):
            self.wake.set()
        elif left:
            self._held_back = True

    def start_linked(self, mails: list[OutboxMail], written: Awaitable[None] | None = None
                     ) -> int:
        """Attempts on mail to linked recipients, as far as slots allow; how many mails they
        hold. `written`: the commit the mail is still waiting for (the attempt sends before
        it is done, and records its outcome after)."""
        ready = [mail for mail in mails
                 if mail.recipient not in self._queued_for and self.linked(mail.recipient)]
        started = self._start(ready, written)
        self._queued_for.update(mail.recipient for mail in mails
                                if mail.uuid not in self.slots.busy)
        return started

    def _start(self, due: list[OutboxMail], written: Awaitable[None] | None = None) -> int:
        """Start as many bursts of `due` as the slots allow; how many mails they hold."""
        started = 0
        for burst in self.slots.plan(due, lambda mail: mail.recipient, lambda mail: mail.uuid,
                                     BURST):
            self.tasks.spawn(self._guarded(burst, written))
            started += len(burst)
        return started

    async def _guarded(self, burst: list[OutboxMail], written: Awaitable[None] | None) -> None:
        try:
            await self.attempt(burst, written)
        except Exception:   # one mail's trouble must not stop the worker
            log.exception("delivery attempt for %s failed", uuid_text(burst[0].uuid))
            for mail in burst:
                self.failed(mail)
        finally:
            self.slots.release(burst[0].recipient, (mail.uuid for mail in burst))
            if self._held_back:
                self.wake.set()
