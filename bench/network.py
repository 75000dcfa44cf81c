#!/usr/bin/env python3
"""A Kademlia network of N in-process nodes on 127.0.0.1 (one event loop, one core).

For each N (50 and 200; --quick: 30):
- join: nodes start one after another, each bootstrapping from up to 3 random running nodes;
  join time = start() until the node's join (bootstrap, own-ID lookup, key publication, first
  fetch) is done; links and routing table sizes after the build;
- lookups between random pairs on the established network (after every node's first upkeep,
  which refreshes all its buckets; the lab runs it 15 s after start instead of 60 s), driven exactly as
  Overlay.find_node does (same Lookup, same _drive), so the Lookup's RPC count and rounds can be read; success =
  the target is among the results; each pair twice in a row: cold (pays for new links: TLS +
  handshake) and warm (links open);
- delivery of mails between random pairs, one after another: submit -> recipient inbox commit;
  success counted in the inbox and by receipts;
- memory: RSS growth per node of the process running the size (each size runs in a fresh
  process), and separately VmRSS of 5 server_app.py processes.

Usage: python3 bench/network.py [--quick] [--sizes 50,200]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import keypool  # noqa: E402
from bench.lablib import (  # noqa: E402
    BenchNode,
    InboxWatch,
    PoolProcessNode,
    fresh_dir,
    parse_args,
    print_table,
    quiet_logs,
    rss_kib,
    stop_all,
    summary_ms,
    write_results,
)
from fluxchat import messages as m  # noqa: E402
from fluxchat import node as node_module  # noqa: E402
from fluxchat.ids import format_id  # noqa: E402
from fluxchat.lookup import Lookup  # noqa: E402
from fluxchat.node import Node  # noqa: E402

# Background fetches every 2 s (LAB_SETTINGS) from hundreds of nodes would swamp the one core;
# the network benchmark is about joins, lookups and direct delivery, so use the default 300 s.
OVERRIDES: dict[str, Any] = {"mail": {"fetch_interval": 300}}
# One process may hold 20,000 file descriptors here (hard limit) and every link costs two (both
# ends live in this process), while links stay open client.idle_timeout (300 s) after use. That
# limit is hit near N = 200 in one process, so the big network runs with a lab setting: a
# shorter idle timeout (see bench/README.md).
LAB_SCALE: dict[int, dict[str, float]] = {200: {"idle_timeout": 15.0}}
CODE_UPKEEP = node_module.UPKEEP_INTERVAL
# The first upkeep (refresh of every bucket never looked up) runs UPKEEP_INTERVAL (60 s) after a
# node starts; the benchmark waits for it on every node, so it runs it after 15 s instead (later
# upkeeps find nothing stale either way: kademlia.refresh_interval stays 3600 s).
LAB_UPKEEP = 15.0
MAIL_WAIT = 30.0
JOIN_WAIT = 120.0


class Net:
    """N nodes plus counters of new links (each handshake shows up once on each side)."""

    def __init__(self, directory: Path, count: int, seed: int,
                 overrides: dict[str, Any]) -> None:
        self.rng = random.Random(seed)
        self.overrides = overrides
        self.directory, self.count = directory, count
        self.nodes: list[BenchNode] = []
        self.links_made = 0
        self.head_pings = 0   # "ping the bucket head before evicting" RPCs
        self.join_s: list[float] = []
        self.watches: dict[bytes, InboxWatch] = {}
        self.last_start = 0.0

    def node(self, index: int) -> Node:
        node = self.nodes[index].node
        assert node is not None
        return node

    async def build(self) -> float:
        start = time.perf_counter()
        for index in range(self.count):
            bootstrap = self._pick([n.address for n in self.nodes])
            self.nodes.append(BenchNode(self.directory, index, bootstrap, self.overrides))
            await self.join(self.nodes[-1])
            if (index + 1) % 25 == 0:
                self.progress(f"{index + 1} nodes up after {time.perf_counter() - start:.1f} s "
                              f"(last join {self.join_s[-1] * 1000:.0f} ms)")
        return time.perf_counter() - start

    async def settle(self) -> None:
        """An established network: every node has run its first upkeep (which refreshes every
        bucket never looked up, node.UPKEEP_INTERVAL after start) and lookups have gone quiet."""
        wait = self.last_start + node_module.UPKEEP_INTERVAL + 2 - time.perf_counter()
        self.progress(f"settling: first upkeep of the last node in {max(0.0, wait):.0f} s")
        await asyncio.sleep(max(0.0, wait))
        quiet, last = 0, -1
        while quiet < 3:
            total = sum(n.node.overlay.lookups for n in self.nodes if n.node is not None)
            quiet = quiet + 1 if total == last else 0
            last = total
            await asyncio.sleep(1.0)
        self.progress("settled")

    def progress(self, text: str) -> None:
        links = sum(len(n.node.net.links) for n in self.nodes if n.node is not None)
        fds = len(os.listdir("/proc/self/fd"))
        print(f"  N={self.count}: {text}; {links // 2} links, {fds} fds", file=sys.stderr,
              flush=True)

    def _pick(self, running: list[str]) -> list[str]:
        return self.rng.sample(running, min(3, len(running)))

    async def join(self, lab: BenchNode) -> None:
        """Start one node and wait until its join task is done."""
        begin, done = time.perf_counter(), asyncio.Event()
        self.last_start = begin
        original = Node._join

        async def timed_join(node: Node) -> None:
            try:
                await original(node)
            finally:
                done.set()

        Node._join = timed_join  # type: ignore[method-assign]
        try:
            node = await lab.start()
        finally:
            Node._join = original  # type: ignore[method-assign]
        await asyncio.wait_for(done.wait(), JOIN_WAIT)
        self.join_s.append(time.perf_counter() - begin)
        counted = node.overlay.on_link

        def on_link(link: Any) -> None:
            self.links_made += 1
            counted(link)

        node.overlay.on_link = on_link  # type: ignore[method-assign]
        ping_head = node.overlay._ping_head

        async def counted_ping(head: Any) -> None:
            self.head_pings += 1
            await ping_head(head)

        node.overlay._ping_head = counted_ping  # type: ignore[method-assign]
        self.watches[lab.node_id] = InboxWatch(node)

    def pairs(self, count: int) -> list[tuple[int, int]]:
        size = len(self.nodes)
        return [tuple(self.rng.sample(range(size), 2)) for _ in range(count)]  # type: ignore[misc]


# ----- lookups ---------------------------------------------------------------------------------


async def lookup(node: Node, target: bytes) -> tuple[bool, int, int, float]:
    """(found, rpcs, rounds, seconds) for one FIND_NODE lookup driven like Overlay.find_node."""
    overlay = node.overlay
    job = Lookup(target, node.identity.node_id, overlay.table.closest(target, overlay.config.k),
                 k=overlay.config.k, alpha=overlay.config.alpha)
    start = time.perf_counter()
    await overlay._drive(job, lambda rid: m.FindNode(rid, target))
    elapsed = time.perf_counter() - start
    found = any(p.node_id == target for p in job.result())
    return found, job.rpc_count, job.rounds, elapsed


async def lookups(net: Net, pairs: list[tuple[int, int]]) -> dict[str, dict[str, Any]]:
    """Each pair looked up twice in a row: cold (new links as needed), then warm."""
    results: dict[str, list[tuple[bool, int, int, float]]] = {"cold": [], "warm": []}
    new_links = {"cold": 0, "warm": 0}
    pings = {"cold": 0, "warm": 0}
    for s, t in pairs:
        for name in ("cold", "warm"):
            links, pinged = net.links_made, net.head_pings
            results[name].append(await lookup(net.node(s), net.nodes[t].node_id))
            new_links[name] += net.links_made - links
            pings[name] += net.head_pings - pinged
    return {name: _lookup_stats(rows, new_links[name] / 2, pings[name])
            for name, rows in results.items()}


def _lookup_stats(rows: list[tuple[bool, int, int, float]], links: float, pings: int
                  ) -> dict[str, Any]:
    rpcs = [r[1] for r in rows]
    return {"count": len(rows), "found": sum(r[0] for r in rows),
            "success": sum(r[0] for r in rows) / len(rows),
            "latency_ms": summary_ms([r[3] for r in rows]),
            "rpcs_mean": sum(rpcs) / len(rpcs), "rpcs_max": max(rpcs),
            "rounds_mean": sum(r[2] for r in rows) / len(rows),
            "new_links_per_lookup": links / len(rows), "head_pings_per_lookup": pings / len(rows)}


# ----- mail --------------------------------------------------------------------------------------


async def mails(net: Net, pairs: list[tuple[int, int]]) -> dict[str, Any]:
    latencies: list[float] = []
    sent: list[tuple[int, bytes]] = []
    for number, (s, t) in enumerate(pairs):
        recipient = net.nodes[t].node_id
        start = time.perf_counter()
        mail = net.node(s).mailer.submit(recipient, f"net {number}", "x" * 1024)
        sent.append((s, mail.uuid))
        arrived = await net.watches[recipient].wait(mail.uuid, MAIL_WAIT)
        if arrived is not None:
            latencies.append(arrived - start)
    deadline = time.monotonic() + MAIL_WAIT
    delivered = 0
    while time.monotonic() < deadline:
        delivered = sum(net.node(s).store.get_outbox(u).state == "delivered"  # type: ignore
                        for s, u in sent)
        if delivered == len(sent):
            break
        await asyncio.sleep(0.2)
    return {"count": len(pairs), "arrived": len(latencies),
            "success": len(latencies) / len(pairs), "receipts": delivered,
            "latency_ms": summary_ms(latencies)}


# ----- one network size ----------------------------------------------------------------------


async def run_size(count: int, lookup_count: int, mail_count: int,
                   scale: dict[str, float], settle: bool) -> dict[str, Any]:
    keypool.ensure_pool(count)
    overrides = dict(OVERRIDES)
    if "idle_timeout" in scale:
        overrides["client"] = {"idle_timeout": scale["idle_timeout"]}
    net = Net(fresh_dir(f"network-{count}"), count, count, overrides)
    rss_before = rss_kib(os.getpid())
    try:
        build_s = await net.build()
        rss_after = rss_kib(os.getpid())
        links = [len(net.node(i).net.links) for i in range(count)]
        tables = [len(net.node(i).overlay.table) for i in range(count)]
        if settle:
            await net.settle()
        passes = await lookups(net, net.pairs(lookup_count))
        net.progress("lookups done")
        mail = await mails(net, net.pairs(mail_count))
        net.progress("mail done")
        rss_end = rss_kib(os.getpid())
    finally:
        await stop_all(net.nodes)
    return {"nodes": count, "lab_scale_settings": scale, "settled": settle,
            "first_upkeep_s": node_module.UPKEEP_INTERVAL, "build_s": build_s, "join_ms": summary_ms(net.join_s),
            "links_per_node_mean": sum(links) / count, "links_per_node_max": max(links),
            "table_mean": sum(tables) / count, "table_min": min(tables),
            "lookups_cold": passes["cold"], "lookups_warm": passes["warm"], "mail": mail,
            "rss_kib_per_node_in_process": (rss_after - rss_before) / count,
            "rss_kib_process_end": rss_end}


# ----- memory of node processes -----------------------------------------------------------------


def process_memory(count: int) -> dict[str, Any]:
    """RSS of `count` server_app.py processes in a chain, after joining and one mail each."""
    directory = fresh_dir("network-processes")
    procs: list[PoolProcessNode] = []
    try:
        for index in range(count):
            proc = PoolProcessNode(directory, index, [procs[-1].address] if procs else [])
            proc.start()
            procs.append(proc)
        deadline = time.monotonic() + 30
        while any(p.call("info")["counts"]["routing"] < count - 1 for p in procs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for index, proc in enumerate(procs):
            target = procs[(index + 1) % count]
            proc.call("mail", {"to": proc_id(target), "subject": "memory", "body": "x" * 1024})
        deadline = time.monotonic() + 30
        while any(p.call("info")["counts"]["inbox"] < 1 for p in procs):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        rss = [rss_kib(p.proc.pid) for p in procs if p.proc is not None]
    finally:
        for proc in procs:
            proc.stop()
    return {"processes": count, "rss_kib": rss, "rss_mib_max": max(rss) / 1024,
            "rss_mib_mean": sum(rss) / len(rss) / 1024, "baseline_mib": baseline_rss() / 1024}


def baseline_rss() -> int:
    """VmRSS (KiB) of a bare interpreter that has only imported what server_app.py imports."""
    code = (f"import sys; sys.path[:0] = [{str(ROOT / 'src')!r}]; import fluxchat.node, "
            "fluxchat.logsetup, fluxchat.pidfile, fluxchat.password; "
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def proc_id(proc: PoolProcessNode) -> str:
    return format_id(proc.node_id)


# ----- report --------------------------------------------------------------------------------


def report(sizes: list[dict[str, Any]], memory: dict[str, Any]) -> None:
    for r in sizes:
        print(f"\nN={r['nodes']}: " + (f"measured after every node's first upkeep, run "
              f"{r['first_upkeep_s']:g} s after its start (code: {CODE_UPKEEP:g} s)"
              if r["settled"] else "measured right after the build"))
        if r["lab_scale_settings"]:
            print(f"\nN={r['nodes']} runs with lab scale settings {r['lab_scale_settings']} "
                  f"(code: idle_timeout 300 s)")
    print_table("Join (sequential, random bootstrap from up to 3 running nodes)",
                ["N", "build s", "join median ms", "join p95 ms", "links/node", "max links",
                 "table mean", "table min"],
                [[r["nodes"], r["build_s"], r["join_ms"]["median"], r["join_ms"]["p95"],
                  r["links_per_node_mean"], r["links_per_node_max"], r["table_mean"],
                  r["table_min"]] for r in sizes])
    rows = []
    for r in sizes:
        for name in ("cold", "warm"):
            lk = r[f"lookups_{name}"]
            rows.append([r["nodes"], name, lk["count"], f"{lk['success']:.1%}",
                         lk["latency_ms"]["median"], lk["latency_ms"]["p95"], lk["rpcs_mean"],
                         lk["rpcs_max"], lk["rounds_mean"], lk["new_links_per_lookup"],
                         lk["head_pings_per_lookup"]])
    print_table("Lookups between random pairs (FIND_NODE, k=20, alpha=3); each pair cold, "
                "then at once again (warm: links open). Per lookup: RPCs the lookup sent; new "
                "links and bucket-head pings anywhere in the network while it ran",
                ["N", "pass", "n", "success", "median ms", "p95 ms", "RPCs mean", "RPCs max",
                 "rounds", "new links", "head pings"], rows)
    print_table("Mail between random pairs, one after another (1 KiB)",
                ["N", "mails", "in inbox", "success", "receipts", "median ms", "p95 ms",
                 "max ms"],
                [[r["nodes"], r["mail"]["count"], r["mail"]["arrived"],
                  f"{r['mail']['success']:.1%}", r["mail"]["receipts"],
                  r["mail"]["latency_ms"].get("median", 0), r["mail"]["latency_ms"].get("p95", 0),
                  r["mail"]["latency_ms"].get("max", 0)] for r in sizes])
    print_table("Resident memory",
                ["what", "MiB"],
                [[f"in-process node (RSS growth / N, N={r['nodes']})",
                  r["rss_kib_per_node_in_process"] / 1024] for r in sizes]
                + [[f"server_app.py process, mean of {memory['processes']}",
                    memory["rss_mib_mean"]],
                   [f"server_app.py process, max of {memory['processes']}",
                    memory["rss_mib_max"]],
                   ["bare python3 after importing fluxchat.node (no node)",
                    memory["baseline_mib"]]])


def extra_args(parser: Any) -> None:
    parser.add_argument("--sizes", help="comma-separated network sizes (default 50,200)")
    parser.add_argument("--code-defaults", action="store_true",
                        help="no lab scale settings, even for N = 200")


def run_size_process(count: int, lookup_count: int, mail_count: int,
                     scale: dict[str, float], settle: bool) -> dict[str, Any]:
    """One network size in a fresh process, so its memory figures start from a clean heap."""
    quiet_logs()
    if settle:
        node_module.UPKEEP_INTERVAL = LAB_UPKEEP
    return asyncio.run(run_size(count, lookup_count, mail_count, scale, settle))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra_args)
    quiet_logs()
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [30] if args.quick else [50, 200]
    lookup_count, mail_count = (50, 50) if args.quick else (200, 500)
    results = []
    for n in sizes:
        scale = {} if args.code_defaults else LAB_SCALE.get(n, {})
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(run_size_process, n, lookup_count, mail_count, scale,
                                       True).result())
    memory = process_memory(5)
    report(results, memory)
    write_results("network", {"sizes": results, "process_memory": memory,
                              "code_upkeep_s": CODE_UPKEEP,
                              "lab_upkeep_s": LAB_UPKEEP,
                              "loadavg_after": os.getloadavg()})


if __name__ == "__main__":
    main()
