#!/usr/bin/env python3
"""Direct delivery between two linked nodes on 127.0.0.1.

- latency from `mailer.send` (what the local API's `mail` command calls) to the commit in
  the recipient's inbox, mails sent one after another (each waits for its receipt before the
  next), 1 KiB and 64 KiB bodies; also submit → receipt verified at the sender;
- a burst of mails submitted at once: mails/s until all are in the recipient's inbox, and
  until all receipts are verified; CPU ms per mail.
Run 1: both nodes in this process (one event loop, one core): CPU is the total of both sides.
Run 2: the recipient in a child process, so each side's CPU is measured on its own and the
two nodes use both cores, as two machines would.
Each run with RSA-4096 keys on both ends (the production size: tests/data/keys/rsa4096 and
the key pool's rsa4096b), once with mail keys (envelope v2, the default) and once with
`mail_keys.enabled` false (envelope v1, RSA only; sequential only, see BURST_RUNS), and with
RSA-2048 keys (test identities) and mail keys. Run 2 also reports the RSS of the recipient's
process before and after its burst; that process is this benchmark's child (the node in a
multiprocessing child beside the pipe and the arrival-time bookkeeping, without the options
and malloc tunable a node runs with, process_env.py), so its RSS is not a node's: a real
node's RSS after a burst is bench/rss.py's "burst" figure.

Usage: python3 bench/delivery.py [--quick] [--split-only] [--latency N] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import keypool  # noqa: E402
from bench.lablib import (  # noqa: E402
    BenchNode,
    InboxWatch,
    ReceiptWatch,
    fresh_dir,
    parse_args,
    print_table,
    quiet_logs,
    summary_ms,
    write_results,
)
from fluxchat.node import Node  # noqa: E402
from tests.keys import KEYS  # noqa: E402

SIZES = {"1 KiB": 1024, "64 KiB": 64 * 1024}
KEY_2048 = (ROOT / "tests/data/keys/node00", ROOT / "tests/data/keys/node01")
KEY_4096 = (KEYS / "rsa4096", keypool.POOL / keypool.EXTRA_4096)
V1_ONLY: dict[str, Any] = {"mail_keys": {"enabled": False}}
# label -> (keys, config overrides for both nodes)
RUNS: dict[str, tuple[tuple[Path, Path], dict[str, Any]]] = {
    "RSA-4096 v2": (KEY_4096, {}),
    "RSA-4096 v1": (KEY_4096, V1_ONLY),
    "RSA-2048 v2": (KEY_2048, {}),
}
# v1 envelopes cost the recipient an RSA private-key operation, which each peer may cause only
# 4 times a second after a burst of 64 (mail_limits.PRIVATE_OPS_*): a v1 burst would measure
# that budget, so v1 runs only the sequential latencies, with few enough mails to stay in it.
BURST_RUNS = ("RSA-4096 v2", "RSA-2048 v2")
V1_SEQUENTIAL = 12
WAIT = 60.0


def body(size: int) -> str:
    return ("FluxChat benchmark body. " * (size // 25 + 1))[:size]


async def linked(sender: Node, recipient_id: bytes) -> None:
    """Wait until the sender holds a link to the recipient and its key."""
    assert sender.store is not None
    deadline = time.monotonic() + 10
    while recipient_id not in sender.net.links or not sender.store.get_key(recipient_id):
        if time.monotonic() > deadline:
            raise TimeoutError("nodes did not link")
        await asyncio.sleep(0.01)


async def submit_all(sender: Node, recipient: bytes, subject: str, text: str,
                     count: int) -> list[bytes]:
    """`count` mails submitted at once, as that many local API requests in flight would be
    (`mailer.send` is what the `mail` command calls); their uuids once all are committed."""
    mails = await asyncio.gather(*(sender.mailer.send(recipient, f"{subject} {i}", text)
                                   for i in range(count)))
    return [mail.uuid for mail in mails]


# ----- run 1: both nodes in this process -------------------------------------------------


async def sequential(sender: Node, recipient: bytes, watch: InboxWatch, receipts: ReceiptWatch,
                     size: int, count: int) -> dict[str, Any]:
    to_inbox: list[float] = []
    to_receipt: list[float] = []
    lost = 0
    text = body(size)
    for i in range(count):
        start = time.perf_counter()
        mail = await sender.mailer.send(recipient, f"seq {i}", text)
        arrived = await watch.wait(mail.uuid, WAIT)
        done = await receipts.wait(mail.uuid, WAIT)
        if arrived is None or done is None:
            lost += 1
            continue
        to_inbox.append(arrived - start)
        to_receipt.append(done - start)
    return {"size": size, "count": count, "lost": lost, "to_inbox_ms": summary_ms(to_inbox),
            "to_receipt_ms": summary_ms(to_receipt)}


async def burst_in_process(sender: Node, recipient: bytes, watch: InboxWatch,
                           receipts: ReceiptWatch, count: int) -> dict[str, Any]:
    text = body(1024)
    before = len(watch.arrived)
    cpu0, start = time.process_time(), time.perf_counter()
    uuids = await submit_all(sender, recipient, "burst", text, count)
    submitted = time.perf_counter()
    ok = await watch.wait_count(before + count, WAIT * 3)
    inbox_at, cpu_inbox = time.perf_counter(), time.process_time()
    done_at = await receipts.wait_all(uuids, WAIT * 3)
    cpu_done = time.process_time()
    return {"count": count, "all_arrived": ok, "submit_s": submitted - start,
            "inbox_s": inbox_at - start, "mails_per_s_to_inbox": count / (inbox_at - start),
            "mails_per_s_to_receipt": count / (done_at - start) if done_at else None,
            "cpu_ms_per_mail_to_inbox_both_sides": 1000 * (cpu_inbox - cpu0) / count,
            "cpu_ms_per_mail_with_receipts_both_sides": 1000 * (cpu_done - cpu0) / count}


async def run_in_process(label: str, keys: tuple[Path, Path], overrides: dict[str, Any],
                         sizes: dict[str, int], seq_count: int, burst: int) -> dict[str, Any]:
    directory = fresh_dir(f"delivery-{label.replace(' ', '-')}")
    a = BenchNode(directory, keys[0], [], overrides)
    await a.start()
    b = BenchNode(directory, keys[1], [a.address], overrides)
    try:
        await b.start()
        assert a.node is not None and b.node is not None
        await linked(a.node, b.node_id)
        watch, receipts = InboxWatch(b.node), ReceiptWatch(a.node)
        await sequential(a.node, b.node_id, watch, receipts, 1024, 3)   # warm-up
        if label not in BURST_RUNS:
            seq_count = V1_SEQUENTIAL
        seq = {name: await sequential(a.node, b.node_id, watch, receipts, size, seq_count)
               for name, size in sizes.items()}
        result = (await burst_in_process(a.node, b.node_id, watch, receipts, burst)
                  if label in BURST_RUNS and burst else None)
    finally:
        await b.stop()
        await a.stop()
    return {"keys": label, "sequential": seq, "burst": result}


# ----- run 2: the recipient in a child process --------------------------------------------


def recipient_main(directory: Path, key: Path, overrides: dict[str, Any],
                   conn: Connection, profile: Path | None = None) -> None:
    """Child process: run the recipient node; report arrivals and its own CPU time
    (with `profile`, under cProfile from the burst on, stats written there)."""
    quiet_logs()
    asyncio.run(_recipient(directory, key, overrides, conn, profile))


class SqlCount:
    """Counts the SQL statements (and COMMITs) a node's store runs (profiling only)."""

    def __init__(self, node: Node) -> None:
        assert node.store is not None
        self.statements = self.commits = 0
        node.store._db.set_trace_callback(self._seen)

    def _seen(self, sql: str) -> None:
        self.statements += 1
        self.commits += sql.strip().upper() == "COMMIT"

    def per_mail(self, count: int) -> dict[str, float]:
        return {"statements": self.statements / count, "commits": self.commits / count}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _recipient(directory: Path, key: Path, overrides: dict[str, Any],
                     conn: Connection, profile: Path | None) -> None:
    node = BenchNode(directory, key, [], overrides)
    await node.start()
    assert node.node is not None
    watch = InboxWatch(node.node)
    conn.send(("ready", node.address))
    loop = asyncio.get_running_loop()
    profiler: cProfile.Profile | None = None
    counter: SqlCount | None = None
    while True:
        command, arg = await loop.run_in_executor(None, conn.recv)
        if command == "cpu":
            if profile is not None and profiler is None:
                counter = SqlCount(node.node)
                profiler = cProfile.Profile(time.process_time)
                profiler.enable()
            conn.send(time.process_time())
        elif command == "sql":
            conn.send(None if counter is None else counter.per_mail(arg))
        elif command == "rss":
            conn.send(rss_mib())
        elif command == "arrivals":   # perf_counter is CLOCK_MONOTONIC: one clock for both
            conn.send([watch.arrived.get(uuid) for uuid in arg])
        elif command == "expect":
            ok = await watch.wait_count(arg, WAIT * 3, interval=0.002)
            conn.send((ok, max(watch.arrived.values(), default=0.0), time.process_time()))
        else:
            break
    if profiler is not None and profile is not None:
        profiler.disable()
        profiler.dump_stats(str(profile))
    await node.stop()
    conn.send("stopped")


async def sequential_split(sender: Node, recipient: bytes, receipts: ReceiptWatch,
                           ask: Any, size: int, count: int) -> dict[str, Any]:
    """As `sequential`, the recipient in its own process: `ask(uuids)` are their arrival
    times there (once a mail's receipt is verified, its arrival is recorded)."""
    sent: list[tuple[bytes, float]] = []
    text = body(size)
    for i in range(count):
        start = time.perf_counter()
        mail = await sender.mailer.send(recipient, f"seq {i}", text)
        if await receipts.wait(mail.uuid, WAIT) is not None:   # after the recipient's commit
            sent.append((mail.uuid, start))
    # The arrival times are asked for at the end: a question on the pipe while a mail is on
    # its way would wake the recipient's reader thread (and take the GIL) mid-measurement.
    arrivals = await ask([uuid for uuid, _ in sent])
    to_inbox = [arrived - start for (_, start), arrived in zip(sent, arrivals, strict=True)
                if arrived is not None]
    lost = count - len(to_inbox)
    return {"size": size, "count": count, "lost": lost, "to_inbox_ms": summary_ms(to_inbox)}


async def run_split(label: str, keys: tuple[Path, Path], overrides: dict[str, Any],
                    count: int, profile: Path | None = None,
                    seq_count: int = 0, sizes: dict[str, int] = SIZES) -> dict[str, Any]:
    directory = fresh_dir(f"delivery-split-{label.replace(' ', '-')}")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    child_profile = None if profile is None else profile / "recipient.prof"
    proc = ctx.Process(target=recipient_main,
                       args=(directory, keys[1], overrides, child, child_profile))
    proc.start()
    loop = asyncio.get_running_loop()
    recv = lambda: loop.run_in_executor(None, parent.recv)  # noqa: E731
    try:
        _, address = await asyncio.wait_for(recv(), 60)
        a = BenchNode(directory, keys[0], [address], overrides)
        await a.start()
        assert a.node is not None
        receipts = ReceiptWatch(a.node)
        try:
            recipient = keypool.load(keys[1]).node_id
            await linked(a.node, recipient)
            await submit_all(a.node, recipient, "warm", body(1024), 5)
            parent.send(("expect", 5))
            await recv()
            parent.send(("rss", None))
            child_rss_before = await recv()

            async def arrival(uuids: list[bytes]) -> list[float | None]:
                parent.send(("arrivals", uuids))
                return await recv()

            seq = {name: await sequential_split(a.node, recipient, receipts, arrival, size,
                                                seq_count)
                   for name, size in sizes.items()} if seq_count else {}
            expected = 5 + seq_count * len(sizes) if seq_count else 5
            text = body(1024)
            parent.send(("cpu", None))
            child_cpu0 = await recv()
            profiler = None if profile is None else cProfile.Profile(time.process_time)
            counter = None if profile is None else SqlCount(a.node)
            if profiler is not None:
                profiler.enable()
            cpu0, start = time.process_time(), time.perf_counter()
            uuids = await submit_all(a.node, recipient, "burst", text, count)
            parent.send(("expect", count + expected))
            ok, last, child_cpu1 = await recv()
            cpu1 = time.process_time()
            done_at = await receipts.wait_all(uuids, WAIT * 3)
            cpu2 = time.process_time()
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(str(profile / "sender.prof"))
            parent.send(("sql", count))
            sql = {"sender": None if counter is None else counter.per_mail(count),
                   "recipient": await recv()}
            parent.send(("cpu", None))
            child_cpu2 = await recv()
            parent.send(("rss", None))
            child_rss = await recv()
        finally:
            await a.stop()
        parent.send(("stop", None))
        await asyncio.wait_for(recv(), 20)
    finally:
        proc.join(20)
        if proc.is_alive():
            proc.kill()
    return {"keys": label, "count": count, "all_arrived": ok,
            "mails_per_s_to_inbox": count / (last - start),
            "mails_per_s_to_receipt": count / (done_at - start) if done_at else None,
            "sender_cpu_ms_per_mail_to_inbox": 1000 * (cpu1 - cpu0) / count,
            "recipient_cpu_ms_per_mail_to_inbox": 1000 * (child_cpu1 - child_cpu0) / count,
            "sender_cpu_ms_per_mail_with_receipts": 1000 * (cpu2 - cpu0) / count,
            "recipient_cpu_ms_per_mail_with_receipts": 1000 * (child_cpu2 - child_cpu0) / count,
            "recipient_rss_mib": child_rss, "recipient_rss_mib_before": child_rss_before,
            "sql_per_mail": sql, "sequential": seq}


# ----- report ---------------------------------------------------------------------------------


def report(single: list[dict[str, Any]], split: list[dict[str, Any]]) -> None:
    if not single:
        return report_split(split)
    rows = []
    for run in single:
        for name, seq in run["sequential"].items():
            inbox, receipt = seq["to_inbox_ms"], seq["to_receipt_ms"]
            rows.append([run["keys"], name, seq["count"], seq["lost"], inbox["median"],
                         inbox["p95"], inbox["max"], receipt["median"], receipt["p95"]])
    print_table("Sequential mails, submit -> recipient inbox commit (ms); both nodes in one process",
                ["keys", "body", "n", "lost", "median", "p95", "max", "receipt median",
                 "receipt p95"], rows)
    print_table("Burst of 1 KiB mails, both nodes in one process (CPU = both sides together)",
                ["keys", "n", "all in", "mails/s to inbox", "mails/s to receipt",
                 "CPU ms/mail to inbox", "CPU ms/mail incl. receipts"],
                [[r["keys"], b["count"], b["all_arrived"], b["mails_per_s_to_inbox"],
                  b["mails_per_s_to_receipt"], b["cpu_ms_per_mail_to_inbox_both_sides"],
                  b["cpu_ms_per_mail_with_receipts_both_sides"]]
                 for r in single for b in [r["burst"]] if b is not None])
    report_split(split)


def report_split(split: list[dict[str, Any]]) -> None:
    print_table("Sequential mails, submit -> recipient inbox commit (ms); recipient in its own "
                "process", ["keys", "body", "n", "lost", "median", "p95", "max"],
                [[r["keys"], name, seq["count"], seq["lost"], seq["to_inbox_ms"]["median"],
                  seq["to_inbox_ms"]["p95"], seq["to_inbox_ms"]["max"]]
                 for r in split for name, seq in r.get("sequential", {}).items()])
    print_table("Burst of 1 KiB mails, recipient in its own process (CPU per side)",
                ["keys", "n", "all in", "mails/s to inbox", "mails/s to receipt",
                 "sender ms/mail", "recipient ms/mail", "sender incl. rcpt",
                 "recipient incl. rcpt", "child RSS MiB before / after"],
                [[r["keys"], r["count"], r["all_arrived"], r["mails_per_s_to_inbox"],
                  r["mails_per_s_to_receipt"], r["sender_cpu_ms_per_mail_to_inbox"],
                  r["recipient_cpu_ms_per_mail_to_inbox"],
                  r["sender_cpu_ms_per_mail_with_receipts"],
                  r["recipient_cpu_ms_per_mail_with_receipts"],
                  f"{r['recipient_rss_mib_before']:.2f} / {r['recipient_rss_mib']:.2f}"]
                 for r in split])


async def profile_split(directory: Path, burst: int) -> dict[str, Any]:
    """The split RSA-4096 v2 burst under cProfile on both sides, SQL statements counted."""
    directory.mkdir(parents=True, exist_ok=True)
    keys, overrides = RUNS["RSA-4096 v2"]
    result = await run_split("RSA-4096 v2", keys, overrides, burst, directory.resolve())
    print(f"profiles in {directory}/sender.prof and recipient.prof (rates under cProfile)")
    for key, value in result.items():
        print(f"  {key}: {value}")
    return result


async def latency_only(count: int) -> dict[str, Any]:
    """Only the sequential 1 KiB latency (RSA-4096, v2), one process and two: for comparing
    two versions of the code back to back in the same minutes."""
    keys, overrides = RUNS["RSA-4096 v2"]
    keypool.ensure_4096()
    single = await run_in_process("RSA-4096 v2", keys, overrides, {"1 KiB": 1024}, count, 0)
    split = await run_split("RSA-4096 v2", keys, overrides, 200, seq_count=count,
                            sizes={"1 KiB": 1024})
    rows = [[label, seq["count"], seq["to_inbox_ms"]["median"], seq["to_inbox_ms"]["p95"]]
            for label, seq in (("one process", single["sequential"]["1 KiB"]),
                               ("two processes", split["sequential"]["1 KiB"]))]
    print_table(f"1 KiB, submit -> recipient inbox commit (ms), load {os.getloadavg()[0]:.2f}",
                ["run", "n", "median", "p95"], rows)
    return {"single_process": [single], "split_process": [split]}


async def main_async(quick: bool, split_only: bool = False) -> dict[str, Any]:
    seq_count, burst = (20, 200) if quick else (100, 1000)
    sustained = 600 if quick else 3000   # the two-process run: long enough to be sustained
    keypool.ensure_4096()
    single = [] if split_only else [
        await run_in_process(label, keys, overrides, SIZES, seq_count, burst)
        for label, (keys, overrides) in RUNS.items()]
    split = [await run_split(label, keys, overrides, sustained, seq_count=seq_count)
             for label, (keys, overrides) in RUNS.items() if label in BURST_RUNS]
    return {"single_process": single, "split_process": split}


def targets(results: dict[str, Any], load: tuple[float, ...]) -> None:
    """The figures issue 13 asks for, beside its targets."""
    split = next(r for r in results["split_process"] if r["keys"] == "RSA-4096 v2")
    sender = split["sender_cpu_ms_per_mail_with_receipts"]
    recipient = split["recipient_cpu_ms_per_mail_with_receipts"]
    rows = [["sustained mails/s to inbox (2 processes, RSA-4096, v2)",
             split["mails_per_s_to_inbox"], ">= 1,500"],
            ["sustained mails/s with receipts verified", split["mails_per_s_to_receipt"], ""],
            ["CPU ms per mail, sender (incl. receipts)", sender, ""],
            ["CPU ms per mail, recipient (incl. receipts)", recipient, ""],
            ["mails/s one core per side allows (1000 / busier side)",
             1000 / max(sender, recipient), ">= 1,500"],
            ["recipient's bench process RSS MiB before / after the burst (not a node's: "
             "bench/rss.py --only burst)",
             f"{split['recipient_rss_mib_before']:.2f} / {split['recipient_rss_mib']:.2f}", ""]]
    single = next((r for r in results["single_process"] if r["keys"] == "RSA-4096 v2"), None)
    if single is not None:
        for name, seq in single["sequential"].items():
            inbox = seq["to_inbox_ms"]
            rows.append([f"direct delivery {name} median / p95 ms, both nodes in one process",
                         f"{inbox['median']:.2f} / {inbox['p95']:.2f}", ""])
    # The target is a user's: two nodes are two processes, each on its own loop. In one
    # process a mail's sealing, opening and both commits take turns on one loop.
    for name, seq in split.get("sequential", {}).items():
        inbox = seq["to_inbox_ms"]
        rows.append([f"direct delivery {name} median / p95 ms (RSA-4096, v2), 2 processes",
                     f"{inbox['median']:.2f} / {inbox['p95']:.2f}",
                     "median <= 1" if name == "1 KiB" else ""])
    rows.append(["load average before / after", " / ".join(f"{x:.2f}" for x in load), ""])
    print_table("Issue 13 targets", ["figure", "measured", "target"], rows)


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--profile", type=Path, metavar="DIR",
                            help="only profile the split RSA-4096 v2 burst (cProfile, both sides)")
        parser.add_argument("--latency", type=int, metavar="N",
                            help="only N sequential 1 KiB mails, one process and two")
        parser.add_argument("--split-only", action="store_true",
                            help="only the bursts with the recipient in its own process")

    args = parse_args(__doc__.splitlines()[0], extra)
    quiet_logs()
    if args.profile is not None:
        asyncio.run(profile_split(args.profile, 1000))
        return
    if args.latency:
        asyncio.run(latency_only(args.latency))
        return
    load_before = os.getloadavg()
    results = asyncio.run(main_async(args.quick, args.split_only))
    report(results["single_process"], results["split_process"])
    targets(results, (load_before[0], os.getloadavg()[0]))
    write_results("delivery", {**results, "loadavg_before": load_before,
                               "loadavg_after": os.getloadavg(),
                               "note": "single_process CPU is both nodes together"})


if __name__ == "__main__":
    main()
