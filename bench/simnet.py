"""A discrete-event model of a FluxChat overlay that runs the node's own pure code.

Every simulated node owns a real `fluxchat.routing.RoutingTable`; lookups are real
`fluxchat.lookup.Lookup` objects driven the way `Overlay._drive` drives them, and held mail
is placed with `fluxchat.placement.replica_targets`, as `Mailer.replicate` does. Only the
network is modelled: a virtual clock, per-pair round trips (log-normal, median 80 ms, long
tail), lost packets (a TCP retransmission delay), links that open with a handshake and
close when idle, lookup datagrams (one round trip, no link; a lost one falls back to a link
after the overlay's wait), and silent dead nodes that cost a query its full timeout.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from fluxchat import datagram as dg
from fluxchat import datagram_net, overlay
from fluxchat import messages as m
from fluxchat.lookup import Lookup, QueryTimes
from fluxchat.placement import ReplicaSets
from fluxchat.routing import REPLACEMENT_SIZE, Added, Peer, PingHead, RoutingTable

HEAD_FRESH = overlay.HEAD_FRESH
# Lookup queries get their own timeout where the overlay has one, else the request timeout.
QUERY_TIMEOUT: float = getattr(overlay, "QUERY_TIMEOUT", 10.0)
_UNIT = NormalDist()
FRAME_OVERHEAD = 5 + 22 + 52   # frame header, TLS record (header, tag, type), TCP/IP headers
HANDSHAKE_BYTES = 4000   # estimate, protocol v2 (PROTOCOL.md 5.1): TLS 1.3 with the link certificate
                         # (record + RSA-4096 identity key, ~1.3 KiB), Hello (~1.3 KiB), ~15 TCP/IP headers
HOST = "127.0.0.1"   # one host for all: addresses (and so the per-subnet limit) are not modelled
UDP_OVERHEAD = 28    # IPv4 + UDP headers
PROBE_BYTES = 3000   # a contact probe (reach.probe): TCP, TLS 1.3 with the link certificate, close


def wire(message: m.Message) -> int:
    """Bytes one message costs on the wire, from the project's own encoder."""
    return len(m.encode_message(message)[1]) + FRAME_OVERHEAD


def _sizes(k: int) -> dict[str, int]:
    infos = tuple(m.NodeInfo(bytes(32), HOST, 40000) for _ in range(k))
    return {
        "find_node": wire(m.FindNode(1, bytes(32))),
        "nodes": wire(m.Nodes(1, infos)),
        "ping": wire(m.Ping(1)),
        "pong": wire(m.Pong(1)),
        "store_key": wire(m.StoreKey(1, bytes(550))),   # RSA-4096 SPKI DER
        "store_mail": wire(m.Store(1, bytes(2048))),     # a 1 KiB mail sealed
        "ok": wire(m.Ok(1)),
        "fetch": wire(m.Fetch(1, 64)),
        "batch": wire(m.MailBatch(1, (), False)),
        "dgram_request": dg.REQUEST_SIZE + UDP_OVERHEAD,
        "dgram_answer": len(dg.encode_answer(bytes(dg.TXID_BYTES), [
            dg.Contact(bytes(32), "198.51.100.1", 40000)] * k)) + UDP_OVERHEAD,
    }


@dataclass
class Params:
    """The network model and the node settings under test (defaults: the node's own)."""

    rtt_median: float = 0.080
    rtt_sigma: float = 0.8          # log-normal: p95 = 3.7x, p99 = 6.4x the median
    jitter: float = 0.1             # each message: x U(1, 1 + jitter)
    loss: float = 0.01              # per packet; costs a retransmission timeout
    timeout: float = 10.0           # other requests: client.request_timeout / auth_timeout
    query_timeout: float = QUERY_TIMEOUT   # one lookup query, dial included
    stop_at_target: bool = True     # Overlay.locate: ends when the target itself answers
    slow_factor: float = 2.0        # lookup.QueryTimes: slow after factor x median (0: never)
    slow_floor: float = 0.25        # ... but not before this many seconds
    # Link setup: round trips before the one of the first request (docs/PROTOCOL.md, 5.3
    # "Round trips", version 2, whose lookup requests ride with the Hello or the Work): a
    # dialer the acceptor has not linked with before pays TCP, TLS 1.3, Hello->Challenge and
    # solves the work (4 RTT in all); a known one pays TCP and TLS 1.3 (3 RTT in all).
    handshake_rtts: int = 3
    handshake_cpu: float = 0.08     # solving challenge.min = 16 bits (60-100 ms of a core)
    handshake_rtts_known: int = 2
    handshake_cpu_known: float = 0.0   # two Ed25519 signatures and checks: negligible
    # Lookup datagrams (PROTOCOL.md §16): node finding to unlinked nodes in one round trip;
    # no answer within datagram_wait: the query goes over a link in the time left.
    datagrams: bool = True
    datagram_wait: float = datagram_net.DATAGRAM_WAIT   # the cap; the wait adapts below it
    silent_hold: float = 600.0      # datagram_guard.Silent: a contact that fell back, links only
    probe_rtts: int = 2             # reach.probe of a responder the table has room for: TCP + TLS
    idle_timeout: float = 300.0     # client.idle_timeout: links close after this long unused
    ping_interval: float = 60.0     # client.ping_interval: keepalive on open links
    k: int = 20
    alpha: int = 3
    replicas: int = 5
    exact_replication: bool = True  # replication.py; off: every push to all, after a lookup
    refresh_interval: float = 3600.0
    republish_interval: float = 3600.0
    upkeep_interval: float = 60.0   # node.UPKEEP_INTERVAL
    rereplicate_min: float = 300.0  # node.REREPLICATE_MIN
    fetch_interval: float = 300.0
    head_fresh: float = HEAD_FRESH  # a bucket head seen this recently is not pinged
    max_tables: int = 10**9         # veteran tables kept built at once (memory bound)


class Loop:
    """The virtual clock: callbacks ordered by time, then by scheduling order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0

    def at(self, when: float, job: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, (when, self._seq, job, args))
        self._seq += 1

    def run(self, until: float = math.inf) -> None:
        queue = self._queue
        while queue and queue[0][0] <= until:
            when, _, job, args = heapq.heappop(queue)
            self.now = when
            job(*args)
        if until != math.inf:
            self.now = until


@dataclass(eq=False)
class SimNode:
    index: int
    peer: Peer
    table: RoutingTable | None = None
    alive: bool = True
    born: float = 0.0
    held: dict[int, bytes] = field(default_factory=dict)   # mail number -> recipient
    sets: ReplicaSets = field(default_factory=ReplicaSets)  # who else holds it (replication.py)
    times: QueryTimes | None = None   # the node's lookup query durations (Overlay.times)
    waits: QueryTimes | None = None   # its datagram wait (Datagrams.times)
    changed: bool = False          # Overlay.membership_changed
    last_publish: float = 0.0
    last_replication: float = 0.0
    upkeep_busy: bool = False
    veteran: bool = False          # part of the initial population: its table is built for it
    sent: int = 0                  # upkeep bytes sent and received
    received: int = 0

    @property
    def node_id(self) -> bytes:
        return self.peer.node_id


@dataclass
class LookupOutcome:
    target: bytes
    result: list[Peer]
    rpcs: int
    rounds: int
    latency: float
    failures: int
    finding: float = math.nan   # contact lookups: until the query to the target went out


class Network:
    def __init__(self, params: Params, seed: int) -> None:
        self.p = params
        self.rng = random.Random(seed)
        self.salt = seed
        self.loop = Loop()
        self.nodes: dict[bytes, SimNode] = {}
        self.live: list[SimNode] = []
        self._live_at: dict[bytes, int] = {}
        self.links: dict[tuple[int, int], float] = {}   # (low, high index) -> last use
        self.met: set[int] = set()    # pairs that completed a link once: no work asked again
        self.silent: dict[tuple[int, int], float] = {}   # (asker, asked) -> links only until
        self.size = _sizes(params.k)
        self.counting = True      # upkeep byte counters on
        self.tables_built = 0
        self.tables_dropped = 0
        self._built: OrderedDict[int, SimNode] = OrderedDict()
        self.calls: Counter[str] = Counter()

    # ----- population ---------------------------------------------------------------

    def new_node(self, node_id: bytes, alive: bool = True) -> SimNode:
        index = len(self.nodes)
        node = SimNode(index, Peer(node_id, HOST, 1 + index % 65535), born=self.loop.now)
        self.nodes[node_id] = node
        node.alive = alive
        if alive:
            self._live_at[node_id] = len(self.live)
            self.live.append(node)
        return node

    def kill(self, node: SimNode) -> None:
        """The node vanishes silently: peers learn it only when their queries time out."""
        node.alive = False
        node.table = None
        self._built.pop(node.index, None)
        node.held.clear()
        node.sets = ReplicaSets()
        at = self._live_at.pop(node.node_id)
        last = self.live.pop()
        if last is not node:
            self.live[at] = last
            self._live_at[last.node_id] = at

    def random_live(self) -> SimNode:
        return self.live[self.rng.randrange(len(self.live))]

    def fill_tables(self, lazy: bool = False, now: float = 0.0) -> None:
        """Give every live node the table a long-running node would have: each bucket range
        offered up to k + REPLACEMENT_SIZE random nodes of that range (dead ones included:
        they were alive when learned), through the real `observe`. With `lazy`, a node's
        table is built when the node is first used, so a big static network costs only the
        nodes its lookups touch (the population is fixed, so the table is the same either way)."""
        self._ordered = sorted(self.nodes)
        self._values = [int.from_bytes(i, "big") for i in self._ordered]
        # Last seen up to an hour (the bucket refresh interval) before the start.
        self._ages = sorted(now - 3600.0 * self.rng.random() for _ in range(64))
        for node in self.live:
            node.veteran = True
            if not lazy:
                self.table_of(node)

    def table_of(self, node: SimNode) -> RoutingTable | None:
        """The node's table; a veteran's is built on first use. Beyond `max_tables` built
        veteran tables, the least recently used one is dropped and rebuilt (a new sample of
        the same population) when next needed, so memory stays bounded."""
        if node.veteran:
            built = self._built
            if node.table is None and node.alive:
                node.table = self._veteran_table(node)
                built[node.index] = node
                if len(built) > self.p.max_tables:
                    _, dropped = built.popitem(last=False)
                    dropped.table = None
                    self.tables_dropped += 1
            elif node.table is not None:
                built.move_to_end(node.index)
        return node.table

    def _veteran_table(self, node: SimNode) -> RoutingTable:
        ordered, values = self._ordered, self._values
        per_range = self.p.k + REPLACEMENT_SIZE
        own = int.from_bytes(node.node_id, "big")
        offered: list[bytes] = []
        for depth in range(256):
            shift = 255 - depth
            lo = ((own >> shift) ^ 1) << shift
            start = bisect_left(values, lo)
            end = bisect_left(values, lo + (1 << shift))
            if end - start <= per_range:
                offered += ordered[start:end]
            else:
                offered += [ordered[i] for i in self.rng.sample(range(start, end), per_range)]
            if self._alone_below(values, own, shift):
                break
        self.rng.shuffle(offered)
        table = RoutingTable(node.node_id, k=self.p.k, head_fresh=self.p.head_fresh)
        ages = self._ages   # shared floats: one per entry would cost 24 bytes each
        for node_id in offered:
            decision = table.observe(self.nodes[node_id].peer, ages[self.rng.randrange(64)])
            if isinstance(decision, PingHead):
                table.head_alive(decision.head.node_id, ages[self.rng.randrange(64)])
        self.tables_built += 1
        return table

    @staticmethod
    def _alone_below(values: list[int], own: int, shift: int) -> bool:
        """Whether no other node shares our first (256 - shift) bits."""
        lo = (own >> shift) << shift
        return bisect_left(values, lo + (1 << shift)) - bisect_left(values, lo) <= 1

    # ----- the network model ----------------------------------------------------------

    def rtt(self, a: SimNode, b: SimNode) -> float:
        """A fixed round trip per pair (log-normal), with a little jitter per message."""
        pair = hash((min(a.index, b.index), max(a.index, b.index), self.salt))
        u = ((pair & 0xFFFFFFFF) + 0.5) / 2**32
        base = self.p.rtt_median * math.exp(self.p.rtt_sigma * _UNIT.inv_cdf(u))
        return base * (1.0 + self.p.jitter * self.rng.random())

    def _linked(self, a: SimNode, b: SimNode) -> bool:
        key = (min(a.index, b.index), max(a.index, b.index))
        last = self.links.get(key)
        if last is None:
            return False
        if self.loop.now - last > self.p.idle_timeout:
            del self.links[key]
            self._keepalive(a, b, self.p.idle_timeout)
            return False
        return True

    def is_linked(self, a: SimNode, b: SimNode) -> bool:
        last = self.links.get((min(a.index, b.index), max(a.index, b.index)))
        return last is not None and self.loop.now - last <= self.p.idle_timeout

    def _pair(self, a: SimNode, b: SimNode) -> int:
        return min(a.index, b.index) << 32 | max(a.index, b.index)

    def setup_cost(self, src: SimNode, dst: SimNode) -> tuple[int, float]:
        """Round trips and CPU seconds before the first request on a new link: cheaper when
        the two have linked before (this run, or the entry in a veteran's table came from a
        link between them)."""
        known = self._pair(src, dst) in self.met or (
            src.table is not None and dst.node_id in src.table) or (
            dst.table is not None and src.node_id in dst.table)
        if known:
            return self.p.handshake_rtts_known, self.p.handshake_cpu_known
        return self.p.handshake_rtts, self.p.handshake_cpu

    def times_of(self, node: SimNode) -> QueryTimes:
        """The node's query timer; a veteran's starts with durations drawn from the model,
        as if it had run lookups before (a newcomer starts with none)."""
        if node.times is None:
            p = self.p
            node.times = QueryTimes(p.query_timeout, p.slow_floor, p.slow_factor or math.inf)
            node.waits = datagram_net.datagram_times()
            if node.veteran:
                for _ in range(node.times.window):
                    other = self.random_live()
                    rtt = self.rtt(node, other)
                    node.times.record(True, rtt)
                    node.waits.record(True, rtt)
                    node.times.record(False, (1 + p.handshake_rtts) * rtt + p.handshake_cpu)
        return node.times

    def _use_link(self, a: SimNode, b: SimNode) -> None:
        key = (min(a.index, b.index), max(a.index, b.index))
        last = self.links.get(key)
        if last is not None:
            self._keepalive(a, b, self.loop.now - last)
        self.links[key] = self.loop.now

    def touch_link(self, a: SimNode, b: SimNode) -> None:
        """A request over the link between a and b without modelling its timing (fetches):
        a new link costs its handshake and makes both ends observe each other."""
        if not self._linked(a, b):
            self.calls["handshake"] += 1
            self.met.add(self._pair(a, b))
            self.count(a, HANDSHAKE_BYTES // 2, HANDSHAKE_BYTES // 2)
            self.count(b, HANDSHAKE_BYTES // 2, HANDSHAKE_BYTES // 2)
            self.observe(b, a.peer)
            self.observe(a, b.peer)
        self._use_link(a, b)

    def _keepalive(self, a: SimNode, b: SimNode, idle: float) -> None:
        pings = int(idle // self.p.ping_interval)
        if pings:
            cost = pings * (self.size["ping"] + self.size["pong"])
            self.count(a, cost, cost)

    def prune_links(self) -> None:
        horizon = self.loop.now - self.p.idle_timeout
        for key in [key for key, last in self.links.items() if last < horizon]:
            del self.links[key]

    def count(self, node: SimNode, sent: int, received: int) -> None:
        if self.counting:
            node.sent += sent
            node.received += received

    def rpc(self, src: SimNode, dst_peer: Peer, request: int,
            respond: Callable[[SimNode], tuple[Any, int]],
            done: Callable[[Any], None], kind: str = "find_node",
            timeout: float | None = None) -> None:
        """One request/reply; `done(None)` after the timeout when the peer is gone or slow.
        Lost packets cost a retransmission timeout (TCP), not the query."""
        start = self.loop.now
        limit = self.p.timeout if timeout is None else timeout
        self.calls[kind] += 1
        dst = self.nodes.get(dst_peer.node_id)
        if dst is None or not dst.alive:
            self.count(src, request, 0)
            self.loop.at(start + limit, done, None)
            return
        rtt = self.rtt(src, dst)
        linked = self._linked(src, dst)
        delay, packets = rtt, 2
        if not linked:
            rtts, cpu = self.setup_cost(src, dst)
            delay += rtts * rtt + cpu
            packets += 2 * rtts
        for packet in range(packets):
            if self.rng.random() < self.p.loss:
                # The first packet of a new connection is a SYN: 1 s initial retransmission.
                delay += 1.0 if packet == 0 and not linked else max(0.2, 2 * rtt)
        if delay >= limit:
            self.count(src, request, 0)
            self.loop.at(start + limit, done, None)
            return
        self.loop.at(start + delay, self._arrive, src, dst, linked, request, respond, done,
                     start + limit)

    def _arrive(self, src: SimNode, dst: SimNode, linked: bool, request: int,
                respond: Callable[[SimNode], tuple[Any, int]], done: Callable[[Any], None],
                deadline: float) -> None:
        if not dst.alive:   # died while the request was on its way
            self.loop.at(deadline, done, None)
            return
        if not src.alive:
            return
        if not linked:       # both ends learn each other from a new link (Overlay.on_link)
            self.calls["handshake"] += 1
            self.met.add(self._pair(src, dst))
            self.count(src, HANDSHAKE_BYTES // 2, HANDSHAKE_BYTES // 2)
            self.count(dst, HANDSHAKE_BYTES // 2, HANDSHAKE_BYTES // 2)
            self.observe(dst, src.peer)
            self.observe(src, dst.peer)
        self._use_link(src, dst)
        reply, reply_bytes = respond(dst)
        self.count(src, request, reply_bytes)
        self.count(dst, reply_bytes, request)
        done(reply)

    def datagram_usable(self, src: SimNode, dst_peer: Peer) -> bool:
        """Overlay._datagram_target: datagrams on, and the contact not remembered as silent."""
        dst = self.nodes.get(dst_peer.node_id)
        if not self.p.datagrams or dst is None:
            return False
        until = self.silent.get((src.index, dst.index))
        return until is None or until <= self.loop.now

    def datagram_rpc(self, src: SimNode, dst_peer: Peer,
                     respond: Callable[[SimNode], tuple[Any, int]],
                     done: Callable[[Any, bool], None], limit: float) -> None:
        """Overlay._ask_datagram: one round trip, no link, the responder learns nothing. No
        answer within datagram_wait (dead node, lost datagram): the query goes over a link
        in what is left of `limit`; `done(reply, by_datagram)`."""
        start = self.loop.now
        self.calls["datagram"] += 1
        self.count(src, self.size["dgram_request"], 0)
        dst = self.nodes[dst_peer.node_id]
        lost = self.rng.random() < self.p.loss or self.rng.random() < self.p.loss
        rtt = self.rtt(src, dst) if dst.alive else math.inf
        waits = src.waits
        wait = self.p.datagram_wait if waits is None else min(self.p.datagram_wait,
                                                                 waits.slow_after(True))
        if not dst.alive or lost or rtt >= wait:
            if dst.alive and not lost:   # answered too late: the socket drops it
                self.count(dst, self.size["dgram_answer"], self.size["dgram_request"])
            self.loop.at(start + wait, self._fall_back, src, dst_peer, respond, done,
                         start + limit)
            return
        if waits is not None:
            waits.record(True, rtt)
        self.count(dst, self.size["dgram_answer"], self.size["dgram_request"])
        self.loop.at(start + rtt, self._datagram_answer, src, dst, respond, done)

    def _datagram_answer(self, src: SimNode, dst: SimNode,
                         respond: Callable[[SimNode], tuple[Any, int]],
                         done: Callable[[Any, bool], None]) -> None:
        if not src.alive:
            return
        reply, _ = respond(dst) if dst.alive else (None, 0)
        self.count(src, 0, self.size["dgram_answer"])
        table = self.table_of(src)
        if reply is not None and table is not None and table.has_room(dst.node_id):
            self._probe(src, dst)
        done(reply, True)

    def _fall_back(self, src: SimNode, dst_peer: Peer,
                   respond: Callable[[SimNode], tuple[Any, int]],
                   done: Callable[[Any, bool], None], deadline: float) -> None:
        if not src.alive:
            return
        self.calls["datagram_fallback"] += 1

        def after(reply: Any) -> None:
            if not src.alive:
                return
            dst = self.nodes[dst_peer.node_id]
            if reply is not None:   # alive over TLS: ask it over links for a while
                self.silent[(src.index, dst.index)] = self.loop.now + self.p.silent_hold
            done(reply, False)

        self.rpc(src, dst_peer, self.size["find_node"], respond, after,
                 timeout=max(0.0, deadline - self.loop.now))

    def _probe(self, src: SimNode, dst: SimNode) -> None:
        """reach.Reach.verify: TCP + TLS to the responder's address, then observe it."""
        self.calls["probe"] += 1
        self.count(src, PROBE_BYTES // 2, PROBE_BYTES // 2)
        self.count(dst, PROBE_BYTES // 2, PROBE_BYTES // 2)

        def verified() -> None:
            if src.alive and dst.alive:
                self.observe(src, dst.peer)

        self.loop.at(self.loop.now + self.p.probe_rtts * self.rtt(src, dst), verified)

    # ----- what Overlay does with the table's decisions --------------------------------

    def observe(self, node: SimNode, peer: Peer) -> None:
        table = self.table_of(node)
        if table is None:
            return
        decision = table.observe(peer, self.loop.now)
        if isinstance(decision, PingHead):
            head = decision.head
            self.rpc(node, head, self.size["ping"], lambda _dst: (True, self.size["pong"]),
                     lambda reply: self._head_answer(node, head, reply), "ping")
        elif isinstance(decision, Added):
            node.changed = True

    def _head_answer(self, node: SimNode, head: Peer, reply: Any) -> None:
        if self.table_of(node) is None:
            return
        if reply is None:
            self.failed(node, head.node_id)
        else:
            node.table.head_alive(head.node_id, self.loop.now)  # type: ignore[union-attr]

    def failed(self, node: SimNode, node_id: bytes) -> None:
        table = self.table_of(node)
        if table is not None and table.failed(node_id, self.loop.now) is not None:
            node.changed = True

    def find_node(self, src: SimNode, target: bytes,
                  done: Callable[[LookupOutcome], None], contact: bool = False) -> None:
        """Overlay.find_node: a real Lookup, alpha queries in flight, settled one by one.
        `contact` (with Params.stop_at_target): the lookup is looking for the target node
        itself and ends when it answers (its reply is the value found)."""
        table = self.table_of(src)
        assert table is not None
        stop = contact and self.p.stop_at_target
        lookup = Lookup(target, src.node_id, table.closest(target, self.p.k),
                        k=self.p.k, alpha=self.p.alpha, want_value=stop)
        start, running, failures = self.loop.now, [0], [0]
        asked_target = [math.nan]
        finished = False
        exclude = {src.node_id}
        nodes_bytes = self.size["nodes"]

        def respond(dst: SimNode) -> tuple[Any, int]:
            served = self.table_of(dst)
            assert served is not None
            return served.closest(target, self.p.k, exclude=exclude), nodes_bytes

        times = self.times_of(src)
        waiting: dict[bytes, tuple[float, bool]] = {}   # queries in flight: start, linked

        def settle(peer: Peer, reply: Any, by_datagram: bool = False) -> None:
            running[0] -= 1
            began, linked = waiting.pop(peer.node_id)
            if finished or not src.alive:
                return   # cancelled in the node (or the node is gone): no outcome
            if reply is None:
                failures[0] += 1
                lookup.on_failure(peer.node_id)
                self.failed(src, peer.node_id)
            else:
                times.record(linked or by_datagram, self.loop.now - began)
                if linked and src.waits is not None:   # Overlay._query: a round trip
                    src.waits.record(True, self.loop.now - began)
                if not by_datagram:   # a datagram answer is a hint: probed, not observed
                    self.observe(src, peer)
                if stop and peer.node_id == target:
                    lookup.on_value(peer.node_id, peer)
                else:
                    lookup.on_reply(peer.node_id,
                                    [p for p in reply if p.node_id != src.node_id])
            pump()

        def slow(peer: Peer) -> None:
            if not finished and peer.node_id in waiting:
                lookup.on_slow(peer.node_id)
                pump()

        def pump() -> None:
            nonlocal finished
            for peer in lookup.next_queries():
                running[0] += 1
                dst = self.nodes.get(peer.node_id)
                linked = dst is not None and self.is_linked(src, dst)
                waiting[peer.node_id] = (self.loop.now, linked)
                # Overlay._query: the target's own answer ends a contact lookup, so its
                # query may take the full dial time (over a link: it is wanted next);
                # being slow, it holds nothing back.
                wanted = stop and peer.node_id == target
                if wanted:
                    asked_target[0] = self.loop.now - start
                by_datagram = not linked and not wanted and self.datagram_usable(src, peer)
                after = times.slow_after(linked or by_datagram)
                if after < self.p.query_timeout:
                    self.loop.at(self.loop.now + after, slow, peer)
                limit = self.p.timeout if wanted else self.p.query_timeout
                if by_datagram:
                    self.datagram_rpc(src, peer, respond,
                                      lambda reply, via, peer=peer: settle(peer, reply, via),
                                      limit)
                else:
                    self.rpc(src, peer, self.size["find_node"], respond,
                             lambda reply, peer=peer: settle(peer, reply), timeout=limit)
            # Overlay._drive waits for the queries in flight unless a value was found: then
            # it returns at once and cancels them.
            if running[0] == 0 or lookup.found:
                finished = True
                if src.table is not None:
                    src.table.touch_bucket(target, self.loop.now)
                result = [lookup.value] if lookup.found else lookup.result()
                done(LookupOutcome(target, result, lookup.rpc_count, lookup.rounds,
                                   self.loop.now - start, failures[0], asked_target[0]))

        pump()
