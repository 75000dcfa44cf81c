#!/usr/bin/env python3
"""A network of N server_app.py processes on 127.0.0.1, then 30% of them SIGKILLed.

1. join: 3 seeds in a chain, then the rest in waves (`--wave`, default 25) bootstrapping from 3
   random running nodes; join time = process start until the node logs that its join is done
   (bootstrap, own-ID lookup, key publication, first fetch);
2. lookups and mail between random online pairs (`--pairs`): the sender's node looks the
   recipient up (Overlay.find_contact) and hands the mail over directly only if the lookup found
   it, so "lookup success" = mails handed over directly; "mail success" = in the inbox;
3. memory: VmRSS and open file descriptors of every process (/proc);
4. churn: `--recipients` nodes stop (SIGTERM); mails to them (`--mails`) are stored on replicas;
   30% of the other nodes are SIGKILLed; the recipients start again and fetch: delivered = in
   their inboxes within `--wait` seconds.
Every process is stopped at the end, also on failure, Ctrl-C, SIGTERM or SIGHUP. Before each
wave the free memory is checked: below `--min-free` GiB no more nodes start, and the run says how
many it started. Joins are staggered: a wave starts once most of the previous one has joined
(or `--wave-wait` seconds passed). Every wait is bounded and the whole run keeps to `--budget`
seconds (default 600): each phase gets what is left, and a phase that runs out reports what it
has. Progress lines go to stdout as the run goes.

Usage: python3 bench/procnet.py [--quick] [--processes 300] [--seed 11] [--budget 600]
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import keypool  # noqa: E402
from bench.lablib import (  # noqa: E402
    PoolProcessNode,
    fresh_dir,
    parse_args,
    percentile,
    print_table,
    quiet_logs,
    rss_kib,
    wait_until,
    write_results,
)
from fluxchat.ids import format_id  # noqa: E402

# Fetches every 30 s (not the lab's 5 s): 300 nodes each asking 20 others would otherwise keep
# both shared cores busy; joining and restarting nodes fetch at once anyway.
OVERRIDES: dict[str, Any] = {"mail": {"fetch_interval": 30, "replicas": 5},
                             "client": {"request_timeout": 10, "auth_timeout": 10}}
KILL_SHARE = 0.30
SEEDS = 3
JOINED = "joined:"


def parallel(job: Callable[[PoolProcessNode], Any], nodes: Sequence[PoolProcessNode],
             workers: int = 8) -> list[Any]:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(job, nodes))


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def log_text(node: PoolProcessNode) -> str:
    try:
        return (node.data_dir / "stderr.log").read_text(errors="replace")
    except OSError:
        return ""


def outbox(node: PoolProcessNode) -> dict[str, str]:
    items = node.call("list", {"folder": "outbox", "limit": 1000})["items"]
    return {item["uuid"]: item["state"] for item in items}


class Clock:
    """The run's time budget: phases ask how long they may still wait."""

    def __init__(self, budget: float) -> None:
        self.begin = time.monotonic()
        self.deadline = self.begin + budget

    def left(self, reserve: float = 0.0) -> float:
        return max(0.0, self.deadline - reserve - time.monotonic())

    def say(self, text: str) -> None:
        load = os.getloadavg()[0]
        print(f"[{time.monotonic() - self.begin:5.0f} s, load {load:4.1f}] {text}", flush=True)


class Net:
    def __init__(self, count: int, seed: int, wave: int, min_free: float, clock: Clock,
                 wave_wait: float) -> None:
        keypool.ensure_pool(count)
        self.clock, self.wave_wait = clock, wave_wait
        self.rng = random.Random(seed)
        self.directory = fresh_dir("procnet")
        self.count, self.wave, self.min_free = count, wave, min_free
        self.nodes: list[PoolProcessNode] = []
        self.started: dict[PoolProcessNode, float] = {}
        self.join_s: dict[PoolProcessNode, float] = {}
        self.stopped_early = ""

    def start(self, index: int, bootstrap: list[str]) -> PoolProcessNode:
        node = PoolProcessNode(self.directory, index, bootstrap, OVERRIDES)
        self.started[node] = time.monotonic()
        try:
            node.start(timeout=120)
        finally:   # whoever must clean up after a crash of this script finds every pid here
            if node.proc is not None:
                with open(self.directory / "pids", "a") as pids:
                    pids.write(f"{node.proc.pid}\n")
        return node

    def build(self, join_reserve: float) -> float:
        """Start the nodes wave by wave; returns the seconds it took. A wave waits until 90%
        of the nodes started before it have joined (at most `wave_wait` s), so joins are
        spread out instead of piling up on the shared cores."""
        begin = time.monotonic()
        for index in range(SEEDS):
            self.nodes.append(self.start(index, [n.address for n in self.nodes[-1:]]))
        index = SEEDS
        while index < self.count:
            free = mem_available_gib()
            if free < self.min_free or self.clock.left(join_reserve) == 0:
                self.stopped_early = (f"stopped at {len(self.nodes)} nodes: {free:.1f} GiB free, "
                                      f"{self.clock.left():.0f} s of the budget left")
                self.clock.say(self.stopped_early)
                break
            wait_until(lambda: self.collect_joins() >= 0.9 * len(self.nodes),
                       min(self.wave_wait, self.clock.left(join_reserve)), 0.5)
            batch = list(range(index, min(self.count, index + self.wave)))
            addresses = [n.address for n in self.nodes if n in self.join_s] or \
                [n.address for n in self.nodes]
            bootstraps = [self.rng.sample(addresses, min(3, len(addresses))) for _ in batch]
            self.nodes += parallel(lambda pair: self.start(*pair),
                                   list(zip(batch, bootstraps, strict=True)))
            index += len(batch)
            self.collect_joins()
            self.clock.say(f"{len(self.nodes)} nodes up, {len(self.join_s)} joined, "
                           f"{mem_available_gib():.1f} GiB free")
        wait_until(lambda: self.collect_joins() == len(self.nodes),
                   min(300.0, self.clock.left(join_reserve)), 1.0)
        self.clock.say(f"{len(self.join_s)}/{len(self.nodes)} joined")
        return time.monotonic() - begin

    def collect_joins(self) -> int:
        for node in self.nodes:
            if node not in self.join_s and JOINED in log_text(node):
                self.join_s[node] = time.monotonic() - self.started[node]
        return len(self.join_s)

    def stop(self) -> None:
        """Everything goes, whatever happened: SIGTERM, then SIGKILL for stragglers."""
        def one(node: PoolProcessNode) -> None:
            try:
                node.stop(timeout=15)
            except Exception:   # noqa: BLE001 - the process must go regardless
                if node.proc is not None:
                    node.proc.kill()
                    node.proc.wait()
        parallel(one, [n for n in self.started if n.proc is not None])


def memory(net: Net) -> dict[str, Any]:
    rss = [rss_kib(n.proc.pid) / 1024 for n in net.nodes if n.proc is not None]
    open_fds = [fds(n.proc.pid) for n in net.nodes if n.proc is not None]
    infos = parallel(lambda n: n.call("info"), net.nodes)
    routing = [info["counts"]["routing"] for info in infos]
    links = [info["counts"]["links"] for info in infos]
    datagrams = [info.get("datagrams") or {} for info in infos]
    return {"processes": len(rss), "rss_mib_median": percentile(rss, 50),
            "rss_mib_max": max(rss), "rss_mib_total": sum(rss),
            "fds_median": percentile(open_fds, 50), "fds_max": max(open_fds),
            "routing_median": percentile(routing, 50), "routing_min": min(routing),
            "links_median": percentile(links, 50), "links_max": max(links),
            "datagrams_asked": sum(d.get("asked", 0) for d in datagrams),
            "datagrams_answered": sum(d.get("answers", 0) for d in datagrams),
            "datagram_fallbacks": sum(d.get("fell_back", 0) for d in datagrams)}


def send(net: Net, pairs: list[tuple[PoolProcessNode, PoolProcessNode]],
         wait: float, final: set[str]) -> dict[str, dict[str, str]]:
    """Each pair's sender mails its recipient; wait until every mail reaches a state in
    `final`; returns {sender's data dir: {uuid: state}} for the mails sent."""
    sent: dict[PoolProcessNode, set[str]] = {}
    for number, (sender, recipient) in enumerate(pairs):
        reply = sender.call("mail", {"to": format_id(recipient.node_id),
                                     "subject": f"procnet {number}", "body": "x" * 1024})
        sent.setdefault(sender, set()).add(reply["uuid"])

    def states() -> dict[str, dict[str, str]]:
        return {s.data_dir.name: {u: st for u, st in outbox(s).items() if u in uuids}
                for s, uuids in sent.items()}

    wait_until(lambda: all(st in final for box in states().values() for st in box.values()),
               wait, 1.0)
    return states()


def inbox_count(node: PoolProcessNode) -> int:
    return int(node.call("info")["counts"]["inbox"])


def direct(net: Net, count: int, wait: float) -> dict[str, Any]:
    joined = [n for n in net.nodes if n in net.join_s]
    pairs = [tuple(net.rng.sample(joined, 2)) for _ in range(count)]
    before = {n: inbox_count(n) for n in {r for _, r in pairs}}
    expected = {n: sum(1 for _, r in pairs if r is n) for n in before}
    start = time.monotonic()
    boxes = send(net, pairs, wait, {"delivered", "stored", "failed", "expired"})   # type: ignore[arg-type]
    states = [st for box in boxes.values() for st in box.values()]
    arrived = sum(min(inbox_count(n) - before[n], expected[n]) for n in before)
    return {"mails": count, "handed_over": sum(st in ("handed_over", "delivered") for st in states),
            "delivered_receipt": states.count("delivered"), "in_inbox": arrived,
            "states": {s: states.count(s) for s in set(states)},
            "seconds": time.monotonic() - start}


def churn(net: Net, recipients: int, count: int, clock: Clock) -> dict[str, Any]:
    away = net.rng.sample([n for n in net.nodes[SEEDS:] if n in net.join_s], recipients)
    others = [n for n in net.nodes if n not in away]
    parallel(lambda n: n.stop(), away)
    pairs = [(net.rng.choice(others), net.rng.choice(away)) for _ in range(count)]
    expected = {n: sum(1 for _, r in pairs if r is n) for n in away}
    boxes = send(net, pairs, min(90.0, clock.left(60.0)), {"stored", "failed", "expired"})
    states = [st for box in boxes.values() for st in box.values()]
    held_before = sum(parallel(lambda n: n.call("info")["counts"]["held"], others))
    victims = net.rng.sample(others, round(KILL_SHARE * len(others)))
    for node in victims:
        node.stop(signal.SIGKILL)
    survivors = [n for n in others if n not in victims]
    held_after = sum(parallel(lambda n: n.call("info")["counts"]["held"], survivors))
    clock.say(f"{len(victims)} SIGKILLed; {held_after}/{held_before} held copies left; "
              f"restarting the recipients")
    start = time.monotonic()
    parallel(lambda n: n.start(timeout=max(10.0, min(120.0, clock.left(30.0)))), away)
    complete = wait_until(lambda: all(inbox_count(n) >= expected[n] for n in away),
                          clock.left(20.0), 1.0)
    arrived = sum(min(inbox_count(n), expected[n]) for n in away)
    return {"recipients": recipients, "mails": count, "stored": states.count("stored"),
            "states": {s: states.count(s) for s in set(states)}, "killed": len(victims),
            "copies_before": held_before, "copies_after": held_after,
            "delivered": arrived, "all_in": complete, "seconds": time.monotonic() - start}


def extra_args(parser: Any) -> None:
    parser.add_argument("--processes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--wave", type=int, default=25)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--recipients", type=int, default=10)
    parser.add_argument("--mails", type=int, default=200)
    parser.add_argument("--wait", type=float, default=180.0)
    parser.add_argument("--min-free", type=float, default=4.0, help="GiB kept free")
    parser.add_argument("--budget", type=float, default=600.0,
                        help="seconds for the whole run; every phase keeps within it")
    parser.add_argument("--hold", type=float, default=0.0,
                        help="seconds to keep the network up after the memory figures, "
                             "for reading /proc of live nodes (pids in the run's `pids`); "
                             "counts against --budget")
    parser.add_argument("--wave-wait", type=float, default=40.0,
                        help="seconds a wave waits at most for the previous ones to join")


def stop_on_signals() -> None:
    """SIGTERM (e.g. from `timeout`), SIGHUP (a closed terminal) and Ctrl-C unwind through
    main's `finally`, which stops every node."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, _frame: sys.exit(128 + number))


# Seconds kept back for the phases after the build: memory, direct mail, churn and cleanup.
AFTER_BUILD = 180.0
AFTER_DIRECT = 120.0


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra_args)
    quiet_logs()
    stop_on_signals()
    if args.quick:
        args.processes, args.pairs, args.recipients, args.mails = 20, 20, 3, 20
    clock = Clock(args.budget)
    clock.say(f"{args.processes} processes, waves of {args.wave}, budget {args.budget:.0f} s")
    net = Net(args.processes, args.seed, args.wave, args.min_free, clock, args.wave_wait)
    results: dict[str, Any] = {"processes": args.processes, "seed": args.seed,
                               "budget_s": args.budget, "loadavg_before": os.getloadavg()}
    try:
        results["build_s"] = net.build(AFTER_BUILD)
        joins = list(net.join_s.values()) or [math.nan]
        results["join"] = {"joined": len(net.join_s), "started": len(net.nodes),
                           "median_s": percentile(joins, 50), "p95_s": percentile(joins, 95),
                           "max_s": max(joins), "note": net.stopped_early}
        results["memory"] = memory(net)
        clock.say(f"RSS median {results['memory']['rss_mib_median']:.1f} MiB, "
                  f"fds median {results['memory']['fds_median']}; mail between random pairs")
        if args.hold:
            clock.say(f"holding {args.hold:.0f} s; pids in {net.directory / 'pids'}")
            time.sleep(args.hold)
        results["direct"] = direct(net, args.pairs, min(args.wait, clock.left(AFTER_DIRECT)))
        clock.say(f"handed over {results['direct']['handed_over']}/{args.pairs}; "
                  f"stopping {args.recipients} recipients, mail for them, then the kill")
        results["churn"] = churn(net, args.recipients, args.mails, clock)
        clock.say(f"delivered after the kill: {results['churn']['delivered']}/{args.mails}")
    finally:
        clock.say("stopping every process")
        net.stop()
        results["loadavg_after"] = os.getloadavg()
        results["total_s"] = time.monotonic() - clock.begin
    j, mem, d, c = results["join"], results["memory"], results["direct"], results["churn"]
    print_table(f"{len(net.nodes)} server_app.py processes (asked for {args.processes}); "
                f"build {results['build_s']:.0f} s", ["joined", "join median s", "p95 s", "max s",
                                                      "RSS MiB median", "max", "total",
                                                      "fds median", "max", "routing median",
                                                      "links median", "max"],
                [[f"{j['joined']}/{j['started']}", j["median_s"], j["p95_s"], j["max_s"],
                  mem["rss_mib_median"], mem["rss_mib_max"], mem["rss_mib_total"],
                  mem["fds_median"], mem["fds_max"], mem["routing_median"],
                  mem["links_median"], mem["links_max"]]])
    print(f"lookup datagrams: {mem['datagrams_asked']} asked, {mem['datagrams_answered']} "
          f"answered, {mem['datagram_fallbacks']} contacts fell back to a link")
    print_table("random online pairs", ["mails", "lookup found (handed over)", "in inbox",
                                        "receipts", "seconds"],
                [[d["mails"], f"{d['handed_over']}/{d['mails']}", f"{d['in_inbox']}/{d['mails']}",
                  d["delivered_receipt"], d["seconds"]]])
    print_table(f"recipients offline, {KILL_SHARE:.0%} of the others SIGKILLed",
                ["mails", "stored", "killed", "copies left", "delivered", "seconds"],
                [[c["mails"], c["stored"], c["killed"], f"{c['copies_after']}/{c['copies_before']}",
                  f"{c['delivered']}/{c['mails']}", c["seconds"]]])
    print(f"load average before {results['loadavg_before'][0]:.1f}, after "
          f"{results['loadavg_after'][0]:.1f}; {results['total_s']:.0f} s in all")
    write_results("procnet", results)


if __name__ == "__main__":
    main()
