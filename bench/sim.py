#!/usr/bin/env python3
"""Kademlia and stored mail at scale, simulated with the node's own routing and lookup code.

Two experiments (see bench/README.md):
- lookups: N live nodes whose tables hold `--stale` dead entries (the dead nodes are silent:
  each query to one costs the per-query timeout); `--lookups` lookups between random live
  pairs, as Overlay.find_contact runs them; success = the target is among the results.
- churn: `--churn-nodes` nodes with their upkeep (bucket refresh, hourly republication, held
  mail pushed again after membership changes), sessions from a heavy-tailed distribution
  replacing `--churn` of the nodes per hour; `--mails` mails stored for offline recipients,
  checked every hour for `--hours`: would the recipient, coming online, find a holder among
  the k nodes its lookup returns? Also the upkeep traffic per node.

Usage: python3 bench/sim.py [--quick] [--sizes 1000,10000,100000] [--seed 1] [--timeout 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.lablib import percentile, print_table, write_results
from bench.simnet import LookupOutcome, Network, Params
from bench.simnode import Behaviour, Churn, Mail


def build(params: Params, seed: int, live: int, stale: float, lazy: bool) -> Network:
    """`live` nodes alive; their tables were filled when `stale` more of the entries were
    alive too: those nodes are gone now, silently."""
    net = Network(params, seed)
    total = round(live / (1.0 - stale))
    for _ in range(total):
        net.new_node(net.rng.randbytes(32))
    net.fill_tables(lazy=lazy)
    for node in net.rng.sample(list(net.live), total - live):
        net.kill(node)
    return net


def run_lookups(params: Params, seed: int, size: int, stale: float, count: int) -> dict[str, Any]:
    started = time.process_time()
    net = build(params, seed, size, stale, lazy=True)
    rows: list[tuple[LookupOutcome, bool]] = []

    def record(target: bytes) -> Callable[[LookupOutcome], None]:
        return lambda o: rows.append((o, any(p.node_id == target for p in o.result)))

    for i in range(count):
        source, target = net.random_live(), net.random_live()
        while target is source:
            target = net.random_live()
        net.loop.at(i * 0.5, net.find_node, source, target.node_id, record(target.node_id), True)
    net.loop.run()
    latencies = [o.latency for o, _ in rows]
    finding = [o.finding for o, ok in rows if ok and o.finding == o.finding]   # not NaN
    return {
        "nodes": size, "stale": stale, "lookups": len(rows),
        "success": sum(ok for _, ok in rows) / len(rows),
        "rpcs": sum(o.rpcs for o, _ in rows) / len(rows),
        "rpcs_max": max(o.rpcs for o, _ in rows),
        "rounds": sum(o.rounds for o, _ in rows) / len(rows),
        "timeouts": sum(o.failures for o, _ in rows) / len(rows),
        "median_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        # Contact lookups: until the query to the target (over a link, its own answer being
        # the result) went out, i.e. the node-finding part alone.
        "finding_median_s": percentile(finding, 50) if finding else None,
        "finding_p95_s": percentile(finding, 95) if finding else None,
        "datagrams_per_lookup": net.calls["datagram"] / len(rows),
        "fallbacks_per_lookup": net.calls["datagram_fallback"] / len(rows),
        "probes_per_lookup": net.calls["probe"] / len(rows),
        "pings_per_lookup": net.calls["ping"] / len(rows),
        "handshakes_per_lookup": net.calls["handshake"] / len(rows),
        "tables_built": net.tables_built, "tables_dropped": net.tables_dropped,
        "cpu_s": time.process_time() - started,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_churn(params: Params, seed: int, size: int, churn_rate: float, hours: float,
              mails: int, warmup: float = 3600.0) -> dict[str, Any]:
    """A warm-up hour of churn and upkeep, then the mails, then `hours` of churn."""
    started = time.process_time()
    net = build(params, seed, size, 0.0, lazy=False)
    act = Behaviour(net)
    end = warmup + hours * 3600.0
    act.start_upkeep()
    act.start_churn(Churn(rate=churn_rate), end)
    start_fetches(net, end)
    net.loop.run(warmup)
    for node in net.live:
        node.sent = node.received = 0
    joined, left = act.joins, act.departures
    sent: list[Mail] = []
    for i in range(mails):
        net.loop.at(warmup + i * 2.0, act.send, net.rng.randbytes(32), sent.append)
    hourly: list[dict[str, Any]] = []
    for hour in range(1, int(hours) + 1):
        net.loop.run(warmup + hour * 3600.0 - 60.0)
        found: list[bool] = []
        for mail in sent:
            act.retrievable(mail, found.append)
        net.loop.run(warmup + hour * 3600.0)
        net.prune_links()
        hourly.append({"hour": hour, "retrievable": sum(found) / max(1, len(found)),
                       "checked": len(found)})
    seconds = hours * 3600.0
    traffic = sum(n.sent + n.received for n in net.nodes.values())
    return {
        "nodes": size, "churn_per_hour": churn_rate, "hours": hours, "mails": len(sent),
        "stored_on_mean": sum(m.stored_on for m in sent) / max(1, len(sent)),
        "replaced": act.departures - left, "joined": act.joins - joined,
        "hourly": hourly, "retrievable_end": hourly[-1]["retrievable"] if hourly else None,
        "retrievable_min": min(h["retrievable"] for h in hourly) if hourly else None,
        "upkeep_bytes_per_node_hour": traffic / size / hours,
        "upkeep_bytes_per_node_s": traffic / size / seconds,
        "upkeep_lookups_per_node_hour": act.upkeep_lookups / size / (hours + warmup / 3600),
        "calls": dict(net.calls),
        "cpu_s": time.process_time() - started,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def start_fetches(net: Network, until: float) -> None:
    """Mailroom.fetch_all every fetch_interval from the k closest in the table. The recipients
    under test are offline, so these fetches find nothing: only their traffic (and the links
    they keep open) is modelled, without events per request."""
    def fetch(node: Any) -> None:
        if not node.alive or net.loop.now >= until:
            return
        table = net.table_of(node)
        assert table is not None
        for peer in table.closest(node.node_id, net.p.k):
            other = net.nodes[peer.node_id]
            if other.alive:
                net.touch_link(node, other)
                net.count(node, net.size["fetch"], net.size["batch"])
                net.count(other, net.size["batch"], net.size["fetch"])
        net.loop.at(net.loop.now + net.p.fetch_interval, fetch, node)

    for node in net.live:
        net.loop.at(net.rng.random() * net.p.fetch_interval, fetch, node)


def in_child(job: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Each experiment in a fresh process: its peak memory is its own."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(job, args)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--lookups", type=int, default=500)
    parser.add_argument("--stale", type=float, default=0.2)
    parser.add_argument("--churn-nodes", type=int, default=1000)
    parser.add_argument("--churn", type=float, default=0.3, help="fraction replaced per hour")
    parser.add_argument("--hours", type=float, default=24)
    parser.add_argument("--mails", type=int, default=200)
    parser.add_argument("--name", default="sim", help="results go to bench/results/NAME.json")
    parser.add_argument("--skip", default="", help="lookups,churn: experiments to leave out")
    for field in dataclasses.fields(Params):
        flag = "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=field.default)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default)
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.lookups, args.churn_nodes, args.hours, args.mails = "300", 100, 200, 3, 50
    return args


def main() -> None:
    args = parse()
    params = Params(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Params)})
    print(f"model: {params}", flush=True)
    results: dict[str, Any] = {"params": dataclasses.asdict(params), "seed": args.seed}
    if "lookups" not in args.skip:
        sizes = [int(s) for s in args.sizes.split(",")]
        results["lookups"] = []
        for size in sizes:
            row = in_child(run_lookups, params, args.seed, size, args.stale, args.lookups)
            print(f"N = {size}: {row}", flush=True)
            results["lookups"].append(row)
        print_table(f"lookups ({args.stale:.0%} stale entries, timeout {params.timeout} s, "
                    f"alpha {params.alpha})",
                    ["nodes", "success", "RPCs", "max", "rounds", "timeouts", "median s", "p95 s",
                     "p99 s", "finding med", "finding p95", "datagrams", "fallbacks", "probes",
                     "pings", "handshakes", "tables", "CPU s", "RSS MiB"],
                    [[r["nodes"], f"{r['success']:.1%}", r["rpcs"], r["rpcs_max"], r["rounds"],
                      r["timeouts"], r["median_s"], r["p95_s"], r["p99_s"],
                      r["finding_median_s"], r["finding_p95_s"], r["datagrams_per_lookup"],
                      r["fallbacks_per_lookup"], r["probes_per_lookup"],
                      r["pings_per_lookup"], r["handshakes_per_lookup"], r["tables_built"],
                      r["cpu_s"], r["max_rss_mib"]] for r in results["lookups"]])
    if "churn" not in args.skip:
        churn = in_child(run_churn, params, args.seed, args.churn_nodes, args.churn,
                         args.hours, args.mails)
        results["churn"] = churn
        print_table(f"stored mail under churn ({churn['nodes']} nodes, "
                    f"{churn['churn_per_hour']:.0%}/h replaced, {churn['hours']:g} h)",
                    ["hour", "retrievable", "mails"],
                    [[h["hour"], f"{h['retrievable']:.2%}", h["checked"]] for h in churn["hourly"]])
        print_table("upkeep per node", ["bytes/h", "bytes/s", "lookups/h", "replaced", "CPU s",
                                         "RSS MiB"],
                    [[churn["upkeep_bytes_per_node_hour"], churn["upkeep_bytes_per_node_s"],
                      churn["upkeep_lookups_per_node_hour"], churn["replaced"], churn["cpu_s"],
                      churn["max_rss_mib"]]])
        print(f"calls: {churn['calls']}; stored on {churn['stored_on_mean']:.2f} nodes per mail")
    write_results(args.name, results)


if __name__ == "__main__":
    main()
