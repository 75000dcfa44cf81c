"""Sending through a known relay, over real links on loopback: mail for an unreachable node
whose relay record we hold goes to the relay without a lookup; when that relay fails, the
lookup and the rest of the usual way follow."""

from __future__ import annotations

from fluxchat import messages as m
from fluxchat.link import Link
from fluxchat.node import Node
from fluxchat.relaying import RelayRecord
from tests.lab import NodeTestCase, eventually

E = m.ErrorCode


def history(node: Node, uuid: bytes) -> list[tuple[int, str, str]]:
    assert node.store is not None
    return node.store.outbox_history(uuid)


def left_by(node: Node, uuid: bytes) -> str | None:
    """How the mail left: the detail of its handed_over or stored step, once there is one."""
    steps = [detail for _, state, detail in history(node, uuid)
             if state in ("handed_over", "stored")]
    return steps[-1] if steps else None


class KnownRelayTest(NodeTestCase):
    async def world(self) -> tuple[Node, Node, Node, list[bytes]]:
        """(relay, private home, sender, the IDs the sender looked up at the relay with
        FindNode). The sender does not punch: a direct link would skip the lookup too."""
        (relay,) = await self.chain(1)
        home = (await self.start(1, [f"127.0.0.1:{relay.port}"], contact="private")).node
        assert home is not None
        await eventually(lambda: relay.relays.directory.get(home.identity.node_id, 0))
        # The sender says `private` too, so the relay never hands it out: else the home,
        # short of relays, would link to it (and its mail would go over that link).
        sender = (await self.start(3, [f"127.0.0.1:{relay.port}"], contact="private")).node
        assert sender is not None
        sender.relay_sender.on_relayed = None
        looked_up: list[bytes] = []
        answer = relay._handlers[m.FindNode]

        def find_node(link: Link, request: m.FindNode) -> object:
            if link.peer_id == sender.identity.node_id:
                looked_up.append(request.target)
            return answer(link, request)

        relay._handlers[m.FindNode] = find_node
        return relay, home, sender, looked_up

    async def test_mail_goes_to_a_known_relay_without_a_lookup(self) -> None:
        relay, home, sender, looked_up = await self.world()
        target = home.identity.node_id
        first = sender.mailer.submit(target, "one", "first: looked up")
        await eventually(lambda: left_by(sender, first.uuid))
        self.assertIn("through relay", left_by(sender, first.uuid) or "")
        self.assertIn(target, looked_up)   # no record yet: the lookup ran
        self.assertTrue(sender.relay_sender.knows(target))
        before = looked_up.count(target)
        second = sender.mailer.submit(target, "two", "second: the relay at once")
        await eventually(lambda: left_by(sender, second.uuid))
        self.assertIn("handed over through relay", left_by(sender, second.uuid) or "")
        # A burst (several mails due at once) skips the lookup as well.
        burst = [sender.mailer.submit(target, f"burst {i}", "b") for i in range(6)]
        for mail in burst:
            await eventually(lambda mail=mail: left_by(sender, mail.uuid))
        self.assertEqual(looked_up.count(target), before)
        store = home.store
        assert store is not None
        await eventually(lambda: store.count_inbox()[0] == 8)

    async def test_a_failing_known_relay_falls_back_to_the_lookup(self) -> None:
        relay, home, sender, looked_up = await self.world()
        target = home.identity.node_id
        first = sender.mailer.submit(target, "one", "through the relay")
        await eventually(lambda: left_by(sender, first.uuid))
        self.assertIsInstance(sender.relay_sender.held_record(target), RelayRecord)
        before = looked_up.count(target)
        relay._handlers[m.Relay] = lambda link, request: m.Fail(request.rid, int(E.REFUSED),
                                                                "no reservation")
        second = sender.mailer.submit(target, "two", "the relay refuses: stored instead")
        await eventually(lambda: left_by(sender, second.uuid))
        self.assertRegex(left_by(sender, second.uuid) or "", r"^stored on \d+ nodes$")
        self.assertGreater(looked_up.count(target), before)
