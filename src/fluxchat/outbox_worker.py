"""The outbox worker: starts delivery attempts on due mail, a burst per recipient at a time.

Attempts start from two places: the worker's loop, which reads due mail from the store (every
retry, mail whose recipient had no link, whatever a submit could not start), and `start_now`,
called right after a group of submits was committed, which starts mail to linked recipients
from memory. Both take their slots from one AttemptSlots, so a mail never has two attempts.
What an attempt does is the mailer's (`attempt`); the worker only schedules.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .attempt_slots import AttemptSlots
from .errors import FluxError
from .store import OutboxMail, Store
from .tasks import Background
from .uuids import uuid_text

log = logging.getLogger("fluxchat.mail")
WORKERS = 16              # outbox attempts in flight at once
BURST = 64                # mails to one recipient handed over in one attempt (DeliverMany)
# Attempts in flight to one recipient: two keep it busy (it opens one burst while the next
# is on its way) without queueing so much that its answers come late.
PER_RECIPIENT = 2
DUE_BURSTS = 4            # bursts' worth of due mail read per look at the outbox
EXPIRY_INTERVAL = 10      # seconds between scans for expired outbox mail


class OutboxWorker:
    def __init__(self, store: Store, now: Callable[[], int],
                 attempt: Callable[[list[OutboxMail]], Awaitable[None]],
                 failed: Callable[[OutboxMail], None], linked: Callable[[bytes], bool]) -> None:
        """`attempt`: delivers a burst to one recipient; `failed`: schedules a retry of a mail
        whose attempt hit a bug; `linked`: whether we hold a link to a recipient."""
        self.store, self.now, self.attempt, self.failed, self.linked = (
            store, now, attempt, failed, linked)
        self.wake = asyncio.Event()
        self.slots = AttemptSlots(WORKERS, PER_RECIPIENT)
        self.tasks = Background("mail task")
        self._next_expiry = 0

    async def run(self) -> None:
        while True:
            self.wake.clear()
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
            return
        # Mail being worked on stays due until its attempt has committed: skip it, and the
        # recipients that may get no further attempt now. A few bursts' worth per look.
        due = self.store.due_outbox(now, min(room, DUE_BURSTS) * BURST, exclude=self.slots.taken(),
                                    skip_recipients=self.slots.full())
        self._start(due)

    def start_now(self, mails: list[OutboxMail]) -> None:
        """Mail just committed: attempted at once if a link to its recipient is open and a slot
        is free (no look at the store); the worker's loop takes the rest."""
        linked = [mail for mail in mails if self.linked(mail.recipient)]
        if self._start(linked) < len(mails):
            self.wake.set()

    def _start(self, due: list[OutboxMail]) -> int:
        """Start as many bursts of `due` as the slots allow; how many mails they hold."""
        started = 0
        for burst in self.slots.plan(due, lambda mail: mail.recipient, lambda mail: mail.uuid,
                                     BURST):
            self.tasks.spawn(self._guarded(burst))
            started += len(burst)
        return started

    async def _guarded(self, burst: list[OutboxMail]) -> None:
        try:
            await self.attempt(burst)
        except Exception:   # one mail's trouble must not stop the worker
            log.exception("delivery attempt for %s failed", uuid_text(burst[0].uuid))
            for mail in burst:
                self.failed(mail)
        finally:
            self.slots.release(burst[0].recipient, (mail.uuid for mail in burst))
            self.wake.set()
