#!/usr/bin/env python3
"""Store-and-forward under churn, with real node processes and SIGKILL.

1. N server_app.py processes on 127.0.0.1 (N = 30; --quick: 15), key-pool identities,
   tests/lab.py LAB_SETTINGS with mail.fetch_interval = 2 s and mail.replicas = 5;
2. R recipients (5; --quick: 3) publish their keys on joining, then stop (SIGTERM);
3. senders (random other nodes) send M mails (100; --quick: 30) to random recipients through
   the local API; we wait until every mail is `stored` on replicas;
4. 30% of the non-recipient nodes are killed with SIGKILL, chosen at random;
5. the recipients restart; we count the mails in their inboxes two fetch intervals after
   each recipient is up again (and later, until all arrive or 30 s pass).
Full: 3 independent runs (seeds 7, 8, 9); --quick: one.

Usage: python3 bench/churn.py [--quick] [--seed S]
"""

from __future__ import annotations

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
from bench.lablib import PoolProcessNode, fresh_dir, parse_args, print_table, quiet_logs, wait_until, write_results  # noqa: E402
from fluxchat.ids import format_id  # noqa: E402

FETCH_INTERVAL = 2.0      # seconds; pinned here, whatever tests/lab.py uses
OVERRIDES: dict[str, Any] = {"mail": {"fetch_interval": FETCH_INTERVAL, "replicas": 5}}
KILL_SHARE = 0.30
SEEDS = 3


def parallel(job: Callable[[PoolProcessNode], Any], nodes: Sequence[PoolProcessNode]) -> list[Any]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(job, nodes))


def info(node: PoolProcessNode) -> dict[str, Any]:
    return node.call("info")["counts"]


def outbox_states(node: PoolProcessNode) -> list[str]:
    return [item["state"] for item in node.call("list", {"folder": "outbox", "limit": 1000})["items"]]


def published(node: PoolProcessNode) -> bool:
    """The node logged that its join stored its public key on other nodes."""
    return "public key stored on" in (node.data_dir / "stderr.log").read_text(errors="replace")


class Lab:
    def __init__(self, count: int, recipients: int, seed: int) -> None:
        keypool.ensure_pool(count)
        self.rng = random.Random(seed)
        self.directory = fresh_dir("churn")
        self.count = count
        self.nodes: list[PoolProcessNode] = []
        self.recipients: list[PoolProcessNode] = []
        self.recipient_count = recipients
        self.expected: dict[PoolProcessNode, int] = {}   # mails sent to each recipient

    def build(self) -> float:
        """Seeds first (a chain), then everyone else at once, each bootstrapping from seeds."""
        start = time.perf_counter()
        for index in range(SEEDS):
            node = PoolProcessNode(self.directory, index, [n.address for n in self.nodes[-1:]],
                                   OVERRIDES)
            node.start()
            self.nodes.append(node)
        seeds = [n.address for n in self.nodes]
        rest = [PoolProcessNode(self.directory, index, self.rng.sample(seeds, 2), OVERRIDES)
                for index in range(SEEDS, self.count)]
        self.nodes += rest
        parallel(lambda n: n.start(), rest)
        need = min(20, self.count - 1) // 2
        if not wait_until(lambda: all(info(n)["routing"] >= need for n in self.nodes), 60, 0.2):
            raise RuntimeError("the network did not form")
        self.recipients = self.nodes[-self.recipient_count:]
        return time.perf_counter() - start

    @property
    def others(self) -> list[PoolProcessNode]:
        return [n for n in self.nodes if n not in self.recipients]

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop(timeout=10)
            except Exception as exc:  # noqa: BLE001 - stop the rest anyway
                print(f"stopping {node.data_dir.name}: {exc!r}", file=sys.stderr)


def send(lab: Lab, count: int) -> dict[str, Any]:
    """Recipients offline; mails from random senders; wait until all are stored."""
    if not wait_until(lambda: all(published(n) for n in lab.recipients), 30, 0.2):
        raise RuntimeError("a recipient did not publish its key")
    parallel(lambda n: n.stop(), lab.recipients)
    per_sender: dict[PoolProcessNode, int] = {}
    expected: dict[PoolProcessNode, int] = {r: 0 for r in lab.recipients}
    for number in range(count):
        sender, recipient = lab.rng.choice(lab.others), lab.rng.choice(lab.recipients)
        sender.call("mail", {"to": format_id(recipient.node_id), "subject": f"churn {number}",
                             "body": "x" * 1024})
        per_sender[sender] = per_sender.get(sender, 0) + 1
        expected[recipient] += 1
    start = time.perf_counter()

    def states() -> list[str]:
        return [s for sender in per_sender for s in outbox_states(sender)]

    stored = wait_until(lambda: all(s == "stored" for s in states()), 60, 0.5)
    final = states()
    lab.expected = expected
    return {"mails": count, "senders": len(per_sender), "all_stored": stored,
            "stored": final.count("stored"), "store_s": time.perf_counter() - start,
            "states": {s: final.count(s) for s in set(final)}}


def churn(lab: Lab) -> dict[str, Any]:
    """SIGKILL 30% of the non-recipients; count held envelope copies before and after."""
    held_before = sum(info(n)["held"] for n in lab.others)
    victims = lab.rng.sample(lab.others, round(KILL_SHARE * len(lab.others)))
    for node in victims:
        node.stop(signal.SIGKILL)
    lab.nodes = [n for n in lab.nodes if n not in victims]
    held_after = sum(info(n)["held"] for n in lab.others)
    return {"killed": len(victims), "copies_before": held_before, "copies_after": held_after}


def restart(lab: Lab) -> dict[str, Any]:
    """Start the recipients again; count arrivals at 2 fetch intervals after each is up."""
    expected = lab.expected
    launched = time.perf_counter()
    ready: dict[PoolProcessNode, float] = {}

    def up(node: PoolProcessNode) -> None:
        node.start()
        ready[node] = time.perf_counter()

    parallel(up, lab.recipients)
    window = 2 * FETCH_INTERVAL
    at_window: dict[PoolProcessNode, int] = {}
    complete: dict[PoolProcessNode, float] = {}
    deadline = time.perf_counter() + window + 30
    while time.perf_counter() < deadline and len(complete) < len(lab.recipients):
        now = time.perf_counter()
        for node in lab.recipients:
            inbox = info(node)["inbox"]
            if node not in at_window and now >= ready[node] + window:
                at_window[node] = inbox
            if node not in complete and inbox >= expected[node]:
                complete[node] = now
        time.sleep(0.1)
    final = {node: info(node)["inbox"] for node in lab.recipients}
    for node in lab.recipients:   # still unset: the node was complete before its window closed
        at_window.setdefault(node, final[node])
    total = sum(expected.values())
    return {"window_s": window, "expected": total,
            "arrived_in_window": sum(min(at_window[n], expected[n]) for n in lab.recipients),
            "arrived_final": sum(min(final[n], expected[n]) for n in lab.recipients),
            "startup_s_max": max(ready[n] - launched for n in lab.recipients),
            "all_arrived_s_after_ready": max((complete[n] - ready[n]) for n in complete)
            if len(complete) == len(lab.recipients) else None}


def report(runs: list[dict[str, Any]]) -> None:
    rows = []
    for run in runs:
        r, s, k = run["restart"], run["send"], run["churn"]
        rows.append([run["seed"], run["nodes"], run["recipients"], run["build_s"],
                     f"{s['stored']}/{s['mails']}", f"{k['copies_after']}/{k['copies_before']}",
                     f"{k['killed']}/{run['others']}", r["startup_s_max"],
                     f"{r['arrived_in_window']}/{r['expected']}",
                     f"{r['arrived_final']}/{r['expected']}", r["all_arrived_s_after_ready"]])
    window = runs[0]["restart"]["window_s"]
    print_table(f"Store-and-forward under churn: server_app.py processes, {KILL_SHARE:.0%} of "
                f"non-recipients SIGKILLed; window = 2 fetch intervals = {window:g} s after the "
                "recipient is up", ["seed", "nodes", "rcpts", "build s", "stored",
                                     "copies left", "killed", "rcpt start s", "in window",
                                     "in the end", "all in, s"], rows)
    expected = sum(r["restart"]["expected"] for r in runs)
    in_window = sum(r["restart"]["arrived_in_window"] for r in runs)
    print(f"total: {in_window}/{expected} = {in_window / expected:.2%} within the window")


def run(count: int, recipients: int, mails: int, seed: int) -> dict[str, Any]:
    lab = Lab(count, recipients, seed)
    try:
        build_s = lab.build()
        others = len(lab.others)
        sent = send(lab, mails)
        killed = churn(lab)
        arrived = restart(lab)
    finally:
        lab.stop()
    return {"seed": seed, "nodes": count, "recipients": recipients, "others": others,
            "build_s": build_s, "send": sent, "churn": killed, "restart": arrived}


def extra_args(parser: Any) -> None:
    parser.add_argument("--seed", type=int, default=7, help="first seed")
    parser.add_argument("--runs", type=int, help="independent runs (default 3; --quick: 1)")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra_args)
    quiet_logs()
    count, recipients, mails = (15, 3, 30) if args.quick else (30, 5, 100)
    runs = args.runs or (1 if args.quick else 3)
    results = [run(count, recipients, mails, args.seed + i) for i in range(runs)]
    report(results)
    expected = sum(r["restart"]["expected"] for r in results)
    write_results("churn", {"runs": results, "fetch_interval_s": FETCH_INTERVAL,
                            "kill_share": KILL_SHARE, "expected": expected,
                            "arrived_in_window": sum(r["restart"]["arrived_in_window"]
                                                     for r in results),
                            "loadavg_after": os.getloadavg()})


if __name__ == "__main__":
    main()
