"""Conversations through the node API between real in-process nodes: reply references, threads,
sent mail, read state, uuid prefixes, several recipients, display names, contacts, and `watch`
over the real local API (including a reader too slow to keep up)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fluxchat.errors import IpcError
from fluxchat.events import EventHub, TooManySubscribers
from fluxchat.ipc_protocol import TOKEN_FILE, make_request
from fluxchat.node import Node
from fluxchat.reachability import Status, Verdict
from fluxchat.store import InboxMail
from tests.lab import WAIT, NodeTestCase, eventually


def received(node: Node, uuid: str) -> bool:
    assert node.store is not None
    return any(m.uuid.hex() == uuid.replace("-", "") for m in node.store.list_inbox(False, 1000, 0)[1])


class ConversationTest(NodeTestCase):
    async def test_reply_thread_and_sent_mail(self) -> None:
        a, b = await self.chain(2, mail={"display_name": "Ann Example"})
        b_id, a_id = b.identity.id_text, a.identity.id_text
        first = await a.api.call("mail", {"to": b_id, "subject": "Lunch?", "body": "at noon\nok?"})
        await eventually(lambda: received(b, first["uuid"]))

        inbox = await b.api.call("list", {"new_only": True})
        self.assertEqual([m["uuid"] for m in inbox["items"]], [first["uuid"]])
        self.assertEqual(inbox["items"][0]["name"], "Ann Example")  # a signed hint, shown as such
        answer = await b.api.call("reply", {"uuid": first["uuid"][:8], "body": "yes", "quote": True})
        self.assertEqual(answer["ref"], first["uuid"])
        await eventually(lambda: received(a, answer["uuid"]))

        got = await a.api.call("read", {"uuid": answer["uuid"]})
        self.assertEqual((got["subject"], got["ref"], got["from"]), ("Re: Lunch?", first["uuid"], b_id))
        self.assertEqual(got["body"], "yes\n\nFC_" + a_id[3:] + " wrote:\n> at noon\n> ok?")
        # A reply to a reply keeps one "Re:".
        again = await a.api.call("reply", {"uuid": answer["uuid"], "body": "great"})
        await eventually(lambda: received(b, again["uuid"]))
        self.assertEqual((await b.api.call("read", {"uuid": again["uuid"]}))["subject"], "Re: Lunch?")

        thread = await a.api.call("conversation", {"peer": b_id})
        self.assertEqual([(m["direction"], m["uuid"]) for m in thread["items"]],
                         [("out", first["uuid"]), ("in", answer["uuid"]), ("out", again["uuid"])])
        self.assertEqual(thread["items"][2]["ref"], answer["uuid"])
        # Sent mail is readable, with its delivery state.
        sent = await a.api.call("read", {"uuid": first["uuid"]})
        self.assertEqual((sent["folder"], sent["body"], sent["to"]), ("sent", "at noon\nok?", b_id))
        await eventually(lambda: a.store is not None and a.store.get_outbox(
            bytes.fromhex(first["uuid"].replace("-", ""))).state == "delivered")  # type: ignore[union-attr]
        listed = await a.api.call("list", {"folder": "sent"})
        self.assertEqual({m["state"] for m in listed["items"] if m["uuid"] == first["uuid"]}, {"delivered"})

    async def test_read_state_and_conversations(self) -> None:
        a, b = await self.chain(2)
        sent = [await a.api.call("mail", {"to": b.identity.id_text, "body": f"n{n}"}) for n in range(3)]
        await eventually(lambda: all(received(b, s["uuid"]) for s in sent))
        (row,) = (await b.api.call("conversations", {}))["conversations"]
        self.assertEqual((row["peer"], row["unread"], row["total"]), (a.identity.id_text, 3, 3))
        await b.api.call("read", {"uuid": sent[0]["uuid"]})
        await b.api.call("mark", {"uuid": sent[1]["uuid"], "read": True})
        self.assertEqual((await b.api.call("list", {"new_only": True}))["total"], 1)
        await b.api.call("mark", {"uuid": sent[1]["uuid"], "read": False})
        self.assertEqual((await b.api.call("list", {"new_only": True}))["total"], 2)
        await b.api.call("conversation", {"peer": a.identity.id_text})  # opening it reads it
        self.assertEqual((await b.api.call("conversations", {}))["conversations"][0]["unread"], 0)
        with self.assertRaises(IpcError) as caught:
            await b.api.call("mark", {"uuid": "ffffffffff", "read": True})
        self.assertEqual(caught.exception.code, "not_found")

    async def test_several_recipients_prefixes_and_contacts(self) -> None:
        a, b, c = await self.chain(3)
        await a.api.call("contacts", {"action": "add", "alias": "bob", "id": b.identity.id_text})
        out = await a.api.call("mail", {"to": ["bob", c.identity.id_text], "body": "to both"})
        self.assertEqual([s["to"] for s in out["sent"]], [b.identity.id_text, c.identity.id_text])
        self.assertEqual(len({s["uuid"] for s in out["sent"]}), 2)
        await eventually(lambda: received(b, out["sent"][0]["uuid"]) and received(c, out["sent"][1]["uuid"]))
        # An unknown alias among the recipients sends nothing at all.
        with self.assertRaises(IpcError):
            await a.api.call("mail", {"to": ["bob", "nobody"], "body": "x"})
        self.assertEqual((await a.api.call("list", {"folder": "sent"}))["total"], 2)

        # Prefixes: ambiguous when two uuids share it (made so by hand), else the one mail.
        assert a.store is not None
        uuids = [s["uuid"] for s in out["sent"]]
        self.assertEqual((await a.api.call("status", {"uuid": uuids[0][:13]}))["uuid"], uuids[0])
        with self.assertRaises(IpcError) as caught:
            await a.api.call("read", {"uuid": "0123456789abcdef"})
        self.assertEqual(caught.exception.code, "not_found")

        # Save a sender from their mail; repointing an alias needs force.
        mail = await c.api.call("mail", {"to": a.identity.id_text, "body": "hi from c"})
        await eventually(lambda: received(a, mail["uuid"]))
        with self.assertRaises(IpcError) as caught:
            await a.api.call("contacts", {"action": "add", "alias": "bob", "from": mail["uuid"][:7]})
        self.assertEqual(caught.exception.code, "exists")
        added = await a.api.call("contacts", {"action": "add", "alias": "bob", "from": mail["uuid"],
                                              "force": True})
        self.assertEqual((added["id"], added["replaced"]), (c.identity.id_text, b.identity.id_text))
        same = await a.api.call("contacts", {"action": "add", "alias": "bob", "id": c.identity.id_text})
        self.assertIsNone(same["replaced"])

    async def test_ambiguous_prefix(self) -> None:
        (a,) = await self.chain(1)
        assert a.store is not None
        me = a.identity.id_text
        first = await a.api.call("mail", {"to": me, "body": "one"})
        raw = bytes.fromhex(first["uuid"].replace("-", ""))
        # A second mail whose uuid shares the first four bytes, the fifth differing.
        twin = raw[:4] + bytes([raw[4] ^ 0xFF]) + raw[5:]
        a.store.add_inbox(InboxMail(twin, a.identity.node_id, a.identity.node_id, "twin", "", 1, 1))
        for cmd in ("read", "status", "delete", "reply"):
            with self.assertRaises(IpcError) as caught:
                await a.api.call(cmd, {"uuid": first["uuid"][:8], **({"body": "x"} if cmd == "reply" else {})})
            self.assertEqual(caught.exception.code, "ambiguous")
        self.assertEqual((await a.api.call("read", {"uuid": first["uuid"][:10]}))["uuid"], first["uuid"])


class WatchTest(NodeTestCase):
    async def watch(self, node: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        token = (node.config.data_dir / TOKEN_FILE).read_text().strip()
        reader, writer = await asyncio.open_connection("127.0.0.1", node.ipc_port)
        writer.write(make_request(1, "watch", {}, token))
        self.assertEqual(json.loads(await reader.readline())["result"], {"watching": True})
        return reader, writer

    async def next_event(self, reader: asyncio.StreamReader, kind: str) -> dict[str, Any]:
        while True:
            event: dict[str, Any] = json.loads(await asyncio.wait_for(reader.readline(), WAIT))["event"]
            if event["type"] == kind:
                return event

    async def test_watch_sees_mail_states_and_links(self) -> None:
        (a,) = await self.chain(1)
        reader, writer = await self.watch(a)
        self.addCleanup(writer.close)
        b = (await self.start(1, [self.labs[0].address])).node
        assert b is not None
        link = await self.next_event(reader, "link")
        self.assertEqual((link["peer"], link["up"]), (b.identity.id_text, True))
        sent = await b.api.call("mail", {"to": a.identity.id_text, "subject": "ping", "body": "secret"})
        mail = await self.next_event(reader, "mail")
        self.assertEqual((mail["uuid"], mail["from"], mail["subject"]), (sent["uuid"], b.identity.id_text, "ping"))
        self.assertNotIn("body", mail)  # events stay small; read the mail for its text
        mine = await a.api.call("mail", {"to": b.identity.id_text, "body": "back"})
        states = []
        while "delivered" not in states:
            event = await self.next_event(reader, "state")
            self.assertEqual(event["uuid"], mine["uuid"])
            states.append(event["state"])
        self.assertEqual(states[0], "queued")
        # Sending anything ends the stream and frees the subscription.
        writer.write(b"\n")
        await eventually(lambda: len(a.api.events) == 0)

    async def test_reachability_changes_are_events(self) -> None:
        (a,) = await self.chain(1)
        subscription = a.api.subscribe()
        self.addCleanup(subscription.close)
        before = a.reach.verdict.status
        after = Status.REACHABLE if before is not Status.REACHABLE else Status.UNREACHABLE
        a.reach._apply(Verdict(after, "127.0.0.1:1", 1.0, 3, 3))   # as a round of dial-backs would
        event = await asyncio.wait_for(subscription.next(), WAIT)
        assert event is not None
        self.assertEqual((event["type"], event["status"]), ("reachability", after.value))

    async def test_slow_reader_is_cut_off_and_the_node_carries_on(self) -> None:
        (a,) = await self.chain(1)
        a.api.events.queue_limit = 8
        reader, writer = await self.watch(a)
        self.addCleanup(writer.close)
        me = a.identity.id_text
        # The test never reads: the socket buffers fill, then the queue, then we are dropped.
        big = "x" * 60_000
        for _ in range(200):
            await a.api.call("mail", {"to": me, "body": big})
            if not len(a.api.events):
                break
        self.assertEqual(len(a.api.events), 0)
        # The node still answers, and the dropped connection ends after what was buffered.
        self.assertEqual((await a.api.call("info", {}))["id"], me)
        with self.assertRaises((ConnectionError, asyncio.IncompleteReadError)):
            while True:
                await asyncio.wait_for(reader.readexactly(65536), WAIT)


class HubTest(NodeTestCase):
    async def test_queue_bound_and_subscriber_cap(self) -> None:
        hub = EventHub(queue_limit=2, max_subscribers=2)
        fast, slow = hub.subscribe(), hub.subscribe()
        with self.assertRaises(TooManySubscribers):
            hub.subscribe()
        hub.publish({"type": "a"})
        self.assertEqual((await fast.next() or {})["seq"], 1)
        hub.publish({"type": "b"})
        hub.publish({"type": "c"})   # slow holds a, b: c overflows it
        self.assertTrue(slow.overflowed and slow.closed)
        self.assertIsNone(await slow.next())
        self.assertEqual([(await fast.next() or {})["type"] for _ in range(2)], ["b", "c"])
        self.assertEqual(len(hub), 1)
        hub.close()
        self.assertIsNone(await fast.next())
