"""What a node does over time, on the simulated network: join, upkeep, held mail, churn.

Mirrors `Node.upkeep` / `Node._join_network` / `Replication.push` / `Mailer.replicate`:
bucket refresh through `RoutingTable.stale_buckets`, the hourly key republication and push of
held mail, the push after the table gained or lost nodes (at most every REREPLICATE_MIN), and
mail placement through `fluxchat.placement` (`replica_targets`, `ReplicaSets`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.simnet import LookupOutcome, Network, SimNode
from fluxchat.placement import replica_targets
from fluxchat.routing import Peer, RoutingTable

Then = Callable[[], None]


@dataclass
class Mail:
    number: int
    recipient: bytes
    sent_at: float
    stored_on: int = 0


@dataclass
class Churn:
    """Sessions drawn from a Pareto distribution (heavy tail: most sessions are short, a
    few last for days) with the mean that replaces `rate` of the nodes per hour."""

    rate: float = 0.30        # fraction of the population replaced per hour
    shape: float = 1.5        # Pareto shape; the mean is scale * shape / (shape - 1)

    @property
    def scale(self) -> float:
        mean = 3600.0 / self.rate
        return mean * (self.shape - 1) / self.shape

    def session(self, u: float) -> float:
        return self.scale / (1.0 - u) ** (1.0 / self.shape)

    def residual(self, u: float, v: float) -> float:
        """What is left of the session of a node seen at a random moment: the session is
        length-biased (Pareto with shape - 1), and we are uniformly inside it."""
        return v * self.scale / (1.0 - u) ** (1.0 / (self.shape - 1))


@dataclass
class Behaviour:
    net: Network
    mails: list[Mail] = field(default_factory=list)
    joins: int = 0
    departures: int = 0
    upkeep_lookups: int = 0

    # ----- joining and leaving ------------------------------------------------------

    def join(self, node_id: bytes) -> SimNode:
        """Node._join_network: link to a bootstrap node, look up our own ID, publish our
        key there; the first upkeep runs UPKEEP_INTERVAL later."""
        net = self.net
        bootstrap = net.random_live()
        node = net.new_node(node_id)
        node.table = RoutingTable(node_id, k=net.p.k, head_fresh=net.p.head_fresh)
        node.last_publish = node.last_replication = net.loop.now
        self.joins += 1

        def joined(outcome: LookupOutcome) -> None:
            self._publish(node, outcome.result, lambda: None)

        net.rpc(node, bootstrap.peer, net.size["ping"], lambda _dst: (True, net.size["pong"]),
                lambda _reply: net.find_node(node, node_id, joined), "ping")
        net.loop.at(net.loop.now + net.p.upkeep_interval, self.upkeep, node)
        return node

    def start_churn(self, churn: Churn, until: float) -> None:
        """Every live node leaves at the end of its (residual) session; a newcomer with a
        fresh ID takes its place at once, so the population stays the same."""
        net = self.net
        for node in list(net.live):
            end = net.loop.now + churn.residual(net.rng.random(), net.rng.random())
            if end < until:
                net.loop.at(end, self._leave, node, churn, until)

    def _leave(self, node: SimNode, churn: Churn, until: float) -> None:
        if not node.alive:
            return
        self.departures += 1
        self.net.kill(node)
        newcomer = self.join(self.net.rng.randbytes(32))
        end = self.net.loop.now + churn.session(self.net.rng.random())
        if end < until:
            self.net.loop.at(end, self._leave, newcomer, churn, until)

    # ----- upkeep -----------------------------------------------------------------------

    def start_upkeep(self) -> None:
        """Veteran nodes run their upkeep at a random phase, as if started long ago."""
        net = self.net
        for node in net.live:
            phase = net.rng.random()
            node.last_publish = net.loop.now - phase * net.p.republish_interval
            node.last_replication = node.last_publish
            net.loop.at(net.loop.now + phase * net.p.upkeep_interval, self.upkeep, node)

    def upkeep(self, node: SimNode) -> None:
        """Node.upkeep: refresh stale buckets one after another, then republish (hourly)
        or push held mail again after membership changes."""
        net = self.net
        if not node.alive:
            return
        table = net.table_of(node)
        assert table is not None
        targets = table.stale_buckets(net.loop.now, net.p.refresh_interval, net.rng.randbytes(32))

        def after_refresh() -> None:
            moment = net.loop.now
            if moment - node.last_publish >= net.p.republish_interval:
                node.last_publish = moment
                self.publish_key(node, lambda: self.replicate_held(node, moment, again, True))
            elif node.changed and moment - node.last_replication >= net.p.rereplicate_min:
                self.replicate_held(node, moment, again, False)
            else:
                again()

        def again() -> None:
            if node.alive:
                net.loop.at(net.loop.now + net.p.upkeep_interval, self.upkeep, node)

        self._lookups(node, targets, after_refresh)

    def _lookups(self, node: SimNode, targets: list[bytes], then: Then) -> None:
        if not targets or not node.alive:
            then()
            return
        self.upkeep_lookups += 1
        self.net.find_node(node, targets[0], lambda _o: self._lookups(node, targets[1:], then))

    def publish_key(self, node: SimNode, then: Then) -> None:
        self.net.find_node(node, node.node_id, lambda o: self._publish(node, o.result, then))

    def _publish(self, node: SimNode, peers: list[Peer], then: Then) -> None:
        net = self.net
        self._each(node, peers, net.size["store_key"], lambda _dst: (True, net.size["ok"]),
                   lambda _answered: then(), "store_key")

    def _each(self, node: SimNode, peers: list[Peer], request: int,
              respond: Callable[[SimNode], tuple[Any, int]],
              then: Callable[[list[Peer]], None], kind: str) -> None:
        """Requests to all peers at once (asyncio.gather); `then(answered)` when all are done."""
        left, answered = [len(peers)], []
        if not peers:
            then([])
            return

        def one(peer: Peer, reply: Any) -> None:
            left[0] -= 1
            if reply is not None:
                answered.append(peer)
            if left[0] == 0:
                then(answered)

        for peer in peers:
            self.net.rpc(node, peer, request, respond,
                         lambda reply, peer=peer: one(peer, reply), kind)

    # ----- held mail ----------------------------------------------------------------------

    def replicate_held(self, node: SimNode, moment: float, then: Then, lookup: bool) -> None:
        """Upkeep.replicate_held / replication.Replication.push: per held recipient, the
        replica set from the table (after membership changes) or from a lookup (hourly);
        its envelopes go only to the members new to it (`placement.ReplicaSets`). With
        `exact_replication` off, as before: a lookup per recipient, every member gets all."""
        node.changed = False
        node.last_replication = moment
        by_recipient: dict[bytes, list[int]] = {}
        for number, recipient in node.held.items():
            by_recipient.setdefault(recipient, []).append(number)
        node.sets.keep_only(set(by_recipient))
        lookup = lookup or not self.net.p.exact_replication
        self._push(node, list(by_recipient.items()), lookup, then)

    def _push(self, node: SimNode, work: list[tuple[bytes, list[int]]], lookup: bool,
              then: Then) -> None:
        if not work or not node.alive:
            then()
            return
        recipient, numbers = work[0]

        def found(closest: list[Peer]) -> None:
            targets = self._targets(node, recipient, closest)
            if self.net.p.exact_replication:
                targets = node.sets.newcomers(recipient, targets)

            def took(peers: list[Peer]) -> None:
                node.sets.given(recipient, closest, peers)
                self._push(node, work[1:], lookup, then)

            self._store_on(node, recipient, numbers, targets, took)

        if lookup:
            self.net.find_node(node, recipient, lambda o: found(o.result))
        else:
            table = self.net.table_of(node)
            assert table is not None
            found(table.closest(recipient, self.net.p.k))

    def _targets(self, node: SimNode, recipient: bytes, closest: list[Peer]) -> list[Peer]:
        return replica_targets(closest, {node.node_id, recipient}, self.net.p.replicas)

    def _store_on(self, node: SimNode, recipient: bytes, numbers: list[int],
                  targets: list[Peer], then: Callable[[list[Peer]], None]) -> None:
        """Mailer.store_on: one STORE per envelope to every target at once; `then` gets the
        targets that took them. A new holder learns its storer filled the set it sees."""
        net = self.net

        def hold(dst: SimNode) -> tuple[Any, int]:
            dst_table = net.table_of(dst)
            if dst_table is not None:
                closest = dst_table.closest(recipient, net.p.k)
                dst.sets.arrived(recipient, node.node_id, self._targets(dst, recipient, closest))
            for number in numbers:
                dst.held[number] = recipient
            return True, net.size["ok"]

        extra = (len(numbers) - 1) * len(targets)   # one STORE per envelope; the first below
        net.count(node, extra * net.size["store_mail"], extra * net.size["ok"])
        net.calls["store_mail"] += extra
        self._each(node, targets, net.size["store_mail"], hold, then, "store_mail")

    def _store(self, node: SimNode, recipient: bytes, numbers: list[int], closest: list[Peer],
               then: Callable[[int], None]) -> None:
        """Mailer.replicate: STORE on the replica set (placement.replica_targets)."""
        targets = self._targets(node, recipient, closest)
        self._store_on(node, recipient, numbers, targets,
                       lambda _took: then(sum(1 for p in targets if self._holds(p, numbers[0]))))

    def _holds(self, peer: Peer, number: int) -> bool:
        node = self.net.nodes.get(peer.node_id)
        return node is not None and node.alive and number in node.held

    def send(self, recipient: bytes, done: Callable[[Mail], None]) -> None:
        """Mailer.attempt for a recipient that is offline: look it up, store on replicas."""
        net = self.net
        sender = net.random_live()
        mail = Mail(len(self.mails), recipient, net.loop.now)
        self.mails.append(mail)

        def stored(count: int) -> None:
            mail.stored_on = count
            done(mail)

        net.find_node(sender, recipient,
                      lambda o: self._store(sender, recipient, [mail.number], o.result, stored))

    def retrievable(self, mail: Mail, done: Callable[[bool], None]) -> None:
        """Whether the recipient, coming online now, would get the mail: it joins through a
        random node, looks up its own ID and fetches from the k closest (Mailroom.fetch_all)."""
        net = self.net
        via = net.random_live()

        def check(outcome: LookupOutcome) -> None:
            done(any(self._holds(p, mail.number) for p in outcome.result))

        net.find_node(via, mail.recipient, check)


def holders(net: Network, mail: Mail) -> int:
    return sum(1 for node in net.live if mail.number in node.held)


def per_hour(total: float, seconds: float) -> float:
    return total * 3600.0 / seconds if seconds > 0 else math.nan
