"""The outbox worker's wake-ups: the end of an attempt looks at the outbox again only when mail
was left behind for want of a slot (real store, attempts that wait for the test)."""

from __future__ import annotations

import asyncio
import tempfile
import unittest
from collections.abc import Awaitable
from pathlib import Path

from fluxchat.outbox_states import OutboxState
from fluxchat.outbox_worker import PER_RECIPIENT, OutboxWorker
from fluxchat.store import OutboxMail, Store

NOW = 100
RECIPIENT = bytes([2]) * 32


def mail(n: int) -> OutboxMail:
    return OutboxMail(n.to_bytes(16, "big"), RECIPIENT, f"s{n}", f"b{n}", NOW, NOW + 1000)


class WorkerWakeTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.store = Store.open(Path(directory.name) / "db.sqlite")
        self.addCleanup(self.store.close)
        self.started: list[bytes] = []
        self.finish: dict[bytes, asyncio.Future[None]] = {}
        self.reads = 0
        due_outbox = self.store.due_outbox

        def counted(*args: object, **kwargs: object) -> list[OutboxMail]:
            self.reads += 1
            return due_outbox(*args, **kwargs)  # type: ignore[arg-type]

        self.store.due_outbox = counted  # type: ignore[method-assign]
        self.worker = OutboxWorker(self.store, lambda: NOW, self.attempt, lambda mail: None,
                                   lambda recipient: True)
        self.loop_task = asyncio.create_task(self.worker.run())
        self.addAsyncCleanup(self.stop)
        await asyncio.sleep(0.05)   # the worker's first look: nothing due

    async def stop(self) -> None:
        self.loop_task.cancel()
        await self.worker.tasks.close()

    async def attempt(self, burst: list[OutboxMail], written: Awaitable[None] | None) -> None:
        """Waits until the test finishes it, then records the mail delivered."""
        for item in burst:
            self.started.append(item.uuid)
            self.finish[item.uuid] = asyncio.get_running_loop().create_future()
        for item in burst:
            await self.finish[item.uuid]
            self.store.set_outbox_state(item.uuid, OutboxState.DELIVERED, NOW, "test")

    def submit(self, n: int) -> None:
        """As a group commit does: the mail is committed, then started from memory."""
        self.store.add_outbox(mail(n), NOW)
        self.worker.start_now([mail(n)])

    async def test_mail_left_behind_starts_as_soon_as_a_slot_frees(self) -> None:
        for n in range(PER_RECIPIENT + 1):
            self.submit(n)
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        self.assertEqual(len(self.started), PER_RECIPIENT)   # the last one waits for a slot
        self.finish[mail(0).uuid].set_result(None)
        await asyncio.sleep(0.1)   # well within the loop's 1 s timer
        self.assertIn(mail(PER_RECIPIENT).uuid, self.started)

    async def test_a_lone_attempt_ends_without_a_read_of_the_outbox(self) -> None:
        reads = self.reads
        self.submit(1)
        await asyncio.sleep(0.02)
        self.assertEqual(self.started, [mail(1).uuid])
        self.finish[mail(1).uuid].set_result(None)
        await asyncio.sleep(0.1)
        self.assertEqual(self.reads, reads)


if __name__ == "__main__":
    unittest.main()
