#!/usr/bin/env python3
"""Store-and-forward under churn, with real node processes and SIGKILL.

1. N server_app.py processes on 127.0.0.1 (N = 30; --quick: 15), key-pool identities,
   LAB_SETTINGS (mail.fetch_interval = 2 s, mail.replicas = 5);
2. R recipients (5; --quick: 3) publish their keys on joining, then stop (SIGTERM);
3. senders (random other nodes) send M mails (100; --quick: 30) to random recipients through
   the local API; we wait until every mail is `stored` on replicas;
4. 30% of the non-recipient nodes are killed with SIGKILL, chosen at random;
5. the recipients restart; we count the mails in their inboxes two fetch intervals after
   each recipient is up again (and later, until all arrive or 30 s pass).

Usage: python3 bench/churn.py [--quick] [--seed S]
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import keypool  # noqa: E402
from bench.lablib import (PoolProcessNode, fresh_dir, parse_args, print_table,  # noqa: E402
                          quiet_logs, write_results)
from fluxchat.ids import format_id  # noqa: E402
from tests.lab import LAB_SETTINGS  # noqa: E402

FETCH_INTERVAL = float(LAB_SETTINGS["mail"]["fetch_interval"])
KILL_SHARE = 0.30
SEEDS = 3


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def parallel(job: Callable[[PoolProcessNode], Any], nodes: Sequence[PoolProcessNode]) -> list[Any]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(job, nodes))


def info(node: PoolProcessNode) -> dict[str, Any]:
    return node.call("info")["counts"]


def outbox_states(node: PoolProcessNode) -> list[str]:
    return [item["state"] for item in node.call("list", {"folder": "outbox", "limit": 1000})["items"]]


class Lab:
    def __init__(self, count: int, recipients: int, seed: int) -> None:
        keypool.ensure_pool(count)
        self.rng = random.Random(seed)
        self.directory = fresh_dir("churn")
        self.count = count
        self.nodes: list[PoolProcessNode] = []
        self.recipients: list[PoolProcessNode] = []
        self.recipient_count = recipients

    def build(self) -> float:
        """Seeds first (a chain), then everyone else at once, each bootstrapping from seeds."""
        start = time.perf_counter()
        for index in range(SEEDS):
            node = PoolProcessNode(self.directory, index, [n.address for n in self.nodes[-1:]])
            node.start()
            self.nodes.append(node)
        seeds = [n.address for n in self.nodes]
        rest = [PoolProcessNode(self.directory, index, self.rng.sample(seeds, 2))
                for index in range(SEEDS, self.count)]
        self.nodes += rest
        parallel(lambda n: n.start(), rest)
        need = min(20, self.count - 1) // 2
        if not wait_until(lambda: all(info(n)["routing"] >= need for n in self.nodes), 60):
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
    time.sleep(1.0)   # the recipients' key publication follows their join
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
    lab.expected = expected  # type: ignore[attr-defined]
    return {"mails": count, "senders": len(per_sender), "all_stored": stored,
            "stored": final.count("stored"), "store_s": time.perf_counter() - start,
            "states": {s: final.count(s) for s in set(final)}}


def churn(lab: Lab) -> list[PoolProcessNode]:
    victims = lab.rng.sample(lab.others, round(KILL_SHARE * len(lab.others)))
    for node in victims:
        node.stop(signal.SIGKILL)
    lab.nodes = [n for n in lab.nodes if n not in victims]
    return victims


def restart(lab: Lab) -> dict[str, Any]:
    """Start the recipients again; count arrivals at 2 fetch intervals after each is up."""
    expected: dict[PoolProcessNode, int] = lab.expected  # type: ignore[attr-defined]
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


def report(result: dict[str, Any]) -> None:
    r, s = result["restart"], result["send"]
    print_table("Store-and-forward under churn (server_app.py processes, SIGKILL)",
                ["what", "value"],
                [["nodes", result["nodes"]], ["recipients (offline while mail is sent)",
                                              result["recipients"]],
                 ["network build s", result["build_s"]],
                 ["mails sent / stored on replicas", f"{s['mails']} / {s['stored']}"],
                 ["time until all stored s", s["store_s"]],
                 ["nodes killed with SIGKILL", f"{result['killed']} of {result['others']} "
                                               f"({KILL_SHARE:.0%} of non-recipients)"],
                 ["recipient restart to ready s (max)", r["startup_s_max"]],
                 [f"arrived within 2 fetch intervals ({r['window_s']:g} s after ready)",
                  f"{r['arrived_in_window']} / {r['expected']} "
                  f"({r['arrived_in_window'] / r['expected']:.1%})"],
                 ["arrived in the end (30 s more)",
                  f"{r['arrived_final']} / {r['expected']} "
                  f"({r['arrived_final'] / r['expected']:.1%})"],
                 ["all arrived, s after ready (slowest recipient)",
                  r["all_arrived_s_after_ready"]]])


def extra_args(parser: Any) -> None:
    parser.add_argument("--seed", type=int, default=7)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], extra_args)
    quiet_logs()
    count, recipients, mails = (15, 3, 30) if args.quick else (30, 5, 100)
    lab = Lab(count, recipients, args.seed)
    try:
        build_s = lab.build()
        others = len(lab.others)
        sent = send(lab, mails)
        killed = churn(lab)
        arrived = restart(lab)
    finally:
        lab.stop()
    result = {"nodes": count, "recipients": recipients, "others": others, "build_s": build_s,
              "send": sent, "killed": len(killed), "restart": arrived, "seed": args.seed,
              "fetch_interval_s": FETCH_INTERVAL}
    report(result)
    write_results("churn", {**result, "loadavg_after": os.getloadavg()})


if __name__ == "__main__":
    main()
