#!/usr/bin/env python3
"""Memory of one node process: RSS idle, RSS with 10,000 mails in its store, and where it goes.

Every node runs as installed: it logs to a file in its data directory (not --dev's stderr).
- **Idle**: a real `src/server_app.py` process (test identity, no peers, local API on), RSS once
  it has served for a few seconds and settled. PSS (shared library pages divided among the
  processes that map them) and the private part (USS) are printed beside it: RSS counts every
  shared page in full, in each process.
- **10,000 mails**: the same node stopped, 8,000 received and 2,000 sent mails written into its
  encrypted store, started again; RSS settled, then after `list`, `conversations` and `info`.
- **Small network**: the node idle in a network of a few processes that joined through it
  (`--network`, default 4 nodes): RSS once the joins, key publications and first fetches are
  done and the links stay open, for the first node and the last to join.
- **Working**: a second node links to it and sends it mail (`--exchange`, default 300 mails,
  with receipts back); RSS of the receiving node once all arrived, and its threads: the work
  that runs off the event loop (proof of work, private-key operations) starts worker threads,
  and glibc gives each its own malloc arena unless MALLOC_ARENA_MAX says otherwise. Then
  `--big` mails (default 3) of 900 kB each over the same link: what a link keeps after big
  frames (asyncio's TLS layer encrypts each write into a buffer that never shrinks).
- **Burst**: two fresh nodes; the second submits `--burst` mails (default 3,000) at once
  through several local API connections, so they reach the first in DeliverMany bursts as
  fast as both can go (bench/delivery.py's sustained run, between two real node processes);
  RSS of both once all arrived and all receipts came back, then the receiver sends one mail
  back (its first attempt after the burst); then both once more after the next upkeep (within
  a minute), which gives back SQLite's page cache and the heap's free pages.
- **Imports**: RSS of a fresh interpreter after each group of the imports `server_app.py`
  makes (the heavy stdlib and third-party packages first, then our modules layer by layer),
  and the slowest imports by `-X importtime`.
"anon" is the process's anonymous memory (Python objects, C heaps): the part no other process
shares. The rest of RSS are library pages (libpython, OpenSSL, cryptography's Rust module,
SQLCipher), counted in full in every process. Which sqlcipher3 build runs is printed first: the
wheel carries its own OpenSSL, a build by bin/build-sqlcipher.sh uses the system's.
Target (issues 13 and 16): RSS per node process < 40 MiB.

Usage: python3 bench/rss.py [--quick] [--mails N] [--exchange N] [--big N] [--burst N] [--network N]
       [--only burst]
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.lablib import fill_mailbox, fresh_dir, parse_args, print_table, write_results  # noqa: E402
from tests.keys import identity  # noqa: E402
from tests.lab import ProcessNode  # noqa: E402
from tests.test_layers import LAYERS  # noqa: E402

TARGET_MIB = 40.0
BIG_BODY = 900_000   # characters of each `--big` mail: under the 1 MiB body limit
UPKEEP_WAIT = 62.0   # seconds: a node's upkeep runs every minute (upkeep.UPKEEP_INTERVAL)
# Heavy packages, measured one by one (in this order) when server_app.py imports them.
HEAVY = ["asyncio", "ssl", "sqlite3", "cryptography.hazmat.bindings._rust", "cryptography.hazmat.primitives.hpke",
         "cryptography.x509", "argon2", "sqlcipher3", "aiohttp"]
ENTRY = "server_app"


def node(directory: Path, index: int, bootstrap: list[str]) -> ProcessNode:
    """Node `index` logging to data_dir/node.log, as bin/setup.sh configures a node."""
    log_file = directory / f"node{index:02d}" / "node.log"
    return ProcessNode(directory, index, bootstrap, {"log": {"file": str(log_file)}}, dev=False)


def log_text(node: ProcessNode) -> str:
    path = node.data_dir / "node.log"
    return path.read_text() if path.exists() else ""


def memory(pid: int) -> dict[str, float]:
    """RSS, PSS, private (USS) and anonymous MiB and the thread count of a process, from /proc."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Anonymous"):
            figures[name] = int(value.split()[0]) / 1024
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
    return {"rss": figures["Rss"], "pss": figures["Pss"],
            "uss": figures["Private_Clean"] + figures["Private_Dirty"], "anon": figures["Anonymous"],
            "threads": threads}


def settled(pid: int, seconds: float) -> dict[str, float]:
    """Sample for `seconds` after start-up work; the last sample (RSS only grows while idle)."""
    deadline, last = time.monotonic() + seconds, memory(pid)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        last = memory(pid)
    return last


def fill(node: ProcessNode, received: int, sent: int) -> None:
    """The mailbox as a long-used node has it, written into the stopped node's encrypted store."""
    store = node.open_store()
    fill_mailbox(store, identity(node.index).node_id, received, sent)
    store.close()


def wait_for(check: Any, what: str, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.2)
    return result


def small_network(count: int, settle: float) -> dict[str, dict[str, float]]:
    """Nodes 1..count-1 join through node 0; both ends measured once the network is idle."""
    directory = fresh_dir("rss_network")
    first = node(directory, 0, [])
    nodes = [first]
    try:
        first.start()
        for index in range(1, count):
            nodes.append(node(directory, index, [first.address]))
            nodes[-1].start()
        last = nodes[-1]
        for each in nodes:   # a node logs "joined:" once its join is done (see procnet.py)
            wait_for(lambda each=each: "joined:" in log_text(each), "joined")
        wait_for(lambda: len(first.call("peers")["links"]) >= count - 1, "linked to all")
        rows: dict[str, dict[str, float]] = {}
        for name, each in ((f"{count}-node network, first node", first),
                           (f"{count}-node network, last to join", last)):
            assert each.proc is not None
            links = len(each.call("peers")["links"])
            rows[f"{name} ({links} links)"] = settled(each.proc.pid, settle)
        return rows
    finally:
        for each in reversed(nodes):
            each.stop()


def sqlcipher_build() -> str:
    """Which OpenSSL the installed sqlcipher3 uses (bin/build-sqlcipher.sh --check)."""
    done = subprocess.run([str(ROOT / "bin" / "build-sqlcipher.sh"), "--check"], capture_output=True,
                          text=True)
    return done.stdout.strip() or done.stderr.strip()


@contextmanager
def linked_pair(name: str) -> Iterator[tuple[ProcessNode, ProcessNode]]:
    """Node 0 (the receiver) and node 1 (the sender), started fresh in their own directory,
    the sender linked to the receiver; both stopped at the end."""
    directory = fresh_dir(name)
    receiver = node(directory, 0, [])
    receiver.start()
    sender = node(directory, 1, [receiver.address])
    try:
        sender.start()
        to = identity(0).id_text
        wait_for(lambda: any(link["id"] == to for link in sender.call("peers")["links"]), "linked")
        yield receiver, sender
    finally:
        sender.stop()
        receiver.stop()


def working(mails: int, big: int, settle: float) -> dict[str, dict[str, float]]:
    """Node 0 receives `mails` mails from node 1 over a real link, then `big` mails of
    BIG_BODY characters; both measured after each."""
    rows: dict[str, dict[str, float]] = {}
    with linked_pair("rss_working") as (receiver, sender):
        assert receiver.proc is not None and sender.proc is not None
        to = identity(0).id_text
        with sender.client() as client:
            for n in range(mails):
                client.call("mail", {"to": [to], "subject": f"mail {n}", "body": f"body {n} " * 20})
        wait_for(lambda: receiver.call("info")["counts"]["inbox"] >= mails, "all mails in")
        rows[f"received {mails} mails (receiver)"] = settled(receiver.proc.pid, settle)
        rows[f"sent {mails} mails (sender)"] = memory(sender.proc.pid)
        with sender.client() as client:
            for n in range(big):
                client.call("mail", {"to": [to], "subject": f"big {n}", "body": "x" * BIG_BODY})
        wait_for(lambda: receiver.call("info")["counts"]["inbox"] >= mails + big, "big mails in")
        if big:
            rows[f"then received {big} mails of {BIG_BODY // 1000} kB"] = \
                settled(receiver.proc.pid, settle)
            rows[f"then sent {big} mails of {BIG_BODY // 1000} kB"] = memory(sender.proc.pid)
    return rows


def receipted(sender: ProcessNode) -> int:
    """Mails of `sender` whose receipt it verified, from its log."""
    return sum(int(n) for n in re.findall(r"verified for (\d+) mail", log_text(sender)))


BURST_CLIENTS = 8   # local API connections submitting the burst at once


def burst(count: int, settle: float) -> dict[str, dict[str, float]]:
    """Node 1 submits `count` mails to node 0 at once; both measured once all are in and
    every receipt is back; then node 0 sends one mail to node 1."""
    rows: dict[str, dict[str, float]] = {}
    with linked_pair("rss_burst") as (receiver, sender):
        assert receiver.proc is not None and sender.proc is not None
        to = identity(0).id_text
        rows["burst: receiver before"] = memory(receiver.proc.pid)

        def submit(part: int) -> None:
            with sender.client() as client:
                for n in range(part, count, BURST_CLIENTS):
                    client.call("mail", {"to": [to], "subject": f"burst {n}", "body": f"body {n} " * 100})

        start = time.monotonic()
        with ThreadPoolExecutor(BURST_CLIENTS) as pool:
            list(pool.map(submit, range(BURST_CLIENTS)))
        wait_for(lambda: receiver.call("info")["counts"]["inbox"] >= count, "burst in")
        took = time.monotonic() - start
        wait_for(lambda: receipted(sender) >= count, "receipts back")
        rows[f"burst: received {count:,} mails ({count / took:,.0f}/s)"] = settled(receiver.proc.pid, settle)
        rows[f"burst: sent {count:,} mails"] = memory(sender.proc.pid)
        receiver.call("mail", {"to": [identity(1).id_text], "subject": "back", "body": "after the burst"})
        wait_for(lambda: sender.call("info")["counts"]["inbox"] >= 1, "mail back")
        rows["burst: receiver, then sent 1 mail"] = settled(receiver.proc.pid, settle / 2)
        # A node's upkeep (every UPKEEP_INTERVAL) gives back what SQLite and the heap hold unused.
        rows["burst: receiver, after its next upkeep"] = settled(receiver.proc.pid, UPKEEP_WAIT)
        rows["burst: sender, after its next upkeep"] = memory(sender.proc.pid)
    return rows


def node_figures(mails: int, settle: float) -> dict[str, dict[str, float]]:
    idle = node(fresh_dir("rss"), 0, [])
    rows: dict[str, dict[str, float]] = {}
    idle.start()
    try:
        assert idle.proc is not None
        idle.call("info")   # it answers: started and serving
        rows["idle"] = settled(idle.proc.pid, settle)
    finally:
        idle.stop()
    fill(idle, mails * 4 // 5, mails - mails * 4 // 5)
    idle.start()
    try:
        assert idle.proc is not None
        idle.call("info")
        rows[f"idle, {mails:,} mails"] = settled(idle.proc.pid, settle)
        for cmd, args in (("list", {}), ("list", {"folder": "sent"}), ("conversations", {}), ("info", {})):
            idle.call(cmd, args)
        rows[f"{mails:,} mails, after list/conversations"] = settled(idle.proc.pid, settle / 2)
    finally:
        idle.stop()
    return rows


_PROBE = """
import sys
import {entry}
print("\\n".join(sorted(sys.modules)))
"""

_STEPS = r"""
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
steps = [("interpreter", rss())]
for group in json.loads(sys.argv[1]):
    for name in group[1]:
        importlib.import_module(name)
    steps.append((group[0], rss()))
print(json.dumps(steps))
"""


def import_groups(loaded: set[str]) -> list[tuple[str, list[str]]]:
    groups: list[tuple[str, list[str]]] = [(name, [name]) for name in HEAVY if name in loaded]
    names = {"fluxchat." + name for layer in LAYERS.values() for name in layer}
    titles = {0: "fluxchat base", 1: "fluxchat pure core", 2: "fluxchat adapters", 3: "fluxchat node, services"}
    for layer, modules in sorted(LAYERS.items()):
        ours = sorted(f"fluxchat.{name}" for name in modules if f"fluxchat.{name}" in loaded)
        groups.append((f"{titles[layer]} ({len(ours)} modules)", ours))
    others = sorted(name for name in loaded if name.startswith("fluxchat.") and name not in names)
    if others:
        groups.append(("fluxchat, other", others))
    groups.append((ENTRY, [ENTRY]))
    return groups


def imports() -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    run = [sys.executable, "-c"]
    loaded = set(subprocess.run(run + [_PROBE.format(entry=ENTRY)], env=env, check=True, capture_output=True,
                                text=True).stdout.split())
    groups = import_groups(loaded)
    steps = json.loads(subprocess.run(run + [_STEPS, json.dumps(groups)], env=env, check=True,
                                      capture_output=True, text=True).stdout)
    times = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {ENTRY}"], env=env, check=True,
                           capture_output=True, text=True).stderr
    slow = []
    for line in times.splitlines()[1:]:
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) <= 3:   # the entry point and what it imports directly
            slow.append((match.group(4).strip(), int(match.group(2)) / 1000))
    slow.sort(key=lambda item: -item[1])
    third = sorted({name.split(".")[0] for name in loaded} - set(sys.stdlib_module_names)
                   - {"fluxchat", ENTRY, "__main__"} - {name for name in loaded if name.startswith("_")})
    return {"steps": steps, "slowest_ms": slow[:10], "third_party": third, "modules": len(loaded)}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    def options(parser: Any) -> None:
        parser.add_argument("--mails", type=int, default=10_000,
                            help="mails in the store for the second run (default 10,000)")
        parser.add_argument("--exchange", type=int, default=300,
                            help="mails sent between two nodes for the working figure (default 300)")
        parser.add_argument("--big", type=int, default=3,
                            help=f"mails of {BIG_BODY:,} characters sent after those (default 3)")
        parser.add_argument("--burst", type=int, default=3_000,
                            help="mails submitted at once for the burst figure (default 3,000)")
        parser.add_argument("--only", choices=["burst"],
                            help="only the burst figure (no imports, no other runs)")
        parser.add_argument("--network", type=int, default=4,
                            help="processes in the small network (default 4)")

    args = parse_args(__doc__.splitlines()[0], options)
    mails = 2_000 if args.quick else args.mails
    exchange = 50 if args.quick else args.exchange
    settle = 3.0 if args.quick else 6.0
    before = load()
    print(f"before: {before}")
    if args.only == "burst":
        burst_rows = burst(300 if args.quick else args.burst, settle)
        print_table(f"server_app.py processes, a burst (target RSS < {TARGET_MIB:.0f} MiB)",
                    ["", "RSS MiB", "PSS MiB", "private MiB", "anon MiB", "threads"],
                    [[name, f["rss"], f["pss"], f["uss"], f["anon"], int(f["threads"])]
                     for name, f in burst_rows.items()])
        print(f"\nafter: {load()}")
        return
    build = sqlcipher_build()
    print(build)
    found = imports()
    rows, previous = [], found["steps"][0][1]
    for name, mib in found["steps"]:
        rows.append([name, mib, mib - previous])
        previous = mib
    print_table(f"RSS of a fresh interpreter after each group of imports ({found['modules']} modules; "
                f"third-party: {', '.join(found['third_party'])})", ["import", "RSS MiB", "+MiB"], rows)
    print_table("Slowest imports of server_app.py (-X importtime, cumulative)", ["module", "ms"],
                found["slowest_ms"])
    nodes = node_figures(mails, settle)
    nodes.update(small_network(args.network, settle))
    nodes.update(working(exchange, args.big, settle))
    nodes.update(burst(300 if args.quick else args.burst, settle))
    print_table(f"server_app.py process (target RSS < {TARGET_MIB:.0f} MiB)",
                ["", "RSS MiB", "PSS MiB", "private MiB", "anon MiB", "threads"],
                [[name, f["rss"], f["pss"], f["uss"], f["anon"], int(f["threads"])]
                 for name, f in nodes.items()])
    after = load()
    print(f"\nafter: {after}")
    write_results("rss", {"imports": found, "node": nodes, "target_mib": TARGET_MIB, "sqlcipher3": build,
                          "load": {"before": before, "after": after}})


if __name__ == "__main__":
    main()
