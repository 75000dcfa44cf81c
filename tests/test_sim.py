"""The simulator under bench/ runs the node's own routing, lookup and placement code: keep
it working with a small network (the figures themselves come from `bench/sim.py`)."""

from __future__ import annotations

import dataclasses
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sim import build, run_churn, run_lookups
from bench.simnet import Params
from bench.simnode import Churn


class LookupSimulationTest(unittest.TestCase):
    def test_lookups_find_live_targets_and_pay_for_dead_entries(self) -> None:
        full = Params(stop_at_target=False)   # every lookup settles the target's k closest
        fresh = run_lookups(full, 3, 200, 0.0, 40)
        self.assertEqual(fresh["success"], 1.0)
        self.assertLess(fresh["timeouts"], 0.2)   # only a slow handshake now and then
        stale = run_lookups(Params(query_timeout=5.0, stop_at_target=False), 3, 200, 0.3, 40)
        self.assertGreater(stale["timeouts"], 1.0)
        self.assertGreaterEqual(stale["median_s"], 5.0)   # waited out at least one timeout
        self.assertGreaterEqual(stale["success"], 0.9)
        self.assertLess(fresh["median_s"], stale["median_s"] - 4.0)

    def test_locating_ends_when_the_target_answers(self) -> None:
        full = run_lookups(Params(query_timeout=5.0, stop_at_target=False), 4, 200, 0.3, 40)
        located = run_lookups(Params(query_timeout=5.0), 4, 200, 0.3, 40)
        self.assertGreaterEqual(located["success"], 0.9)
        self.assertLess(located["rpcs"], full["rpcs"] / 2)
        self.assertLess(located["median_s"], full["median_s"] / 2)

    def test_datagrams_find_nodes_without_links(self) -> None:
        linked = run_lookups(Params(datagrams=False), 6, 300, 0.2, 40)
        datagrams = run_lookups(Params(), 6, 300, 0.2, 40)
        self.assertEqual(linked["datagrams_per_lookup"], 0)
        self.assertGreater(datagrams["datagrams_per_lookup"], 2)
        self.assertGreaterEqual(datagrams["success"], 0.95)
        self.assertLess(datagrams["handshakes_per_lookup"], linked["handshakes_per_lookup"] / 2)
        self.assertLess(datagrams["finding_median_s"], linked["finding_median_s"])
        self.assertLess(datagrams["median_s"], linked["median_s"])

    def test_same_seed_same_figures(self) -> None:
        first = run_lookups(Params(), 5, 150, 0.2, 20)
        second = run_lookups(Params(), 5, 150, 0.2, 20)
        volatile = {"cpu_s", "max_rss_mib"}
        self.assertEqual({k: v for k, v in first.items() if k not in volatile},
                         {k: v for k, v in second.items() if k not in volatile})

    def test_tables_are_rebuilt_beyond_the_memory_bound(self) -> None:
        net = build(Params(max_tables=10), 1, 100, 0.0, lazy=True)
        for node in net.live[:30]:
            self.assertIsNotNone(net.table_of(node))
        self.assertEqual(sum(1 for n in net.live if n.table is not None), 10)
        self.assertEqual(net.tables_dropped, 20)


class ChurnSimulationTest(unittest.TestCase):
    def test_stored_mail_survives_an_hour_of_churn(self) -> None:
        result = run_churn(Params(), 2, 80, 0.3, 1, 10, warmup=600.0)
        self.assertEqual(result["mails"], 10)
        self.assertGreater(result["stored_on_mean"], 4.0)
        self.assertGreater(result["replaced"], 10)
        self.assertGreaterEqual(result["retrievable_end"], 0.9)
        self.assertGreater(result["upkeep_bytes_per_node_s"], 0)

    def test_exact_replication_stores_less_and_keeps_the_mail(self) -> None:
        exact = run_churn(Params(), 2, 80, 0.3, 1, 10, warmup=600.0)
        every = run_churn(Params(exact_replication=False), 2, 80, 0.3, 1, 10, warmup=600.0)
        self.assertGreaterEqual(exact["retrievable_end"], 0.9)
        self.assertLess(exact["calls"]["store_mail"], every["calls"]["store_mail"] / 2)
        self.assertLess(exact["upkeep_bytes_per_node_s"], every["upkeep_bytes_per_node_s"])

    def test_heavy_tailed_sessions_have_the_requested_mean(self) -> None:
        churn = Churn(rate=0.3)
        draws = [churn.session((i + 0.5) / 20000) for i in range(20000)]
        self.assertAlmostEqual(sum(draws) / len(draws) / 3600, 1 / 0.3, delta=0.4)
        self.assertGreater(max(draws), 50 * min(draws))   # the long tail

    def test_params_mirror_the_node_defaults(self) -> None:
        from fluxchat import overlay
        from fluxchat.config import ClientConfig, KademliaConfig, MailConfig
        from fluxchat.lookup import QueryTimes
        from fluxchat.overlay import Overlay
        from fluxchat.upkeep import REREPLICATE_MIN, UPKEEP_INTERVAL
        p = dataclasses.asdict(Params())
        self.assertEqual(p["timeout"], ClientConfig().request_timeout)
        self.assertEqual(p["idle_timeout"], ClientConfig().idle_timeout)
        self.assertEqual((p["k"], p["alpha"]), (KademliaConfig().k, KademliaConfig().alpha))
        self.assertEqual(p["republish_interval"], KademliaConfig().republish_interval)
        self.assertEqual(p["refresh_interval"], KademliaConfig().refresh_interval)
        self.assertEqual((p["replicas"], p["fetch_interval"]),
                         (MailConfig().replicas, MailConfig().fetch_interval))
        self.assertTrue(hasattr(Overlay, "locate") and p["stop_at_target"])
        self.assertEqual(p["query_timeout"], getattr(overlay, "QUERY_TIMEOUT", 10.0))
        self.assertEqual(p["head_fresh"], overlay.HEAD_FRESH)
        times = QueryTimes(overlay.QUERY_TIMEOUT)
        self.assertEqual((p["slow_factor"], p["slow_floor"]), (times.factor, times.floor))
        self.assertEqual((p["upkeep_interval"], p["rereplicate_min"]),
                         (UPKEEP_INTERVAL, REREPLICATE_MIN))
        from fluxchat.config import DatagramConfig
        from fluxchat.datagram_guard import Silent
        from fluxchat.datagram_net import DATAGRAM_WAIT
        self.assertEqual((p["datagrams"], p["datagram_wait"], p["silent_hold"]),
                         (DatagramConfig().enabled, DATAGRAM_WAIT, Silent().hold))


if __name__ == "__main__":
    unittest.main()
