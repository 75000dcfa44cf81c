"""Task ownership: every failure logged once, bugs told apart from peers' doing, nothing outlives
its owner; and a bug in a lookup query never costs the peer its place in the routing table."""

from __future__ import annotations

import asyncio
import os
import unittest

from fluxchat.errors import FluxError
from fluxchat.routing import MAX_FAILURES
from fluxchat.tasks import Background, Bug, settle
from tests.lab import NodeTestCase


async def boom() -> None:
    raise TypeError("our bug")


async def refused() -> None:
    raise FluxError("the peer said no")


async def forever() -> None:
    await asyncio.Event().wait()


async def answer() -> int:
    return 42


class BackgroundTest(unittest.IsolatedAsyncioTestCase):
    async def test_each_failure_is_logged_once_and_close_cancels_the_rest(self) -> None:
        jobs = Background("test job")
        with self.assertLogs("fluxchat.tasks", "INFO") as logs:
            bug, flux, ok = jobs.spawn(boom()), jobs.spawn(refused()), jobs.spawn(answer())
            waiting = jobs.spawn(forever())
            await asyncio.wait([bug, flux, ok])
            await jobs.close()
        self.assertTrue(waiting.cancelled())
        self.assertEqual(len(jobs), 0)
        self.assertEqual(len(logs.records), 2)   # the bug and the refusal; not the answer, not the cancel
        bug_record = next(r for r in logs.records if r.levelname == "ERROR")
        self.assertIn("bug in test job", bug_record.getMessage())
        self.assertIsNotNone(bug_record.exc_info)
        self.assertTrue(any("the peer said no" in r.getMessage() for r in logs.records if r.levelname == "INFO"))


class SettleTest(unittest.IsolatedAsyncioTestCase):
    async def test_results_peer_errors_and_bugs_apart(self) -> None:
        cancelled = asyncio.ensure_future(forever())
        cancelled.cancel()
        with self.assertLogs("fluxchat.tasks", "ERROR") as logs:
            outcomes = await settle([answer(), refused(), boom(), cancelled], "testing")
        self.assertEqual(outcomes[0], 42)
        self.assertIsInstance(outcomes[1], FluxError)
        self.assertNotIsInstance(outcomes[1], Bug)
        self.assertIsInstance(outcomes[2], Bug)
        self.assertIsInstance(outcomes[3], FluxError)
        self.assertEqual(len(logs.records), 1)

    async def test_at_once_bounds_the_jobs_running_together(self) -> None:
        running, most = 0, 0

        async def job(index: int) -> int:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1
            if index == 3:
                raise FluxError("refused")
            return index

        outcomes = await settle((job(i) for i in range(20)), "testing", at_once=4)
        self.assertEqual(most, 4)
        self.assertEqual([o for i, o in enumerate(outcomes) if i != 3], [i for i in range(20) if i != 3])
        self.assertIsInstance(outcomes[3], FluxError)


class LookupBugTest(NodeTestCase):
    async def test_a_bug_in_a_query_does_not_evict_the_peer(self) -> None:
        a, b = await self.chain(2)
        self.assertIn(b.identity.node_id, a.overlay.table)

        async def broken_query(*_: object) -> None:
            raise TypeError("a bug of ours")
        a.overlay._query = broken_query  # type: ignore[method-assign]  # inject our own fault
        with self.assertLogs("fluxchat.overlay", "ERROR") as logs:
            for _ in range(MAX_FAILURES + 1):
                await a.overlay.find_node(os.urandom(32))
        self.assertIn(b.identity.node_id, a.overlay.table)
        self.assertIn("bug in a lookup query", logs.records[0].getMessage())


if __name__ == "__main__":
    unittest.main()
