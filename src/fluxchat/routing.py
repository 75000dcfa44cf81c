"""Kademlia routing table (pure): k-buckets, replacement caches, per-subnet limits.

The table never does I/O. It answers each observation with a decision (`Added`, `Updated`,
`PingHead`, `Rejected`) and the node carries it out, e.g. pings the head of a full bucket and
reports back with `head_alive` or `failed`.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import heapq
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from .ids import ID_BITS, ID_BYTES
from .records import mutable_record, record

K = 20
SUBNET_LIMIT = 2
REPLACEMENT_SIZE = 8
MAX_FAILURES = 2
_ID_SPACE = 1 << ID_BITS


@record
class Peer:
    node_id: bytes
    host: str
    port: int


@record
class Added:
    peer: Peer


@record
class Updated:
    peer: Peer


@record
class PingHead:
    """The bucket is full and cannot split: ping `head`; `candidate` waits in the replacement cache."""

    head: Peer
    candidate: Peer


@record
class Rejected:
    """Not stored: "own id", "bad node id", "bad port", "bad host" or "subnet limit"."""

    reason: str


@record
class Cached:
    """The bucket is full; `candidate` waits in the replacement cache, and no ping is needed
    because the head's ping is already in flight or the head was seen moments ago."""

    candidate: Peer


Observation = Added | Updated | PingHead | Cached | Rejected


@record
class Evicted:
    """A peer left the table; `replacement` (if any) took its place from the replacement cache."""

    peer: Peer
    replacement: Peer | None


@record
class Contact:
    """A stored entry as seen from outside (persistence, status display)."""

    peer: Peer
    last_seen: float
    failures: int


@record
class BucketView:
    lo: int
    hi: int
    peers: tuple[Peer, ...]
    replacements: tuple[Peer, ...]
    last_touched: float


@mutable_record
class _Entry:
    peer: Peer
    last_seen: float
    failures: int = 0


@dataclass(eq=False)
class _Bucket:
    lo: int  # inclusive
    hi: int  # exclusive; hi - lo is always a power of two
    last_touched: float = float("-inf")  # never looked up: due for refresh at once
    entries: OrderedDict[bytes, _Entry] = field(default_factory=OrderedDict)  # head = oldest
    replacements: OrderedDict[bytes, _Entry] = field(default_factory=OrderedDict)  # tail = freshest

    def covers(self, value: int) -> bool:
        return self.lo <= value < self.hi


@functools.lru_cache(maxsize=4096)  # every observe compares against a whole bucket's hosts
def subnet_group(host: str) -> object | None:
    """The group a host counts against in the per-bucket subnet limit; None = unlimited.

    Loopback is unlimited because every local test node shares it; a hostname that is not
    an IP literal is its own group since we cannot tell its network without DNS.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ("name", host.lower())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None
    prefix = 24 if address.version == 4 else 48
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False)


def _check_peer(peer: Peer) -> str | None:
    if not isinstance(peer.node_id, bytes) or len(peer.node_id) != ID_BYTES:
        return "bad node id"
    if not isinstance(peer.port, int) or isinstance(peer.port, bool) or not 1 <= peer.port <= 65535:
        return "bad port"
    if not isinstance(peer.host, str) or not peer.host or len(peer.host) > 253:
        return "bad host"
    return None


class RoutingTable:
    def __init__(
        self,
        own_id: bytes,
        k: int = K,
        subnet_limit: int = SUBNET_LIMIT,
        replacement_size: int = REPLACEMENT_SIZE,
        max_failures: int = MAX_FAILURES,
        head_fresh: float = 0.0,
    ) -> None:
        if len(own_id) != ID_BYTES:
            raise ValueError(f"own_id must have {ID_BYTES} bytes")
        if k < 1 or subnet_limit < 1 or replacement_size < 0 or max_failures < 1:
            raise ValueError("k, subnet_limit and max_failures must be >= 1")
        self.own_id = own_id
        self.k = k
        self.subnet_limit = subnet_limit
        self.replacement_size = replacement_size
        self.max_failures = max_failures
        self.head_fresh = head_fresh  # a head seen this recently is not pinged again
        self._own = int.from_bytes(own_id, "big")
        self._buckets: list[_Bucket] = [_Bucket(0, _ID_SPACE)]
        self._los: list[int] = [0]  # bucket lower bounds, kept sorted for bisect
        self._pinged: set[bytes] = set()  # heads we asked the node to ping

    # ---- lookup helpers -------------------------------------------------------------

    def _bucket_for(self, node_id: bytes) -> _Bucket:
        value = int.from_bytes(node_id, "big")
        return self._buckets[bisect.bisect_right(self._los, value) - 1]

    def _entry(self, node_id: bytes) -> _Entry | None:
        return self._bucket_for(node_id).entries.get(node_id)

    def __len__(self) -> int:
        return sum(len(b.entries) for b in self._buckets)

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, bytes) and len(node_id) == ID_BYTES and self._entry(node_id) is not None

    def get(self, node_id: bytes) -> Peer | None:
        entry = self._entry(node_id) if len(node_id) == ID_BYTES else None
        return entry.peer if entry else None

    def peers(self) -> list[Peer]:
        return [e.peer for b in self._buckets for e in b.entries.values()]

    def entries(self) -> list[Contact]:
        """All entries, oldest first within each bucket: replaying them through `observe`
        with `now=last_seen` rebuilds the same order after a restart."""
        return [Contact(e.peer, e.last_seen, e.failures) for b in self._buckets for e in b.entries.values()]

    def buckets(self) -> list[BucketView]:
        return [
            BucketView(
                b.lo,
                b.hi,
                tuple(e.peer for e in b.entries.values()),
                tuple(e.peer for e in b.replacements.values()),
                b.last_touched,
            )
            for b in self._buckets
        ]

    def closest(self, target: bytes, n: int, exclude: set[bytes] | None = None) -> list[Peer]:
        """The n stored peers closest to target by XOR distance, closest first."""
        goal = int.from_bytes(target, "big")
        skip = exclude or set()
        pool = (
            (int.from_bytes(node_id, "big") ^ goal, e.peer)
            for b in self._buckets
            for node_id, e in b.entries.items()
            if node_id not in skip
        )
        return [peer for _, peer in heapq.nsmallest(n, pool, key=lambda item: item[0])]

    def has_room(self, node_id: bytes) -> bool:
        """Whether observing node_id now would add it: not in the table, and its bucket has
        room or would split (the subnet limit aside). Lets the node spend a probe on a
        contact only where the table would take it."""
        if len(node_id) != ID_BYTES or node_id == self.own_id:
            return False
        bucket = self._bucket_for(node_id)
        if node_id in bucket.entries:
            return False
        return len(bucket.entries) < self.k or (bucket.covers(self._own) and bucket.hi - bucket.lo > 1)

    # ---- observation ----------------------------------------------------------------

    def observe(self, peer: Peer, now: float) -> Observation:
        """A peer showed signs of life (it answered us or sent us a request)."""
        problem = _check_peer(peer)
        if problem:
            return Rejected(problem)
        if peer.node_id == self.own_id:
            return Rejected("own id")
        while True:
            bucket = self._bucket_for(peer.node_id)
            known = bucket.entries.get(peer.node_id)
            if known is not None:
                return self._refresh(bucket, known, peer, now)
            if len(bucket.entries) >= self.k and bucket.covers(self._own) and bucket.hi - bucket.lo > 1:
                self._split(bucket)  # then retry: the peer's half may still be full
                continue
            if not self._subnet_allows(bucket, peer):
                return Rejected("subnet limit")
            if len(bucket.entries) < self.k:
                bucket.replacements.pop(peer.node_id, None)
                bucket.entries[peer.node_id] = _Entry(peer, now)
                return Added(peer)
            return self._queue_candidate(bucket, peer, now)

    def _refresh(self, bucket: _Bucket, entry: _Entry, peer: Peer, now: float) -> Observation:
        if entry.peer.host != peer.host and not self._subnet_allows(bucket, peer, ignore=peer.node_id):
            # Keep the old address rather than let a moving peer crowd one subnet.
            return Rejected("subnet limit")
        entry.peer = peer
        entry.last_seen = now
        entry.failures = 0
        bucket.entries.move_to_end(peer.node_id)
        self._pinged.discard(peer.node_id)
        return Updated(peer)

    def _subnet_allows(self, bucket: _Bucket, peer: Peer, ignore: bytes | None = None) -> bool:
        group = subnet_group(peer.host)
        if group is None:
            return True
        same = sum(
            1
            for node_id, e in bucket.entries.items()
            if node_id != ignore and subnet_group(e.peer.host) == group
        )
        return same < self.subnet_limit

    def _queue_candidate(self, bucket: _Bucket, peer: Peer, now: float) -> PingHead | Cached:
        cache = bucket.replacements
        cache.pop(peer.node_id, None)
        cache[peer.node_id] = _Entry(peer, now)
        while len(cache) > self.replacement_size:
            cache.popitem(last=False)  # drop the stalest candidate
        head = next(iter(bucket.entries.values()))
        # One ping per head at a time, and none for a head that just proved itself alive:
        # in a busy network every lookup would otherwise ping the same heads again.
        if head.peer.node_id in self._pinged or now - head.last_seen < self.head_fresh:
            return Cached(peer)
        self._pinged.add(head.peer.node_id)
        return PingHead(head.peer, peer)

    def _split(self, bucket: _Bucket) -> None:
        mid = bucket.lo + (bucket.hi - bucket.lo) // 2
        low = _Bucket(bucket.lo, mid, bucket.last_touched)
        high = _Bucket(mid, bucket.hi, bucket.last_touched)
        # Only the bucket holding our own ID splits, and it never queues candidates (it splits
        # instead), so there are only entries to move; iterating keeps their LRS order.
        for node_id, entry in bucket.entries.items():
            half = low if int.from_bytes(node_id, "big") < mid else high
            half.entries[node_id] = entry
        index = bisect.bisect_right(self._los, bucket.lo) - 1
        self._buckets[index : index + 1] = [low, high]
        self._los[index : index + 1] = [low.lo, high.lo]

    # ---- liveness feedback ----------------------------------------------------------

    def head_alive(self, head_id: bytes, now: float) -> None:
        """The pinged head answered: it stays (moved to the tail); the candidate keeps waiting."""
        entry = self._entry(head_id)
        self._pinged.discard(head_id)
        if entry is None:
            return
        entry.last_seen = now
        entry.failures = 0
        self._bucket_for(head_id).entries.move_to_end(head_id)

    def failed(self, node_id: bytes, now: float) -> Evicted | None:
        """An RPC to node_id failed at `now`. A pinged head goes at once; others after
        `max_failures` failures in a row, so one lost packet does not cost a good contact.
        (`now` mirrors `observe`; failures are counted, not aged.)"""
        bucket = self._bucket_for(node_id)
        bucket.replacements.pop(node_id, None)  # a failing candidate must not be promoted
        entry = bucket.entries.get(node_id)
        if entry is None:
            self._pinged.discard(node_id)
            return None
        entry.failures += 1
        if node_id in self._pinged or entry.failures >= self.max_failures:
            return self.remove(node_id)
        return None

    def remove(self, node_id: bytes) -> Evicted | None:
        """Drop a node (and any cached copy) and promote the freshest fitting replacement."""
        self._pinged.discard(node_id)
        bucket = self._bucket_for(node_id)
        bucket.replacements.pop(node_id, None)
        entry = bucket.entries.pop(node_id, None)
        if entry is None:
            return None
        return Evicted(entry.peer, self._promote(bucket))

    def _promote(self, bucket: _Bucket) -> Peer | None:
        for node_id in reversed(list(bucket.replacements)):  # freshest first
            candidate = bucket.replacements[node_id]
            if self._subnet_allows(bucket, candidate.peer):
                del bucket.replacements[node_id]
                bucket.entries[node_id] = candidate  # tail: it was seen more recently than the rest
                return candidate.peer
        return None

    # ---- refresh --------------------------------------------------------------------

    def touch_bucket(self, target: bytes, now: float) -> None:
        """A lookup for `target` ran: its bucket counts as refreshed."""
        self._bucket_for(target).last_touched = now

    def stale_buckets(self, now: float, refresh_interval: float, random_bytes: bytes) -> list[bytes]:
        """One random target ID inside each bucket not looked up for refresh_interval.

        `random_bytes` is a caller-supplied seed (>= 16 bytes, e.g. os.urandom(32)); bucket i's
        target is derived from sha256(seed || i), so callers need not know the bucket count.
        """
        if len(random_bytes) < 16:
            raise ValueError("random_bytes must hold at least 16 bytes")
        targets = []
        for index, bucket in enumerate(self._buckets):
            if now - bucket.last_touched < refresh_interval:
                continue
            digest = hashlib.sha256(random_bytes + index.to_bytes(4, "big")).digest()
            # Bucket sizes are powers of two, so the modulo keeps the draw uniform.
            offset = int.from_bytes(digest, "big") % (bucket.hi - bucket.lo)
            targets.append((bucket.lo + offset).to_bytes(ID_BYTES, "big"))
        return targets
