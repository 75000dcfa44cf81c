"""Kademlia over peer links: answers routing requests, runs lookups, keeps the table fresh.

The routing table and the lookup are pure; this module performs what they decide: it
dials, sends FIND_NODE / FIND_KEY / STORE_KEY and feeds the answers back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from . import messages as m
from .addresses import observed_address, reported_ok, routable
from .config import KademliaConfig
from .datagram import Contact
from .datagram_net import Datagrams
from .errors import FluxError
from .identity import Identity
from .ids import id_from_spki, short_id
from .link import Link
from .logsetup import about_peer
from .lookup import Lookup, QueryTimes
from .peer_net import DialError, PeerNet
from .reachability import AddressBook
from .routing import Added, Peer, PingHead, RoutingTable
from .store import Store
from .tasks import NEW_LINKS_AT_ONCE, Background, Bug, settle

log = logging.getLogger("fluxchat.overlay")
E = m.ErrorCode
MAX_HELD_KEYS = 100_000
NAME_ADDRESSES = 2      # addresses dialed for one bootstrap host name
KEY_TTL_INTERVALS = 3   # an owner republishes every interval; three missed and the row goes
HEAD_FRESH = 60.0   # seconds: a bucket head seen this recently is not pinged before eviction
QUERY_TIMEOUT = 4.0  # seconds one lookup query may take (dial included) before we move on


def to_peer(info: m.NodeInfo) -> Peer:
    return Peer(info.node_id, info.host, info.port)


def to_info(peer: Peer) -> m.NodeInfo:
    return m.NodeInfo(peer.node_id, peer.host, peer.port)


class Overlay:
    def __init__(self, identity: Identity, net: PeerNet, store: Store, config: KademliaConfig,
                 clock: Callable[[], float] = time.time) -> None:
        self.me, self.net, self.store, self.config = identity, net, store, config
        self.clock = clock
        self.tasks = Background("overlay task")
        self.table = RoutingTable(identity.node_id, k=config.k, head_fresh=HEAD_FRESH)
        # How long our lookup queries take: one slower than usual frees its place (lookup.py).
        self.times = QueryTimes(QUERY_TIMEOUT)
        self.lookups = 0
        # Nodes joined or left the table: the closest set of some ID may have changed.
        self.membership_changed = False
        # reach.py: verifies an inbound link's contact before it enters the table, and
        # remembers failed addresses so lookups do not dial them again at once.
        self.admit: Callable[[Link, Peer], None] | None = None
        self.book = AddressBook()
        # Lookup datagrams (datagram_net.py, PROTOCOL.md §16): node-finding queries to nodes
        # we have no link with, one round trip each; None: over links only.
        self.datagrams: Datagrams | None = None
        # reach.py: probes a contact, then observes it (a datagram responder is a hint only).
        self.verify: Callable[[Peer], None] | None = None
        # Set by the mail keyring: whether a MailKeyReply record is a valid one of the node.
        self.record_check: Callable[[bytes, bytes], bool] = lambda node_id, record: False

    # ----- links coming and going ---------------------------------------------------

    def address_of(self, link: Link) -> tuple[str, int] | None:
        """Where others may dial this peer: what we dialed, or its contact read against the
        address we see it at (see addresses.observed_address)."""
        return observed_address(link.direction, link.contact, link.address)

    def _reached_at(self, node_id: bytes) -> Peer | None:
        """The node as we really reach it: a reply came over its link, whatever address the
        lookup had for it (a link to that ID may already have existed)."""
        link = self.net.links.get(node_id)
        address = None if link is None else self.address_of(link)
        return None if address is None else Peer(node_id, *address)

    def on_link(self, link: Link) -> None:
        # The handshake proved the key, so it is as good as a key directory answer.
        self.store.put_key(link.peer_id, link.peer_key, int(self.clock()))
        address = self.address_of(link)
        if address is not None:
            self._learn(link, Peer(link.peer_id, *address))

    def _learn(self, link: Link | None, peer: Peer) -> None:
        """A contact read from a link the peer dialed is verified first (reach.py)."""
        if link is not None and link.direction == "in" and self.admit is not None:
            self.admit(link, peer)
        else:
            self.observe(peer)

    def observe(self, peer: Peer) -> None:
        if not routable(peer.host):   # IP literals only: names would dodge the subnet limit
            return
        decision = self.table.observe(peer, self.clock())
        if isinstance(decision, PingHead):
            self.tasks.spawn(self._ping_head(decision.head))
        elif isinstance(decision, Added):
            self.membership_changed = True

    def _failed(self, node_id: bytes) -> None:
        if self.table.failed(node_id, self.clock()) is not None:
            self.membership_changed = True

    async def _ping_head(self, head: Peer) -> None:
        try:
            await self.net.request(head.host, head.port, head.node_id, m.Ping)
        except FluxError:
            self._failed(head.node_id)
        else:
            self.table.head_alive(head.node_id, self.clock())

    # ----- serving requests ---------------------------------------------------------

    def closest_contacts(self, target: bytes) -> list[Contact]:
        """What a lookup datagram is answered with (the asker filters itself out)."""
        return [Contact(p.node_id, p.host, p.port) for p in self.table.closest(target, self.config.k)]

    def closest_infos(self, target: bytes, exclude: bytes) -> tuple[m.NodeInfo, ...]:
        peers = self.table.closest(target, self.config.k, exclude={exclude})
        return tuple(to_info(p) for p in peers)

    def on_find_node(self, link: Link, request: m.FindNode) -> m.Message:
        return m.Nodes(request.rid, self.closest_infos(request.target, link.peer_id))

    def on_find_key(self, link: Link, request: m.FindKey) -> m.Message:
        if request.node_id == self.me.node_id:
            key = self.me.public_der
        else:
            key = self.store.get_key(request.node_id) or b""
        nodes = () if key else self.closest_infos(request.node_id, link.peer_id)
        return m.KeyReply(request.rid, key, nodes)

    def on_store_key(self, link: Link, request: m.StoreKey) -> m.Message:
        """Only a node's own key, over a link authenticated as that node: the handshake
        signature proved it holds the private key, so every row is a real key and costs
        its owner a handshake (proof of work included)."""
        if request.public_key != link.peer_key:
            return m.Fail(request.rid, int(E.FORBIDDEN),
                          "only the key of the node at the other end of the link is stored")
        if self.store.count_keys() >= MAX_HELD_KEYS:
            return m.Fail(request.rid, int(E.REFUSED), "key directory full")
        self.store.put_key(link.peer_id, request.public_key, int(self.clock()),
                           published_by_owner=True)
        return m.Ok(request.rid)

    def expire_keys(self) -> int:
        """Forget keys not republished (or seen on a link) for KEY_TTL_INTERVALS republish
        intervals; those of contacts and of pending mail stay (see Store.expire_keys)."""
        ttl = KEY_TTL_INTERVALS * self.config.republish_interval
        return self.store.expire_keys(int(self.clock() - ttl))

    # ----- lookups --------------------------------------------------------------------

    async def find_node(self, target: bytes) -> list[Peer]:
        """The k closest live nodes to target that answered us, closest first."""
        lookup = Lookup(target, self.me.node_id, self.table.closest(target, self.config.k),
                        k=self.config.k, alpha=self.config.alpha)
        await self._drive(lookup, lambda rid: m.FindNode(rid, target))
        return lookup.result()

    async def find_key(self, node_id: bytes) -> bytes | None:
        """The public key of node_id from our cache or the key directory, hash-checked."""
        if node_id == self.me.node_id:
            return self.me.public_der
        cached = self.store.get_key(node_id)
        if cached:
            return cached
        lookup = Lookup(node_id, self.me.node_id, self.table.closest(node_id, self.config.k),
                        k=self.config.k, alpha=self.config.alpha, want_value=True)
        await self._drive(lookup, lambda rid: m.FindKey(rid, node_id))
        if not lookup.found:
            return None
        key = lookup.value
        assert isinstance(key, bytes)
        self.store.put_key(node_id, key, int(self.clock()))
        return key

    async def find_mail_key(self, node_id: bytes) -> bytes | None:
        """A mail key record of node_id from the directory, as `record_check` accepts it."""
        lookup = Lookup(node_id, self.me.node_id, self.table.closest(node_id, self.config.k),
                        k=self.config.k, alpha=self.config.alpha, want_value=True)
        await self._drive(lookup, lambda rid: m.FindMailKey(rid, node_id))
        return lookup.value if lookup.found and isinstance(lookup.value, bytes) else None

    async def find_contact(self, node_id: bytes) -> Peer | None:
        """The address of node_id if a lookup finds the node itself."""
        known = self.net.links.get(node_id)
        if known is not None:
            address = self.address_of(known)
            return Peer(node_id, *address) if address else Peer(node_id, *known.address)
        return await self.locate(node_id)

    async def locate(self, node_id: bytes) -> Peer | None:
        """Look node_id up and stop as soon as it answers: its own reply proves where it is,
        so its neighbours need not all be asked, nor dead ones waited for (bench/sim.py:
        about a quarter of the RPCs of a full lookup)."""
        lookup = Lookup(node_id, self.me.node_id, self.table.closest(node_id, self.config.k),
                        k=self.config.k, alpha=self.config.alpha, want_value=True)
        await self._drive(lookup, lambda rid: m.FindNode(rid, node_id))
        return lookup.value if isinstance(lookup.value, Peer) else None

    async def _drive(self, lookup: Lookup, build: Callable[[int], m.Message]) -> None:
        self.lookups += 1
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Task[m.Message], Peer] = {}
        slow_at: dict[asyncio.Task[m.Message], float] = {}   # not yet reported slow
        try:
            while True:
                for peer in lookup.next_queries():
                    linked = peer.node_id in self.net.links
                    task = asyncio.ensure_future(self._query(peer, build, lookup))
                    running[task] = peer
                    slow_at[task] = loop.time() + self.times.slow_after(linked)
                if not running or lookup.found:   # a found value is final: stop waiting
                    break
                wake = min(slow_at.values(), default=None)
                done, _ = await asyncio.wait(
                    running, return_when=asyncio.FIRST_COMPLETED,
                    timeout=None if wake is None else max(0.0, wake - loop.time()))
                for task in done:
                    slow_at.pop(task, None)
                    self._settle(lookup, running.pop(task), task)
                for task in [t for t, at in slow_at.items() if at <= loop.time()]:
                    del slow_at[task]
                    lookup.on_slow(running[task].node_id)   # keeps alpha queries moving
        finally:
            for task in running:   # cancelled lookups leave no orphan queries behind
                task.cancel()
        self.table.touch_bucket(lookup.target, self.clock())

    async def _query(self, peer: Peer, build: Callable[[int], m.Message],
                     lookup: Lookup | None = None) -> m.Message:
        linked = peer.node_id in self.net.links
        if not linked and not self.book.dial_allowed(peer.host, peer.port, self.clock()):
            raise DialError(f"{peer.host}:{peer.port}: failed recently, backing off")
        # A dead address must not hold the lookup for the whole handshake timeout; but the
        # target's own answer is what a value lookup wants, so it gets the link's timeouts
        # (being slow, it no longer holds the other queries back).
        wanted = lookup is not None and lookup.want_value and peer.node_id == lookup.target
        target = None if linked or wanted else self._datagram_target(peer, build)
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(None if wanted else QUERY_TIMEOUT):
                if target is not None:
                    reply = await self._ask_datagram(peer, target, started)
                    if reply is not None:
                        return reply
                reply = await self.net.request(peer.host, peer.port, peer.node_id, build)
        except (FluxError, TimeoutError):
            if not linked:
                self.book.failed(peer.host, peer.port, self.clock())
            raise
        if target is not None and self.datagrams is not None:
            self.datagrams.fell_back(peer.host, peer.port)   # alive, but not over UDP
        elapsed = asyncio.get_running_loop().time() - started
        self.times.record(linked, elapsed)
        if linked and self.datagrams is not None:   # a round trip: how long to wait for one
            self.datagrams.times.record(True, elapsed)
        self.book.succeeded(None, peer.host, peer.port, self.clock())
        return reply

    def _datagram_target(self, peer: Peer, build: Callable[[int], m.Message]) -> bytes | None:
        """The target, when this query may go as a datagram: a FindNode (node finding
        only: records, mail and stores stay on links) to a contact that takes datagrams."""
        if self.datagrams is None or not self.datagrams.usable(peer.host, peer.port):
            return None
        request = build(0)
        return request.target if isinstance(request, m.FindNode) else None

    async def _ask_datagram(self, peer: Peer, target: bytes, started: float) -> m.Message | None:
        """One datagram round trip; None: no answer in time (the caller asks over a link).
        Its answer is a hint: the responder enters the table only once a probe of its
        address met its TLS key (`verify`), and its contacts only steer the lookup."""
        assert self.datagrams is not None
        contacts = await self.datagrams.find_node(peer.host, peer.port, target)
        if contacts is None:
            return None
        loop = asyncio.get_running_loop()
        self.times.record(True, loop.time() - started)   # one round trip, as over a link
        self.book.succeeded(None, peer.host, peer.port, self.clock())
        if self.verify is not None and self.table.has_room(peer.node_id):
            self.verify(peer)
        nodes = tuple(m.NodeInfo(c.node_id, c.host, c.port) for c in contacts)
        return m.Nodes(0, nodes[: self.config.k])

    def _settle(self, lookup: Lookup, peer: Peer, task: asyncio.Task[m.Message]) -> None:
        error = task.exception()
        if error is not None and not isinstance(error, FluxError):
            # Our bug, not the peer's doing: log it once, let the lookup go on, blame no one.
            log.error("bug in a lookup query to %s", short_id(peer.node_id), exc_info=error)
            lookup.on_failure(peer.node_id)
            return
        reply = None if error else task.result()
        if isinstance(reply, m.KeyReply) and reply.public_key:
            if id_from_spki(reply.public_key) == lookup.target:
                lookup.on_value(peer.node_id, reply.public_key)
            else:
                log.info("peer %s served a key that does not hash to the ID", short_id(peer.node_id),
                         extra=about_peer(peer.node_id))
                lookup.on_failure(peer.node_id)
            return
        if isinstance(reply, m.MailKeyReply) and reply.record:
            if self.record_check(lookup.target, reply.record):
                lookup.on_value(peer.node_id, reply.record)
            else:
                lookup.on_failure(peer.node_id)
            return
        if isinstance(reply, (m.Nodes, m.KeyReply, m.MailKeyReply)):
            reached = self._reached_at(peer.node_id)
            link = self.net.links.get(peer.node_id)
            if reached is not None:
                self._learn(link, reached)
            if isinstance(reply, m.Nodes) and lookup.want_value and peer.node_id == lookup.target:
                # locate(): the node itself answered, at the address we reached it on
                lookup.on_value(peer.node_id, reached or peer)
                return
            source = link.address[0] if link is not None else peer.host
            found = [to_peer(n) for n in reply.nodes
                     if n.node_id != self.me.node_id and reported_ok(n.host, source)]
            lookup.on_reply(peer.node_id, found)
            return
        lookup.on_failure(peer.node_id)
        if peer.node_id not in self.net.links:
            # A slow answer over a live link is load, not death (the keepalive judges the
            # link); evicting it could leave a node behind NAT with an empty table.
            self._failed(peer.node_id)

    # ----- joining and upkeep -------------------------------------------------------

    async def bootstrap(self, entries: list[tuple[str, int]]) -> int:
        """Dial every bootstrap address, then look up our own ID; returns the links made."""
        addresses = [a for host, port in entries for a in await self._resolve(host, port)]
        results = await settle((self.net.dial(h, p) for h, p in addresses), "bootstrap",
                               NEW_LINKS_AT_ONCE)
        for (host, port), result in zip(addresses, results, strict=True):
            if isinstance(result, FluxError) and not isinstance(result, Bug):
                log.info("bootstrap %s:%d: %s", host, port, result)
        linked = sum(1 for r in results if not isinstance(r, FluxError))
        await self.find_node(self.me.node_id)
        return linked

    async def _resolve(self, host: str, port: int) -> list[tuple[str, int]]:
        """A bootstrap host as IP addresses (at most NAME_ADDRESSES of them for a name)."""
        if routable(host):
            return [(host, port)]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                                 type=socket.SOCK_STREAM)
        except OSError as exc:
            log.info("bootstrap %s:%d: cannot resolve: %s", host, port, exc)
            return []
        ips = [str(info[4][0]) for info in infos if routable(str(info[4][0]))]
        return [(ip, port) for ip in dict.fromkeys(ips)][:NAME_ADDRESSES]

    async def publish_key(self) -> int:
        """Store our key on the k nodes closest to our ID; returns how many took it."""
        return await self._publish(lambda rid: m.StoreKey(rid, self.me.public_der))

    async def publish_mail_key(self, record: bytes) -> int:
        """Store our mail key record on the k nodes closest to our ID (after our key)."""
        return await self._publish(lambda rid: m.StoreMailKey(rid, record))

    async def _publish(self, make: Callable[[int], m.Message]) -> int:
        """Send one store request to each of the k nodes closest to our ID; how many said Ok."""
        peers = await self.find_node(self.me.node_id)

        async def push(peer: Peer) -> bool:
            reply = await self.net.request(peer.host, peer.port, peer.node_id, make)
            return isinstance(reply, m.Ok)

        results = await settle((push(p) for p in peers), "publishing a key", NEW_LINKS_AT_ONCE)
        return sum(1 for r in results if r is True)

    async def refresh(self) -> None:
        for target in self.table.stale_buckets(self.clock(), self.config.refresh_interval,
                                               os.urandom(32)):
            await self.find_node(target)

    def save(self) -> None:
        entries = [(c.peer.node_id, c.peer.host, c.peer.port, int(c.last_seen))
                   for c in self.table.entries()]
        self.store.save_routing(entries)

    def load(self) -> int:
        for node_id, host, port, last_seen in self.store.load_routing():
            if routable(host):
                self.table.observe(Peer(node_id, host, port), float(last_seen))
        return len(self.table)
