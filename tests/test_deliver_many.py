"""DeliverMany over real TLS links: a burst of mail in few frames and one commit, an
outcome per envelope, the peer's budget kept, and nothing acknowledged before the commit."""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import sys
import time
import unittest
from typing import Any

from fluxchat import messages as m
from fluxchat.envelope import MAX_RECEIPT_REFS, MailContent, _content_problem
from fluxchat.errors import StorageError
from fluxchat.link import Link
from fluxchat.mail_limits import PRIVATE_OPS_BURST, PRIVATE_OPS_RATE
from fluxchat.mailer import BURST, receipt_uuid
from fluxchat.node import Node
from fluxchat.sqldb import dbapi
from fluxchat.upkeep import QUIET_CHECK
from fluxchat.wire_fields import MAX_ENVELOPES
from tests.lab import eventually
from tests.test_mail_abuse import MailAbuseCase, junk_for, mail_for

E = m.ErrorCode


def count_requests(node: Node) -> dict[type, int]:
    """Counts the mail requests `node` serves, by type."""
    counts: dict[type, int] = {m.Deliver: 0, m.DeliverMany: 0}
    for kind in counts:
        handler = node._handlers[kind]

        def counted(link: Link, request: Any, handler: Any = handler, kind: type = kind) -> Any:
            counts[kind] += 1
            return handler(link, request)

        node._handlers[kind] = counted
    return counts


class DeliverManyTest(MailAbuseCase):
    async def test_a_burst_and_its_receipts_go_in_few_requests(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        to_b, to_a = count_requests(b), count_requests(a)
        count = 2 * BURST + 10
        mails = [a.mailer.submit(b.identity.node_id, f"burst {i}", "body") for i in range(count)]
        assert a.store is not None and b.store is not None
        store = a.store
        await eventually(lambda: all((got := store.get_outbox(mail.uuid)) is not None
                                     and got.state == "delivered" for mail in mails), 60)
        self.assertEqual(b.store.count_inbox(), (count, count))
        # One mail per request would be `count` each way; the bursts take a handful.
        self.assertLessEqual(sum(to_b.values()), 8, to_b)
        self.assertLessEqual(sum(to_a.values()), 8, to_a)
        self.assertGreaterEqual(to_b[m.DeliverMany], 1)
        # And one receipt per burst, not per mail: each confirms the mails of its burst.
        receipts = b.store._rows("SELECT count(*) FROM outbox WHERE kind = 'receipt'")[0][0]
        self.assertLessEqual(receipts, 8)

    async def test_each_envelope_gets_its_own_outcome(self) -> None:
        attacker, victim, link = await self.pair()
        assert victim.store is not None
        good, other = mail_for(victim, attacker, "good"), mail_for(attacker, victim, "not yours")
        junk = junk_for(victim, attacker, 1)[0]
        reply = await link.request(lambda rid: m.DeliverMany(rid, (good, junk, other, good)))
        assert isinstance(reply, m.Delivered)
        self.assertEqual(reply.codes, (0, int(E.INVALID), int(E.FORBIDDEN), 0))
        self.assertEqual(victim.store.count_inbox(), (1, 1))
        uuid = victim.mailroom.header(good).uuid
        self.assertIsNotNone(victim.store.get_outbox(receipt_uuid(uuid)))   # same commit

    async def test_junk_bursts_spend_only_the_peer_budget(self) -> None:
        attacker, victim, link = await self.pair()
        junk = tuple(junk_for(victim, attacker, MAX_ENVELOPES))
        started = time.monotonic()
        reply = await link.request(lambda rid: m.DeliverMany(rid, junk))
        elapsed = time.monotonic() - started
        assert isinstance(reply, m.Delivered)
        self.assertLessEqual(victim.mailroom.private_ops,
                             PRIVATE_OPS_BURST + PRIVATE_OPS_RATE * elapsed + 1)
        self.assertGreater(reply.codes.count(int(E.RATE_LIMITED)), 0)
        self.assertNotIn(0, reply.codes)

    async def test_nothing_is_acknowledged_before_the_commit(self) -> None:
        attacker, victim, link = await self.pair()
        assert victim.store is not None
        store = victim.store
        original = store.receive_all

        def broken(*args: Any) -> Any:
            raise StorageError("database error: disk I/O error")

        store.receive_all = broken  # type: ignore[method-assign]
        mails = (mail_for(victim, attacker, "one"), mail_for(victim, attacker, "two"))
        reply = await link.request(lambda rid: m.DeliverMany(rid, mails))
        self.assertIsInstance(reply, m.Fail)
        self.assertEqual(store.count_inbox(), (0, 0))
        store.receive_all = original  # type: ignore[method-assign]
        reply = await link.request(lambda rid: m.DeliverMany(rid, mails))   # the sender's retry
        assert isinstance(reply, m.Delivered)
        self.assertEqual(reply.codes, (0, 0))
        self.assertEqual(store.count_inbox(), (2, 2))


class BurstReceiptContentTest(unittest.TestCase):
    def content(self, ref: bytes) -> MailContent:
        return MailContent("receipt", receipt_uuid(ref), bytes(32), bytes([1]) * 32, 1, "", "",
                           ref)

    def test_a_receipt_confirms_one_to_max_uuids(self) -> None:
        for count in (1, 2, MAX_RECEIPT_REFS):
            self.assertIsNone(_content_problem(self.content(bytes(16 * count))))
        for ref in (b"", bytes(15), bytes(17), bytes(16 * (MAX_RECEIPT_REFS + 1))):
            self.assertIsNotNone(_content_problem(self.content(ref)), len(ref))
        mail = dataclasses.replace(self.content(bytes(16)), kind="mail", ref=bytes(32))
        self.assertIsNotNone(_content_problem(mail))


def sqlite_bytes_in_use() -> int:
    """What SQLite (the build sqldb uses) holds on the heap, all connections of the process
    together: its C library's sqlite3_memory_used."""
    package = dbapi.Connection.__module__.rpartition(".")[0]   # sqlcipher3, or "" for sqlite3
    library = ctypes.CDLL(sys.modules[f"{package}._sqlite3" if package else "_sqlite3"].__file__)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return int(library.sqlite3_memory_used())


class MemoryAfterBurstTest(MailAbuseCase):
    async def test_upkeep_gives_back_what_a_burst_filled(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        assert a.store is not None and b.store is not None
        count = 4 * BURST
        for i in range(count):
            a.mailer.submit(b.identity.node_id, f"burst {i}", "body " * 200)
        await eventually(lambda: b.store is not None and b.store.count_inbox()[0] == count, 60)
        full = sqlite_bytes_in_use()
        await b.upkeep()
        # SQLite's page cache of b's store (up to sqldb.CACHE_KIB) is given back.
        self.assertLess(sqlite_bytes_in_use(), full - 200_000)
        self.assertEqual(b.store.count_inbox()[0], count)   # and the store reads on

    async def test_memory_goes_back_once_mail_work_stops(self) -> None:
        a, b = await self.chain(2)
        await a.net.dial("127.0.0.1", b.port, b.identity.node_id)
        assert b.store is not None
        self.assertEqual(b.upkeeper.releases, 0)   # no mail work yet: nothing to give back
        count = 4 * BURST
        for i in range(count):
            a.mailer.submit(b.identity.node_id, f"burst {i}", "body " * 200)
        await eventually(lambda: b.store is not None and b.store.count_inbox()[0] == count, 60)
        full, before = sqlite_bytes_in_use(), b.upkeeper.releases
        # Within two looks after the last envelope, long before the minute's upkeep.
        await eventually(lambda: b.upkeeper.releases > before, 2 * QUIET_CHECK + 1)
        self.assertLess(sqlite_bytes_in_use(), full - 200_000)
        # A node that stays quiet gives back once, not at every look.
        released = b.upkeeper.releases
        await asyncio.sleep(2 * QUIET_CHECK + 0.5)
        self.assertEqual(b.upkeeper.releases, released)
        self.assertEqual(b.store.count_inbox()[0], count)
