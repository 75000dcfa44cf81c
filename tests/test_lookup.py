from __future__ import annotations

import hashlib
import heapq
import math
import random
import unittest
from collections import deque
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.ids import distance
from fluxchat.lookup import Lookup, QueryTimes
from fluxchat.routing import Peer, RoutingTable

OWN = bytes(32)


def peer(value: int) -> Peer:
    return Peer(value.to_bytes(32, "big"), "127.0.0.1", 1000 + value % 60000)


def by_distance(peers: list[Peer], target: bytes) -> list[Peer]:
    return sorted(peers, key=lambda p: distance(p.node_id, target))


class LookupUnitTest(unittest.TestCase):
    def test_queries_alpha_closest_and_keeps_alpha_in_flight(self) -> None:
        seeds = [peer(v) for v in (9, 1, 5, 3, 7)]
        lookup = Lookup(peer(0).node_id, OWN, seeds + [Peer(OWN, "127.0.0.1", 1)], k=4, alpha=2)
        self.assertEqual(lookup.next_queries(), [peer(1), peer(3)])
        self.assertEqual(lookup.next_queries(), [])  # two already in flight
        self.assertFalse(lookup.done)
        lookup.on_reply(peer(1).node_id, [peer(2), Peer(OWN, "127.0.0.1", 1)])
        self.assertEqual(lookup.next_queries(), [peer(2)])
        self.assertNotIn(OWN, lookup.queried)

    def test_never_queries_twice_and_ignores_strangers(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(1), peer(2)], k=3, alpha=3)
        self.assertEqual(lookup.next_queries(), [peer(1), peer(2)])
        lookup.on_reply(peer(9).node_id, [peer(3)])  # never asked: ignored
        lookup.on_reply(peer(1).node_id, [peer(2), peer(1)])
        lookup.on_reply(peer(1).node_id, [peer(4)])  # second answer: ignored
        self.assertEqual(lookup.next_queries(), [])
        lookup.on_reply(peer(2).node_id, [])
        self.assertTrue(lookup.done)
        self.assertEqual(lookup.result(), [peer(1), peer(2)])
        self.assertEqual(lookup.rpc_count, 2)

    def test_failure_lets_next_closest_in(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(1), peer(2), peer(3)], k=2, alpha=1)
        self.assertEqual(lookup.next_queries(), [peer(1)])
        lookup.on_failure(peer(1).node_id)
        self.assertEqual(lookup.next_queries(), [peer(2)])
        lookup.on_reply(peer(2).node_id, [])
        self.assertEqual(lookup.next_queries(), [peer(3)])
        lookup.on_reply(peer(3).node_id, [])
        self.assertTrue(lookup.done)
        self.assertEqual(lookup.result(), [peer(2), peer(3)])
        self.assertEqual(lookup.queried, frozenset({peer(1).node_id, peer(2).node_id, peer(3).node_id}))

    def test_a_slow_query_frees_its_place_and_its_late_answer_still_counts(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(1), peer(2), peer(3)], k=3, alpha=1)
        self.assertEqual(lookup.next_queries(), [peer(1)])
        self.assertEqual(lookup.next_queries(), [])
        lookup.on_slow(peer(1).node_id)
        lookup.on_slow(peer(9).node_id)   # never asked: ignored
        self.assertEqual(lookup.next_queries(), [peer(2)])   # alpha = 1 is kept moving
        lookup.on_slow(peer(2).node_id)
        lookup.on_slow(peer(2).node_id)   # twice: still one candidate in flight, not two
        self.assertEqual(lookup.next_queries(), [peer(3)])
        lookup.on_reply(peer(3).node_id, [])
        lookup.on_reply(peer(2).node_id, [])
        self.assertFalse(lookup.done)     # the slow closest one may still answer
        lookup.on_reply(peer(1).node_id, [])
        self.assertTrue(lookup.done)
        self.assertEqual(lookup.result(), [peer(1), peer(2), peer(3)])
        self.assertEqual(lookup.rpc_count, 3)

    def test_a_slow_query_that_fails_is_settled(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(1)], k=2, alpha=1)
        lookup.next_queries()
        lookup.on_slow(peer(1).node_id)
        self.assertFalse(lookup.done)
        lookup.on_failure(peer(1).node_id)
        self.assertTrue(lookup.done)

    def test_query_times_set_the_slow_mark_between_floor_and_cap(self) -> None:
        times = QueryTimes(cap=4.0, floor=0.25, factor=2.0, window=4)
        self.assertEqual(times.slow_after(True), 4.0)   # nothing measured: the timeout
        for seconds in (0.05, 0.06, 0.04):
            times.record(True, seconds)
        self.assertEqual(times.slow_after(True), 0.25)  # 2 x 0.05 is below the floor
        for seconds in (0.4, 0.5, 0.6, 0.5, 0.5):
            times.record(False, seconds)
        self.assertEqual(times.slow_after(False), 1.0)  # 2 x the median of the last 4
        for seconds in (3.0, 3.0, 3.0):
            times.record(False, seconds)
        self.assertEqual(times.slow_after(False), 4.0)  # never beyond the timeout
        self.assertEqual(times.slow_after(True), 0.25)  # open links are timed apart

    def test_done_when_k_closest_answered_even_with_farther_candidates(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(v) for v in (1, 2, 30, 31)], k=2, alpha=3)
        self.assertEqual(lookup.next_queries(), [peer(1), peer(2)])
        lookup.on_reply(peer(1).node_id, [])
        lookup.on_reply(peer(2).node_id, [])
        self.assertTrue(lookup.done)
        self.assertEqual(lookup.next_queries(), [])

    def test_all_fail_or_no_seeds_finishes(self) -> None:
        empty = Lookup(peer(0).node_id, OWN, [])
        self.assertTrue(empty.done)
        self.assertEqual(empty.next_queries(), [])
        lookup = Lookup(peer(0).node_id, OWN, [peer(1), peer(2)])
        for p in lookup.next_queries():
            lookup.on_failure(p.node_id)
        self.assertTrue(lookup.done)
        self.assertEqual(lookup.result(), [])

    def test_rounds_count_hop_depth(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(8)], k=3, alpha=3)
        lookup.next_queries()
        self.assertEqual(lookup.rounds, 1)
        lookup.on_reply(peer(8).node_id, [peer(4)])
        lookup.next_queries()
        lookup.on_reply(peer(4).node_id, [peer(2), peer(1)])
        self.assertEqual(lookup.next_queries(), [peer(1), peer(2)])
        self.assertEqual(lookup.rounds, 3)

    def test_value_ends_lookup_only_when_wanted(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(1), peer(2)], want_value=True)
        lookup.next_queries()
        lookup.on_value(peer(2).node_id, b"key")
        self.assertTrue(lookup.done and lookup.found)
        self.assertEqual(lookup.value, b"key")
        self.assertEqual(lookup.next_queries(), [])
        plain = Lookup(peer(0).node_id, OWN, [peer(1)])
        plain.next_queries()
        plain.on_value(peer(1).node_id, b"key")
        self.assertIsNone(plain.value)
        self.assertTrue(plain.done)

    def test_reply_is_capped_at_k_and_late_replies_do_not_reopen(self) -> None:
        lookup = Lookup(peer(0).node_id, OWN, [peer(100), peer(200)], k=2, alpha=3)
        lookup.next_queries()
        lookup.on_reply(peer(100).node_id, [peer(v) for v in (50, 60, 1)])  # peer(1) is past k: dropped
        self.assertEqual(lookup.next_queries(), [peer(50), peer(60)])
        lookup.on_reply(peer(50).node_id, [])
        lookup.on_reply(peer(60).node_id, [])
        self.assertTrue(lookup.done)
        lookup.on_reply(peer(200).node_id, [peer(2)])
        self.assertTrue(lookup.done)
        self.assertEqual(lookup.result(), [peer(50), peer(60)])


@settings(max_examples=100, deadline=None)
@given(
    edges=st.lists(st.lists(st.integers(1, 40), max_size=8), min_size=41, max_size=41),
    dead=st.sets(st.integers(1, 40)),
    order=st.randoms(use_true_random=False),
)
def check_lookup_terminates(edges: list[list[int]], dead: set[int], order: random.Random) -> None:
    lookup = Lookup(peer(0).node_id, peer(7).node_id, [peer(v) for v in edges[0]], k=4, alpha=3)
    in_flight: list[Peer] = []
    asked: set[bytes] = set()
    for _ in range(200):  # 40 nodes: any sound lookup ends long before this
        fresh = lookup.next_queries()
        assert all(p.node_id not in asked and p.node_id != lookup.own_id for p in fresh)
        asked.update(p.node_id for p in fresh)
        in_flight += fresh
        assert len(in_flight) <= 3
        if not in_flight:
            break
        current = in_flight.pop(order.randrange(len(in_flight)))
        number = int.from_bytes(current.node_id, "big")
        if number in dead:
            lookup.on_failure(current.node_id)
        else:
            lookup.on_reply(current.node_id, [peer(v) for v in edges[number]])
    assert lookup.done and not in_flight
    result = lookup.result()
    assert result == by_distance(result, lookup.target) and len(result) <= 4


class LookupPropertyTest(unittest.TestCase):
    def test_lookup_terminates(self) -> None:
        check_lookup_terminates()


# ---- 1,000-node simulation ------------------------------------------------------------------

N = 1000


@dataclass
class Stats:
    found: int
    rounds: list[int]
    rpcs: list[int]


class Network:
    """Routing tables for N nodes and a fake transport answering FIND_NODE from them."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self.peers = [Peer(hashlib.sha256(str(i).encode()).digest(), "127.0.0.1", 10000 + i) for i in range(n)]
        numbers = [int.from_bytes(p.node_id, "big") for p in self.peers]
        self.index = {p.node_id: i for i, p in enumerate(self.peers)}
        self.tables = []
        for i, own in enumerate(self.peers):
            table = RoutingTable(own.node_id)
            near = heapq.nsmallest(21, range(n), key=lambda j: numbers[j] ^ numbers[i])
            for j in rng.sample(range(n), 100) + near:
                table.observe(self.peers[j], 0.0)  # own ID and full far buckets are turned away
            self.tables.append(table)

    def lookup(self, start: int, target: bytes, dead: set[int]) -> Lookup:
        table = self.tables[start]
        lookup = Lookup(target, table.own_id, table.closest(target, 20))
        in_flight: deque[Peer] = deque()
        while True:
            in_flight.extend(lookup.next_queries())
            if not in_flight:
                return lookup
            current = in_flight.popleft()  # replies come back in the order sent
            number = self.index[current.node_id]
            if number in dead:
                lookup.on_failure(current.node_id)
            else:
                lookup.on_reply(current.node_id, self.tables[number].closest(target, 20))

    def run(self, targets: int, dead: set[int], rng: random.Random) -> Stats:
        live = [i for i in range(len(self.peers)) if i not in dead]
        stats = Stats(0, [], [])
        for _ in range(targets):
            start, goal = rng.sample(live, 2)
            lookup = self.lookup(start, self.peers[goal].node_id, dead)
            stats.found += bool(lookup.result()) and lookup.result()[0] == self.peers[goal]
            stats.rounds.append(lookup.rounds)
            stats.rpcs.append(lookup.rpc_count)
        return stats


class SimulationTest(unittest.TestCase):
    network: Network
    healthy: Stats
    damaged: Stats
    dead_targets = 200

    @classmethod
    def setUpClass(cls) -> None:
        rng = random.Random(1)
        cls.network = Network(N, rng)
        cls.healthy = cls.network.run(50, set(), rng)
        dead = set(rng.sample(range(N), N // 10))
        cls.damaged = cls.network.run(cls.dead_targets, dead, rng)

    def test_tables_are_sound(self) -> None:
        for table in self.network.tables[:50]:
            self.assertNotIn(table.own_id, table)
            self.assertTrue(all(len(b.peers) <= 20 for b in table.buckets()))

    def test_every_target_found(self) -> None:
        self.assertEqual(self.healthy.found, 50)

    def test_rounds_are_logarithmic(self) -> None:
        self.assertLessEqual(max(self.healthy.rounds), math.log2(N) + 3)
        self.assertLessEqual(max(self.damaged.rounds), math.log2(N) + 3)

    def test_ten_percent_dead_still_finds_live_targets(self) -> None:
        self.assertGreaterEqual(self.damaged.found, 0.99 * self.dead_targets)


if __name__ == "__main__":
    unittest.main()
