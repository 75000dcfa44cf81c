from __future__ import annotations

import hashlib
import itertools
import unittest
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.ids import distance
from fluxchat.routing import Added, Cached, Evicted, Peer, PingHead, Rejected, RoutingTable, Updated, subnet_group

OWN = bytes(32)
TOP = 1 << 255  # IDs with this bit set sit in the half of the space far from OWN


def nid(value: int) -> bytes:
    return value.to_bytes(32, "big")


def peer(value: int, host: str = "127.0.0.1", port: int = 4000) -> Peer:
    return Peer(nid(value), host, port)


class ObserveTest(unittest.TestCase):
    def test_rejects_self_and_malformed(self) -> None:
        table = RoutingTable(OWN)
        self.assertEqual(table.observe(Peer(OWN, "127.0.0.1", 1), 0), Rejected("own id"))
        for bad_port in (0, 65536, -1, True):
            self.assertEqual(table.observe(peer(5, port=bad_port), 0), Rejected("bad port"))
        self.assertEqual(table.observe(peer(5, host=""), 0), Rejected("bad host"))
        self.assertEqual(table.observe(Peer(b"\1" * 31, "127.0.0.1", 1), 0), Rejected("bad node id"))
        self.assertEqual(len(table), 0)
        self.assertNotIn(OWN, table)

    def test_added_then_updated_moves_to_tail(self) -> None:
        table = RoutingTable(OWN)
        self.assertEqual(table.observe(peer(TOP | 1), 1.0), Added(peer(TOP | 1)))
        table.observe(peer(TOP | 2), 2.0)
        moved = peer(TOP | 1, "127.0.0.2", 5000)
        self.assertEqual(table.observe(moved, 3.0), Updated(moved))
        self.assertEqual(table.peers(), [peer(TOP | 2), moved])
        self.assertEqual([(c.peer, c.last_seen) for c in table.entries()], [(peer(TOP | 2), 2.0), (moved, 3.0)])
        self.assertEqual(table.get(nid(TOP | 1)), moved)
        self.assertIsNone(table.get(nid(TOP | 3)))

    def test_full_far_bucket_asks_to_ping_head(self) -> None:
        table = RoutingTable(OWN, k=2)
        table.observe(peer(TOP | 1), 1)
        table.observe(peer(TOP | 2), 2)
        self.assertEqual(len(table.buckets()), 1)
        # The single bucket holds OWN, so it splits; the far half is then full and cannot split.
        result = table.observe(peer(TOP | 3), 3)
        self.assertEqual(result, PingHead(peer(TOP | 1), peer(TOP | 3)))
        ranges = [(b.lo, b.hi) for b in table.buckets()]
        self.assertEqual(ranges, [(0, TOP), (TOP, 2 * TOP)])
        self.assertEqual(table.buckets()[1].replacements, (peer(TOP | 3),))
        self.assertNotIn(nid(TOP | 3), table)

    def test_has_room_says_whether_observe_would_add(self) -> None:
        table = RoutingTable(OWN, k=2)
        self.assertFalse(table.has_room(OWN))
        self.assertFalse(table.has_room(b"\1" * 31))
        table.observe(peer(TOP | 1), 1)
        self.assertFalse(table.has_room(nid(TOP | 1)))      # already in
        self.assertTrue(table.has_room(nid(TOP | 2)))       # room
        table.observe(peer(TOP | 2), 2)
        self.assertTrue(table.has_room(nid(TOP | 3)))       # full, but holds OWN: splits
        table.observe(peer(TOP | 3), 3)                      # split; the far half is full
        self.assertFalse(table.has_room(nid(TOP | 4)))
        self.assertIsInstance(table.observe(peer(TOP | 4), 4), (PingHead, Cached))   # not added
        self.assertTrue(table.has_room(nid(5)))             # the near half is empty

    def test_bucket_holding_own_id_keeps_splitting(self) -> None:
        table = RoutingTable(OWN, k=2)
        for value in (1, 2, 3, 4, 5):  # all close to OWN: forces splits down to small ranges
            self.assertIsInstance(table.observe(peer(value), value), Added)
        self.assertEqual(len(table), 5)
        # [4, 8) is full with 4 and 5 and no longer holds OWN: it does not split.
        self.assertEqual(table.observe(peer(6), 6), PingHead(peer(4), peer(6)))
        for bucket in table.buckets():
            self.assertLessEqual(len(bucket.peers), 2)
        self.assertEqual(table.buckets()[0].lo, 0)
        self.assertEqual(table.buckets()[0].hi, 2)  # [0, 2) holds OWN and 1

    def test_subnet_groups(self) -> None:
        same = [("10.0.0.1", "10.0.0.250"), ("10.0.0.1", "::ffff:10.0.0.9"),
                ("2001:db8:1::1", "2001:db8:1:ffff::2"), ("node.example", "NODE.example")]
        for a, b in same:
            self.assertEqual(subnet_group(a), subnet_group(b))
        differ = [("10.0.0.1", "10.0.1.1"), ("2001:db8:1::1", "2001:db8:2::1"), ("a.example", "b.example")]
        for a, b in differ:
            self.assertNotEqual(subnet_group(a), subnet_group(b))
        for loopback in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
            self.assertIsNone(subnet_group(loopback))

    def test_subnet_limit_spares_loopback(self) -> None:
        table = RoutingTable(OWN, subnet_limit=2)
        self.assertIsInstance(table.observe(peer(TOP | 1, "10.0.0.1"), 0), Added)
        self.assertIsInstance(table.observe(peer(TOP | 2, "10.0.0.2"), 0), Added)
        self.assertEqual(table.observe(peer(TOP | 3, "10.0.0.3"), 0), Rejected("subnet limit"))
        self.assertIsInstance(table.observe(peer(TOP | 3, "10.0.1.3"), 0), Added)
        for i in range(4, 12):
            self.assertIsInstance(table.observe(peer(TOP | i, "127.0.0.1"), 0), Added)

    def test_subnet_limit_is_per_bucket(self) -> None:
        table = RoutingTable(OWN, k=2, subnet_limit=1)
        table.observe(peer(TOP | 1, "10.0.0.1"), 0)
        table.observe(peer(1, "127.0.0.1"), 0)
        table.observe(peer(2, "127.0.0.1"), 0)  # splits: TOP|1 and 1 now sit in different buckets
        self.assertIsInstance(table.observe(peer(3, "10.0.0.2"), 0), Added)
        self.assertEqual(table.observe(peer(TOP | 2, "10.0.0.3"), 0), Rejected("subnet limit"))

    def test_address_change_cannot_crowd_subnet(self) -> None:
        table = RoutingTable(OWN, subnet_limit=1)
        table.observe(peer(TOP | 1, "10.0.0.1"), 0)
        table.observe(peer(TOP | 2, "10.0.1.1"), 0)
        self.assertEqual(table.observe(peer(TOP | 2, "10.0.0.2"), 1), Rejected("subnet limit"))
        self.assertEqual(table.get(nid(TOP | 2)), peer(TOP | 2, "10.0.1.1"))
        self.assertIsInstance(table.observe(peer(TOP | 1, "10.0.0.7"), 1), Updated)


class LivenessTest(unittest.TestCase):
    def full_table(self, replacement_size: int = 8) -> RoutingTable:
        table = RoutingTable(OWN, k=2, replacement_size=replacement_size)
        table.observe(peer(TOP | 1), 1)
        table.observe(peer(TOP | 2), 2)
        table.observe(peer(1), 2)  # splits once
        return table

    def test_head_alive_keeps_head_and_candidate_waits(self) -> None:
        table = self.full_table()
        ping = table.observe(peer(TOP | 3), 3)
        assert isinstance(ping, PingHead)
        table.head_alive(ping.head.node_id, 4)
        far = table.buckets()[-1]
        self.assertEqual(far.peers, (peer(TOP | 2), peer(TOP | 1)))
        self.assertEqual(far.replacements, (peer(TOP | 3),))
        # The answered head is no longer "pinged": one failure does not evict it.
        self.assertIsNone(table.failed(nid(TOP | 1), 5))
        self.assertIn(nid(TOP | 1), table)

    def test_head_failing_ping_is_replaced_by_candidate(self) -> None:
        table = self.full_table()
        ping = table.observe(peer(TOP | 3), 3)
        assert isinstance(ping, PingHead)
        evicted = table.failed(ping.head.node_id, 4)
        self.assertEqual(evicted, Evicted(peer(TOP | 1), peer(TOP | 3)))
        self.assertEqual(table.buckets()[-1].peers, (peer(TOP | 2), peer(TOP | 3)))
        self.assertEqual(table.buckets()[-1].replacements, ())

    def test_failures_count_up_to_max(self) -> None:
        table = self.full_table()
        self.assertIsNone(table.failed(nid(TOP | 2), 3))
        table.observe(peer(TOP | 2), 4)  # a sign of life resets the counter
        self.assertIsNone(table.failed(nid(TOP | 2), 5))
        self.assertEqual(table.failed(nid(TOP | 2), 6), Evicted(peer(TOP | 2), None))
        self.assertNotIn(nid(TOP | 2), table)
        self.assertIsNone(table.failed(nid(TOP | 2), 7))

    def test_freshest_replacement_wins_and_cache_is_bounded(self) -> None:
        table = self.full_table(replacement_size=2)
        for value in (3, 4, 5):
            table.observe(peer(TOP | value), value)
        self.assertEqual(table.buckets()[-1].replacements, (peer(TOP | 4), peer(TOP | 5)))
        table.observe(peer(TOP | 4), 9)  # seen again: now the freshest
        self.assertEqual(table.remove(nid(TOP | 2)), Evicted(peer(TOP | 2), peer(TOP | 4)))
        self.assertIsNone(table.remove(nid(TOP | 2)))
        table.failed(nid(TOP | 5), 10)  # a failing candidate must never be promoted
        self.assertEqual(table.buckets()[-1].replacements, ())

    def test_promotion_respects_subnet_limit(self) -> None:
        table = RoutingTable(OWN, k=2, subnet_limit=1)
        table.observe(peer(TOP | 1, "10.0.0.1"), 1)
        table.observe(peer(TOP | 2, "10.0.1.1"), 1)
        table.observe(peer(1), 1)
        table.observe(peer(TOP | 3, "10.0.2.1"), 2)
        table.observe(peer(TOP | 4, "10.0.0.2"), 3)  # freshest, but clashes with TOP|1
        evicted = table.remove(nid(TOP | 2))
        self.assertEqual(evicted, Evicted(peer(TOP | 2, "10.0.1.1"), peer(TOP | 3, "10.0.2.1")))


class QueryTest(unittest.TestCase):
    def test_closest_and_exclude(self) -> None:
        table = RoutingTable(OWN)
        for value in (1, 2, 3, 8, TOP | 1):
            table.observe(peer(value), 0)
        self.assertEqual(table.closest(nid(2), 3), [peer(2), peer(3), peer(1)])
        self.assertEqual(table.closest(nid(2), 2, exclude={nid(2)}), [peer(3), peer(1)])
        self.assertEqual(len(table.closest(nid(0), 50)), 5)

    def test_stale_buckets_and_touch(self) -> None:
        table = RoutingTable(OWN, k=2)
        seed = b"s" * 32
        self.assertEqual(len(table.stale_buckets(0, 3600, seed)), 1)  # never looked up
        for value in (1, 2, TOP | 1, TOP | 2, 1 << 200):
            table.observe(peer(value), 0)
        table.touch_bucket(nid(1), 100)
        buckets = table.buckets()
        targets = table.stale_buckets(200, 3600, seed)
        self.assertEqual(len(targets), len(buckets) - 1)
        stale = [b for b in buckets if not b.lo <= 1 < b.hi]
        for bucket, target in zip(stale, targets, strict=True):
            self.assertTrue(bucket.lo <= int.from_bytes(target, "big") < bucket.hi)
        self.assertEqual(targets, table.stale_buckets(200, 3600, seed))
        self.assertNotEqual(targets, table.stale_buckets(200, 3600, b"t" * 32))
        self.assertEqual(len(table.stale_buckets(4000, 3600, seed)), len(buckets))
        with self.assertRaises(ValueError):
            table.stale_buckets(0, 1, b"short")

    def test_entries_replay_rebuilds_table(self) -> None:
        table = RoutingTable(OWN, k=3)
        for i in range(1, 40):
            table.observe(peer(int.from_bytes(hashlib.sha256(bytes([i])).digest(), "big")), i)
        copy = RoutingTable(OWN, k=3)
        for contact in sorted(table.entries(), key=lambda c: c.last_seen):
            copy.observe(contact.peer, contact.last_seen)
        self.assertEqual(copy.entries(), table.entries())


# ---- properties -------------------------------------------------------------------------

HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1", "127.0.0.1", "::1", "2001:db8::1", "2001:db8::2",
         "2001:db8:0:1::1", "a.example", "b.example"]
PROP_OWN = hashlib.sha256(b"own").digest()
# An ID at a chosen depth below OWN: XOR OWN with a random value shifted right. Mostly shallow
# shifts, so that a few far buckets fill up (pings, evictions), plus some deep ones (splits).
ids = st.builds(
    lambda shift, raw: nid(int.from_bytes(PROP_OWN, "big") ^ (int.from_bytes(raw, "big") >> shift)),
    st.integers(0, 2) | st.integers(0, 255), st.binary(min_size=32, max_size=32),
)
ops = st.lists(
    st.tuples(st.sampled_from(["observe", "observe", "observe", "failed", "remove", "answer_ping", "fail_ping"]),
              st.integers(0, 19), st.sampled_from(HOSTS)),
    min_size=20, max_size=150,
)


class PropertyTest(unittest.TestCase):
    def check_invariants(self, table: RoutingTable, k: int, limit: int, targets: list[bytes]) -> None:
        own = int.from_bytes(PROP_OWN, "big")
        buckets = table.buckets()
        self.assertEqual(buckets[0].lo, 0)
        self.assertEqual(buckets[-1].hi, 1 << 256)
        seen: set[bytes] = set()
        for left, right in itertools.pairwise(buckets):
            self.assertEqual(left.hi, right.lo)
        for bucket in buckets:
            size = bucket.hi - bucket.lo
            self.assertEqual(size & (size - 1), 0)
            if not bucket.lo <= own < bucket.hi:  # a sibling of a node on our own ID's path
                self.assertEqual((bucket.lo ^ own) >> (size.bit_length() - 1), 1)
            self.assertLessEqual(len(bucket.peers), k)
            self.assertLessEqual(len(bucket.replacements), 2)
            for p in bucket.peers:
                self.assertTrue(bucket.lo <= int.from_bytes(p.node_id, "big") < bucket.hi)
                self.assertNotIn(p.node_id, seen)
                seen.add(p.node_id)
            groups = Counter(subnet_group(p.host) for p in bucket.peers)
            self.assertTrue(all(count <= limit for group, count in groups.items() if group is not None))
            self.assertFalse({p.node_id for p in bucket.replacements} & {p.node_id for p in bucket.peers})
        self.assertNotIn(PROP_OWN, seen)
        self.assertEqual(len(table), len(seen))
        for target in targets:
            brute = sorted(table.peers(), key=lambda p: distance(p.node_id, target))
            self.assertEqual(table.closest(target, 5), brute[:5])
            self.assertEqual(table.closest(target, 1000), brute)

    @settings(max_examples=100, deadline=None)
    @given(pool=st.lists(ids, min_size=20, max_size=20), steps=ops, targets=st.lists(ids, max_size=3))
    def test_random_operations_keep_invariants(self, pool: list[bytes], steps: list, targets: list[bytes]) -> None:
        k, limit = 2, 1
        table = RoutingTable(PROP_OWN, k=k, subnet_limit=limit, replacement_size=2)
        pings: list[PingHead] = []
        for now, (op, index, host) in enumerate(steps):
            node_id = pool[index]
            if op == "observe":
                result = table.observe(Peer(node_id, host, 4000 + index), now)
                if isinstance(result, PingHead):
                    pings.append(result)
                if node_id == PROP_OWN:
                    self.assertEqual(result, Rejected("own id"))
            elif op == "failed":
                table.failed(node_id, now)
            elif op == "remove":
                table.remove(node_id)
                self.assertNotIn(node_id, table)
            elif pings:
                ping = pings.pop(0)
                if op == "answer_ping":
                    table.head_alive(ping.head.node_id, now)
                else:
                    table.failed(ping.head.node_id, now)
        self.check_invariants(table, k, limit, targets + [PROP_OWN, pool[0]])


if __name__ == "__main__":
    unittest.main()


class HeadPingTest(unittest.TestCase):
    """A full bucket pings its head once at a time, and not when the head is fresh."""

    def full_table(self, head_fresh: float) -> RoutingTable:
        table = RoutingTable(bytes(32), k=2, subnet_limit=2, head_fresh=head_fresh)
        for i, value in enumerate((TOP | 1, TOP | 2)):
            table.observe(peer(value), float(i))
        return table

    def test_one_ping_in_flight_per_head(self) -> None:
        table = self.full_table(0.0)
        self.assertIsInstance(table.observe(peer(TOP | 3), 10.0), PingHead)
        self.assertEqual(table.observe(peer(TOP | 4), 10.0), Cached(peer(TOP | 4)))
        table.head_alive(peer(TOP | 1).node_id, 11.0)
        self.assertIsInstance(table.observe(peer(TOP | 5), 12.0), PingHead)

    def test_fresh_head_is_not_pinged(self) -> None:
        table = self.full_table(60.0)
        self.assertEqual(table.observe(peer(TOP | 3), 30.0), Cached(peer(TOP | 3)))
        self.assertIsInstance(table.observe(peer(TOP | 4), 61.0), PingHead)
