"""A node's upkeep, every minute: expired mail and uuids out, memory back after mail work
(and sooner, once the work has stopped for a few seconds), stale buckets refreshed, our key
and mail key record republished now and then, and held mail pushed to nodes new to its
recipient's replica set (replication.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .mailer import CLOCK_SKEW, Mailer
from .mailkeyring import MailKeyring
from .mailroom import Mailroom
from .overlay import Overlay
from .process_env import return_free_heap
from .replication import Replication
from .store import Store

log = logging.getLogger("fluxchat.node")
UPKEEP_INTERVAL = 60.0
REREPLICATE_MIN = 300.0   # seconds between pushes of held mail after routing changes
# Seconds between looks at the mail work: memory goes back 2-4 s after the work stopped.
QUIET_CHECK = 2.0


class Upkeep:
    def __init__(self, store: Store, overlay: Overlay, mailer: Mailer, mailroom: Mailroom,
                 keyring: MailKeyring, replication: Replication, republish_interval: float,
                 clock: Callable[[], float], started_at: float) -> None:
        self.store, self.overlay, self.mailer, self.mailroom = store, overlay, mailer, mailroom
        self.keyring, self.replication = keyring, replication
        self.republish_interval, self.clock = republish_interval, clock
        self.last_publish = started_at   # the join publishes first
        self.last_replication = started_at
        self._work_released = 0   # _mail_work() when memory was last given back
        self._work_seen = 0       # _mail_work() at the last release_if_quiet
        self.releases = 0         # times memory was given back (for tests)

    async def run(self) -> None:
        moment = self.clock()
        now = int(moment)
        self.store.expire_held(now)
        # Mail older than the retention window is refused by its date anyway; its uuid is
        # kept twice that long, then forgotten, so the table does not grow forever.
        self.store.forget_seen_before(now - 2 * self.mailer.retention - CLOCK_SKEW)
        self.store.checkpoint()   # deleted rows leave the write-ahead log too
        # What mail work filled (SQLite's page cache, freed buffers) goes back to the system
        # at the next upkeep at the latest (release_if_quiet gives it back sooner), instead of
        # staying resident until the process ends; a node that did none keeps its cache.
        self._release_after_work()
        self.overlay.expire_keys()
        fresh_record = self.keyring.upkeep() is not None
        await self.overlay.refresh()
        self.overlay.save()
        if fresh_record:   # published at once: the old record stays valid a while longer
            await self.keyring.publish()
        if moment - self.last_publish >= self.republish_interval:
            self.last_publish = moment
            await self.overlay.publish_key()
            await self.keyring.publish()
            await self.replicate_held(moment, lookup=True)
        elif self.overlay.membership_changed and \
                moment - self.last_replication >= REREPLICATE_MIN:
            # Nodes came or went: copies of held mail may now belong on other nodes.
            await self.replicate_held(moment, lookup=False)

    async def release_if_quiet(self) -> None:
        """Every QUIET_CHECK seconds: once mail work has stopped (none since the last look),
        what it filled goes back to the system now, not up to a minute later. A node under
        steady mail never looks quiet here and pays nothing; its upkeep gives back instead."""
        work = self._mail_work()
        if work == self._work_seen:
            self._release_after_work()
        self._work_seen = work

    def _release_after_work(self) -> None:
        """SQLite's page cache and the heap's free pages back to the system, if mail work
        was done since they last went back."""
        work = self._mail_work()
        if work != self._work_released:
            self._work_released = work
            self.releases += 1
            self.store.release_memory()
            return_free_heap()

    def _mail_work(self) -> int:
        """Envelopes from peers looked at, and groups of our own mail committed, since start."""
        return self.mailroom.intake.headers_read + self.mailer.submits.commits

    async def replicate_held(self, moment: float, lookup: bool) -> None:
        """Held mail to the members new to its recipient's replica set (replication.py):
        read from our table after membership changes, from lookups once per interval."""
        self.overlay.membership_changed = False
        self.last_replication = moment
        if self.store.held_stats()[0]:
            pushed = await self.replication.push(lookup)
            if pushed:
                log.info("held mail: %d copies stored on nodes new to replica sets", pushed)
