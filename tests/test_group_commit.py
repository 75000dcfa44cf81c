"""Group commits of submitted mail, and delivery attempts started straight from a submit, on
real nodes over real TLS links with real SQLite: callers hear back only after the commit that
holds their mail, mails sent together share a commit, mail to a linked recipient goes without
the outbox worker ever reading it, and mail arrives in the order it was sent."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import unittest
import uuid as uuidlib
from pathlib import Path
from typing import Any

from fluxchat import later_moves
from fluxchat import messages as m
from fluxchat.errors import FluxError, StorageError
from fluxchat.group_commit import GroupCommit
from fluxchat.mailer import BURST, GROUP_LIMIT, receipt_uuid
from fluxchat.node import DB_FILE, Node
from fluxchat.sqldb import open_database
from fluxchat.store import OutboxMail, Store
from fluxchat.store_batch import OutboxMove
from tests.keys import identity
from tests.lab import NodeTestCase, ProcessNode, eventually
from tests.test_deliver_many import count_requests
from tests.test_faults import LabTest, uuid_text

OFFLINE = identity(7).node_id   # a node that never runs: its key is never found


def worker_reads(node: Node) -> set[bytes]:
    """Records the uuid of every mail the outbox worker reads from the store."""
    assert node.store is not None
    seen: set[bytes] = set()
    due_outbox = node.store.due_outbox

    def recorded(*args: object, **kwargs: object) -> list[OutboxMail]:
        rows = due_outbox(*args, **kwargs)   # type: ignore[arg-type]
        seen.update(row.uuid for row in rows)
        return rows

    node.store.due_outbox = recorded   # type: ignore[method-assign]
    return seen


def delivered(node: Node, uuids: list[bytes]) -> bool:
    assert node.store is not None
    return all((mail := node.store.get_outbox(u)) is not None and mail.state == "delivered"
               for u in uuids)


class GroupCommitTest(NodeTestCase):
    async def test_mails_sent_together_share_one_commit(self) -> None:
        (a,) = await self.chain(1)
        before = a.mailer.submits.commits
        mails = await asyncio.gather(*(a.mailer.send(OFFLINE, f"s{i}", "b") for i in range(10)))
        self.assertEqual(a.mailer.submits.commits, before + 1)
        assert a.store is not None
        self.assertTrue(all(a.store.get_outbox(mail.uuid) is not None for mail in mails))

    async def test_a_caller_hears_back_only_once_its_mail_is_committed(self) -> None:
        (a,) = await self.chain(1)
        # A second connection sees only committed rows: what a restart would find.
        other = open_database(a.config.data_dir / DB_FILE, a.storage_key)
        self.addCleanup(other.close)

        async def send_and_look(i: int) -> bool:
            mail = await a.mailer.send(OFFLINE, f"look {i}", "b")
            return other.execute("SELECT 1 FROM outbox WHERE uuid = ?",
                                 (mail.uuid,)).fetchone() is not None

        self.assertEqual(await asyncio.gather(*(send_and_look(i) for i in range(20))),
                         [True] * 20)

    async def test_a_backlog_goes_in_groups_of_at_most_the_limit(self) -> None:
        (a,) = await self.chain(1)
        before = a.mailer.submits.commits
        await asyncio.gather(*(a.mailer.send(OFFLINE, "s", "b") for _ in range(GROUP_LIMIT + 1)))
        self.assertEqual(a.mailer.submits.commits, before + 2)

    async def test_a_mail_that_cannot_be_written_fails_alone(self) -> None:
        (a,) = await self.chain(1)
        taken = await a.mailer.send(OFFLINE, "first", "b")
        again = a.mailer.submits.add(taken)   # the same uuid twice: refused by the database
        fresh = asyncio.ensure_future(a.mailer.send(OFFLINE, "second", "b"))
        with self.assertRaises(StorageError):
            await again
        self.assertIsNotNone(a.store and a.store.get_outbox((await fresh).uuid))


class FailedTransactionTest(unittest.IsolatedAsyncioTestCase):
    async def test_a_failed_transaction_fails_every_caller(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store.open(Path(tmp) / "s.db")
            after: list[list[OutboxMail]] = []
            group: GroupCommit[OutboxMail] = GroupCommit(
                lambda mails: store.add_outbox_all(mails, 0), after.append, 8)
            store.close()   # every write now fails
            now = int(time.time())
            futures = [group.add(OutboxMail(uuidlib.uuid4().bytes, OFFLINE, "s", "b", now,
                                            now + 60)) for _ in range(3)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            self.assertTrue(all(isinstance(o, StorageError) for o in outcomes), outcomes)
            self.assertEqual(after, [])   # nothing committed: nothing attempted


class AttemptFromSubmitTest(NodeTestCase):
    async def test_mail_to_a_linked_recipient_goes_without_the_outbox_worker(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        read = worker_reads(a)
        mail = await a.mailer.send(b.identity.node_id, "now", "straight from the submit")
        await eventually(lambda: delivered(a, [mail.uuid]))
        self.assertNotIn(mail.uuid, read)
        assert b.store is not None
        got = b.store.read_inbox(mail.uuid)
        self.assertEqual((got and got.body), "straight from the submit")

    async def test_the_envelope_leaves_while_its_commit_is_under_way(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        assert a.store is not None
        order: list[str] = []
        store, courier = a.store, a.mailer.courier
        add_all, move_all, deliver = store.add_outbox_all, store.move_all, courier.deliver

        def adding(*args: Any) -> Any:
            order.append("commit")
            return add_all(*args)

        def moving(moves: Any, now: int) -> Any:
            order.extend(["record"] if moves else [])
            return move_all(moves, now)

        async def delivering(*args: Any) -> Any:
            order.append("send")
            return await deliver(*args)

        store.add_outbox_all = adding   # type: ignore[method-assign]
        store.move_all = moving   # type: ignore[method-assign]
        courier.deliver = delivering   # type: ignore[method-assign]
        mail = await a.mailer.send(b.identity.node_id, "now", "while it is written")
        await eventually(lambda: delivered(a, [mail.uuid]))
        self.assertEqual(order, ["send", "commit", "record"])

    async def test_a_mail_whose_commit_failed_is_not_recorded(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        assert a.store is not None and b.store is not None
        a.store._db.execute("PRAGMA query_only = ON")   # every write now fails
        with self.assertLogs("fluxchat.mail", "WARNING") as logs:
            with self.assertRaises(StorageError):
                await a.mailer.send(b.identity.node_id, "lost?", "went out all the same")
            # It left before the commit failed, as an answer lost in a crash would have.
            await eventually(lambda: b.store and b.store.count_inbox()[0] == 1)
            await eventually(lambda: any("could not be stored" in line for line in logs.output))
        a.store._db.execute("PRAGMA query_only = OFF")
        self.assertEqual(a.store.list_outbox(10, 0), (0, []))

    async def test_without_a_link_the_outbox_worker_takes_the_mail(self) -> None:
        (a,) = await self.chain(1)
        read = worker_reads(a)
        mail = await a.mailer.send(OFFLINE, "later", "nobody is linked")
        await eventually(lambda: mail.uuid in read)
        assert a.store is not None
        await eventually(lambda: (got := a.store.get_outbox(mail.uuid)) is not None
                         and got.state == "waiting_for_key", 10)

    async def test_mail_arrives_in_the_order_it_was_sent(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        to_b = b.identity.node_id
        at_once = await asyncio.gather(*(a.mailer.send(to_b, f"burst {i}", "b")
                                         for i in range(3 * BURST + 5)))
        one_by_one = [await a.mailer.send(to_b, f"single {i}", "b") for i in range(5)]
        sent = [mail.uuid for mail in [*at_once, *one_by_one]]
        await eventually(lambda: delivered(a, sent), 60)
        assert b.store is not None
        arrived = [row[0] for row in b.store._rows("SELECT uuid FROM inbox ORDER BY rowid")]
        self.maxDiff = None
        self.assertEqual([sent.index(u) for u in arrived], list(range(len(sent))))


class ReceiptBookkeepingTest(NodeTestCase):
    async def test_a_receipt_handed_over_is_marked_later_and_sent_once(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        to_a = count_requests(a)
        assert b.store is not None
        store = b.store
        # How each move handed to b's LaterMoves finds its row: it waits only DELAY (0.2 s),
        # which a poll from here can miss under load.
        waiting: dict[bytes, tuple[bool, str | None]] = {}
        add = b.mailer.later.add

        def watched_add(move: OutboxMove) -> None:
            add(move)
            row = store.get_outbox(move.uuid)
            waiting[move.uuid] = (move.uuid in b.mailer.worker.slots.settling,
                                  None if row is None else row.state)

        b.mailer.later.add = watched_add   # type: ignore[method-assign]
        mail = await a.mailer.send(b.identity.node_id, "hello", "one receipt please")
        await eventually(lambda: delivered(a, [mail.uuid]))
        receipt = receipt_uuid(mail.uuid)
        await eventually(lambda: receipt in waiting)
        settling, state = waiting[receipt]
        self.assertTrue(settling)   # written later, and kept from being sent again meanwhile
        self.assertNotEqual(state, "handed_over")
        await eventually(lambda: (row := store.get_outbox(receipt)) is not None
                         and row.state == "handed_over")
        self.assertEqual(b.mailer.worker.slots.settling, set())
        await asyncio.sleep(2 * later_moves.DELAY)
        self.assertEqual(to_a[m.Deliver] + to_a[m.DeliverMany], 1)

    async def test_a_stopping_node_writes_what_waited(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        mail = await a.mailer.send(b.identity.node_id, "hello", "and goodbye")
        await eventually(lambda: delivered(a, [mail.uuid]))
        self.assertEqual(len(b.mailer.later), 1)
        await self.labs[1].stop()
        store = Store.open(b.config.data_dir / DB_FILE, b.storage_key)
        self.addCleanup(store.close)
        row = store.get_outbox(receipt_uuid(mail.uuid))
        self.assertEqual(row and row.state, "handed_over")


CLIENTS = 8   # local API connections sending at once, so their mails share commits


def send_until_stopped(node: ProcessNode, client: int, acknowledged: list[str],
                       stop: threading.Event) -> None:
    """One local API client sending mail after mail; records each uuid the node acknowledged,
    until the node dies under it."""
    to = identity(7).id_text
    try:
        with node.client() as api:
            for i in range(10_000):
                if stop.is_set():
                    return
                reply = api.call("mail", {"to": to, "subject": f"c{client} m{i}", "body": "x"})
                acknowledged.append(reply["uuid"])
    except (FluxError, OSError):   # the node was killed mid-request: that mail was not acknowledged
        return


class SenderKilledMidGroupTest(LabTest):
    async def test_no_acknowledged_mail_is_lost(self) -> None:
        sender = ProcessNode(self.dir, 14, [])
        self.addCleanup(sender.kill)
        await asyncio.to_thread(sender.start)
        acknowledged: list[str] = []
        stop = threading.Event()
        clients = [threading.Thread(target=send_until_stopped, args=(sender, i, acknowledged, stop))
                   for i in range(CLIENTS)]
        for thread in clients:
            thread.start()
        try:
            await eventually(lambda: len(acknowledged) >= 300, 30, interval=0.001)
            await asyncio.to_thread(sender.kill)   # SIGKILL while the clients keep sending
        finally:
            stop.set()
            for thread in clients:
                await asyncio.to_thread(thread.join, 10)
        store = sender.open_store()
        try:
            _, rows = store.list_outbox(100_000, 0)
        finally:
            store.close()
        on_disk = {uuid_text(row.uuid) for row in rows}
        self.assertLessEqual(set(acknowledged), on_disk)
        # Committed but never acknowledged (the crash came between commit and answer) is
        # allowed; a row nobody sent is not.
        self.assertTrue(all(row.subject.startswith("c") for row in rows))


if __name__ == "__main__":
    unittest.main()
