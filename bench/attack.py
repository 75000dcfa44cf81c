#!/usr/bin/env python3
"""What hostile peers cost a real node: each attack for a fixed period, with honest traffic.

The victim is a `server_app.py` process with the default limits. An honest node in this
process keeps sending it mail (each mail waits for its receipt: submit → receipt verified)
and fresh honest peers keep dialing it. The attacker runs in a child process with the
adversary kit (`tests/adversary.py`) from four loopback addresses in four /24 prefixes
(127.0.{2,3,4,5}.1); honest peers come from 127.0.0.1. For each attack the table shows the
victim's CPU (share of one core), its RSS growth, the share of honest link attempts that
succeeded and the honest mail latency (median, against the quiet figure measured first),
checked against the targets of issue 10: links ≥ 95%, mail median ≤ 2× quiet, RSS growth ≤
20 MiB, attacker's cost ≤ 25% of a core (victim CPU under attack minus quiet CPU).

Adding an attack: write `async def name(target: Target) -> None` that misbehaves until
`target.running()` is false (use `target.sources`, the kit's `Attacker`, `tcp`, ...), counts
what it did with `target.count("what")`, and decorate it with `@scenario("name", "...")`
(bench/attack_kit.py; a `summary=` function prints lines of its own under the table, as
`junk_crowd` in bench/attack_crowd.py does: many identities, junk mail, the node's budget).
A scenario still busy (say, blocked writing to a victim that does not read) when its period
ends is cancelled.

Usage: python3 bench/attack.py [--quick] [--seconds 20] [--only silent,notify_flood]
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import attack_crowd  # noqa: E402, F401  (registers its scenario)
from bench.attack_kit import (  # noqa: E402
    ATTACK_SOURCES,
    SCENARIOS,
    SUMMARIES,
    VICTIM_KEY,
    Target,
    junk_envelopes,
    linked,
    scenario,
)
from bench.lablib import BenchNode, ReceiptWatch, fresh_dir, print_table, quiet_logs, rss_kib, write_results  # noqa: E402
from fluxchat import messages as m  # noqa: E402
from fluxchat.errors import FluxError  # noqa: E402
from fluxchat.link import Link  # noqa: E402
from fluxchat.session_events import RequestReceived  # noqa: E402
from tests.adversary import Attacker, hostile_net, tcp  # noqa: E402
from tests.keys import identity, key_dir  # noqa: E402
from tests.lab import ProcessNode  # noqa: E402

HONEST_KEYS = range(2, 12)              # fresh honest dialers, in turn
SENDER_KEY = 1
# The victim keeps the code's limits; only what a loopback lab needs is set.
VICTIM = {"challenge": {"min": 16, "max": 24},
          "client": {"auth_timeout": 10, "request_timeout": 10, "connections_per_second": 5,
                     "max_handshakes": 32},
          "log": {"level": "warning"}}
SENDER = {"challenge": {"min": 16, "max": 24}, "log": {"level": "error"}}
TARGETS = {"links_ok": 0.95, "mail_ratio": 2.0, "rss_mib": 20.0, "attack_cpu": 0.25}


# ----- attack scenarios (run in the attacker's process) -----------------------------------


@scenario("silent", "silent TCP connections, 4/s per address, held open (10.2)")
async def silent(target: Target) -> None:
    held: list[asyncio.StreamWriter] = []

    async def work(source: str, key: int) -> None:
        while target.running():
            try:
                _, writer = await tcp(target.host, target.port, source)
                held.append(writer)
                target.count("opened")
            except OSError:
                target.count("failed")
            await asyncio.sleep(0.25)

    await target.each_source(work)
    for writer in held:
        writer.transport.abort()


@scenario("stall_hello", "TLS and Hello, then silence until the deadline, 2/s per address (10.2)")
async def stall_hello(target: Target) -> None:
    held: list[Attacker] = []

    async def one(source: str, key: int) -> None:
        attacker = await linked(target, source, key, stage="hello")
        if attacker is None:
            target.count("refused")
            return
        target.count("stalled")
        held.append(attacker)

    async def work(source: str, key: int) -> None:
        tasks = []
        while target.running():
            tasks.append(asyncio.ensure_future(one(source, key)))
            await asyncio.sleep(0.5)
        await asyncio.gather(*tasks)

    await target.each_source(work)
    for attacker in held:
        attacker.close()


@scenario("notify_flood", "authenticated links flooding Notify frames, reconnecting (10.5)")
async def notify_flood(target: Target) -> None:
    async def work(source: str, key: int) -> None:
        while target.running():
            attacker = await linked(target, source, key)
            if attacker is None:
                await asyncio.sleep(0.2)
                continue
            target.count("links")
            try:
                while target.running() and not attacker.writer.is_closing():
                    attacker.flood(m.Notify(), 1000)
                    target.count("frames", 1000)
                    await attacker.drain()
                    await asyncio.sleep(0.01)
            except (OSError, ConnectionError):
                pass
            attacker.close()

    await target.each_source(work)


@scenario("no_read", "authenticated links pipelining requests and never reading (10.4)")
async def no_read(target: Target) -> None:
    async def work(source: str, key: int) -> None:
        while target.running():
            attacker = await linked(target, source, key, withhold_reads=True)
            if attacker is None:
                await asyncio.sleep(0.2)
                continue
            target.count("links")
            try:
                while target.running() and not attacker.writer.is_closing():
                    for _ in range(20):
                        attacker.request(lambda rid: m.FindNode(rid, os.urandom(32)))
                        attacker.request(lambda rid: m.FindKey(rid, os.urandom(32)))
                    target.count("requests", 40)
                    await asyncio.sleep(0.2)
            except (OSError, ConnectionError):
                pass
            attacker.close()

    await target.each_source(work)


@scenario("request_flood", "authenticated links sending lookups as fast as answered (10.5)")
async def request_flood(target: Target) -> None:
    async def work(source: str, key: int) -> None:
        while target.running():
            attacker = await linked(target, source, key)
            if attacker is None:
                await asyncio.sleep(0.2)
                continue
            target.count("links")
            try:
                while target.running():
                    rids = [attacker.request(lambda rid: m.FindNode(rid, os.urandom(32)))
                            for _ in range(32)]
                    for rid in rids:
                        await asyncio.wait_for(attacker.response(rid), 10)
                        target.count("answers")
            except (OSError, ConnectionError, TimeoutError):
                pass
            attacker.close()

    await target.each_source(work)


@scenario("junk_deliver", "Deliver of envelopes that do not open, 32 in flight per link (10.5)")
async def junk_deliver(target: Target) -> None:
    async def work(source: str, key: int) -> None:
        junk = junk_envelopes(key, 32)
        while target.running():
            attacker = await linked(target, source, key)
            if attacker is None:
                await asyncio.sleep(0.2)
                continue
            target.count("links")
            try:
                while target.running():
                    rids = [attacker.request(lambda rid, e=e: m.Deliver(rid, e)) for e in junk]
                    for rid in rids:
                        reply = await asyncio.wait_for(attacker.response(rid), 10)
                        limited = isinstance(reply, m.Fail) and reply.code == m.ErrorCode.RATE_LIMITED
                        target.count("refused (budget)" if limited else "opened")
            except (OSError, ConnectionError, TimeoutError):
                pass
            attacker.close()

    await target.each_source(work)


@scenario("fetch_loop", "Notify, then 256 envelopes that do not open, marked more, per Fetch (10.3)")
async def fetch_loop(target: Target) -> None:
    async def work(source: str, key: int) -> None:
        batch = tuple(junk_envelopes(key, 64) * 4)
        while target.running():
            attacker = await linked(target, source, key)
            if attacker is None:
                await asyncio.sleep(0.2)
                continue
            target.count("links")
            try:
                while target.running():
                    attacker.flood(m.Notify(), 100)
                    target.count("notices", 100)
                    await _serve_fetches(attacker, batch, target, time.monotonic() + 0.5)
            except (OSError, ConnectionError):
                pass
            attacker.close()

    await target.each_source(work)


async def _serve_fetches(attacker: Attacker, batch: tuple[bytes, ...], target: Target,
                         until: float) -> None:
    """Answer the victim's Fetch with `batch` (more=True) and its Delete with Ok, until `until`."""
    assert attacker.session is not None
    try:
        async with asyncio.timeout_at(until):
            while True:
                for event in await attacker._read_events():
                    if isinstance(event, RequestReceived) and isinstance(event.message, m.Fetch):
                        attacker.session.respond(m.MailBatch(event.message.rid, batch, True))
                        target.count("batches served")
                    elif isinstance(event, RequestReceived) and hasattr(event.message, "rid"):
                        attacker.session.respond(m.Ok(event.message.rid))
                attacker.events.clear()
                attacker.flush()
    except TimeoutError:
        pass


@scenario("reconnect", "full handshakes as fast as admitted, each link dropped at once (10.7)")
async def reconnect(target: Target) -> None:
    async def work(source: str, key: int) -> None:
        while target.running():
            attacker = await linked(target, source, key)
            if attacker is None:
                target.count("refused")
                await asyncio.sleep(0.05)
                continue
            target.count("links")
            attacker.close()

    await target.each_source(work)


def attacker_main(name: str, host: str, port: int, seconds: float, conn: Connection) -> None:
    """Child process: run one scenario for `seconds`, report its counts.

    It runs at the lowest CPU priority: on this shared machine the attacker would otherwise
    slow the honest processes by competing for the cores, which a remote attacker cannot."""
    os.nice(19)
    quiet_logs()
    target = Target(host, port, ATTACK_SOURCES, time.monotonic() + seconds)

    async def attack() -> None:
        try:
            async with asyncio.timeout(seconds + 1):
                await SCENARIOS[name][0](target)
        except TimeoutError:
            pass

    asyncio.run(attack())
    conn.send(target.counts)


# ----- the victim and honest traffic (this process) ---------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Honest:
    """The honest side: a linked sender node and fresh dialers, with their figures."""

    def __init__(self, sender: BenchNode, victim_id: bytes, host: str, port: int) -> None:
        assert sender.node is not None
        self.node, self.victim_id, self.host, self.port = sender.node, victim_id, host, port
        self.receipts = ReceiptWatch(sender.node)
        self._next_key = 0
        self.failures: list[str] = []

    async def mail_latencies(self, until: float) -> list[float]:
        latencies: list[float] = []
        while time.monotonic() < until:
            start = time.perf_counter()
            mail = self.node.mailer.submit(self.victim_id, "probe", "honest mail " * 20)
            done = await self.receipts.wait(mail.uuid, 30)
            latencies.append(float("inf") if done is None else done - start)
            await asyncio.sleep(0.2)
        return latencies

    async def link_attempts(self, until: float) -> tuple[int, int]:
        ok = tried = 0
        while time.monotonic() < until:
            tried += 1
            ok += await self._dial_once()
            await asyncio.sleep(0.5)
        return ok, tried

    async def _dial_once(self) -> int:
        key = HONEST_KEYS[self._next_key % len(HONEST_KEYS)]
        self._next_key += 1
        net = hostile_net(key, _serve_nothing)   # a plain peer: answers nothing
        try:
            link = await net.dial(self.host, self.port, self.victim_id)
            reply = await link.request(lambda rid: m.FindNode(rid, bytes(32)))
            return int(isinstance(reply, m.Nodes))
        except FluxError as exc:
            self.failures.append(str(exc))
            return 0
        finally:
            await net.close()


async def _serve_nothing(link: Link, message: m.Message) -> m.Message | None:
    return None


async def measure(victim: ProcessNode, honest: Honest, seconds: float,
                  attack: str | None) -> dict[str, Any]:
    pid = victim.proc.pid if victim.proc else 0
    child = None
    if attack is not None:
        ctx = multiprocessing.get_context("spawn")
        parent_end, child_end = ctx.Pipe()
        child = ctx.Process(target=attacker_main, args=(attack, honest.host, honest.port,
                                                        seconds, child_end))
        child.start()
    rss0, cpu0, start = rss_kib(pid), cpu_seconds(pid), time.monotonic()
    until = start + seconds
    peak = rss0

    async def sample() -> None:
        nonlocal peak
        while time.monotonic() < until:
            peak = max(peak, rss_kib(pid))
            await asyncio.sleep(0.25)

    honest.failures.clear()
    latencies, (ok, tried), _ = await asyncio.gather(
        honest.mail_latencies(until), honest.link_attempts(until), sample())
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - start)
    counts: dict[str, int] = {}
    if child is not None:
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, parent_end.poll, 60):
            counts = parent_end.recv()
        child.join(10)
        if child.is_alive():
            child.kill()
    finite = [x for x in latencies if x != float("inf")]
    return {"attack": attack or "quiet", "cpu": cpu, "rss_growth_mib": (peak - rss0) / 1024,
            "links_ok": ok / tried if tried else 0.0, "links_tried": tried,
            "mail_median_ms": 1000 * statistics.median(finite) if finite else None,
            "mails": len(latencies), "mails_lost": len(latencies) - len(finite),
            "attacker": counts, "link_failures": list(honest.failures)}


def verdict(row: dict[str, Any], quiet: dict[str, Any]) -> str:
    misses = []
    if row["links_ok"] < TARGETS["links_ok"]:
        misses.append("links")
    if row["mail_median_ms"] is None or quiet["mail_median_ms"] is None or \
            row["mail_median_ms"] > TARGETS["mail_ratio"] * quiet["mail_median_ms"]:
        misses.append("mail")
    if row["rss_growth_mib"] > TARGETS["rss_mib"]:
        misses.append("rss")
    if row["cpu"] - quiet["cpu"] > TARGETS["attack_cpu"]:
        misses.append("cpu")
    return "ok" if not misses else "MISSED " + ",".join(misses)


async def run(seconds: float, only: list[str]) -> dict[str, Any]:
    directory = fresh_dir("attack")
    victim = ProcessNode(directory, VICTIM_KEY, [], VICTIM)
    victim.start()
    sender = BenchNode(directory, key_dir(SENDER_KEY), [victim.address], SENDER)
    try:
        await sender.start()
        assert sender.node is not None
        await sender.node.joined.wait()
        honest = Honest(sender, identity(VICTIM_KEY).node_id, "127.0.0.1", victim.runtime["port"])
        await honest.mail_latencies(time.monotonic() + 2)    # warm-up
        quiet = await measure(victim, honest, seconds, None)
        rows = [quiet]
        for name in only:
            rows.append(await measure(victim, honest, seconds, name))
    finally:
        await sender.stop()
        victim.stop()
    for row in rows:
        row["verdict"] = "baseline" if row is quiet else verdict(row, quiet)
    return {"seconds": seconds, "load": os.getloadavg(), "rows": rows}


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6 s per attack")
    parser.add_argument("--seconds", type=float, default=20.0, help="period of each attack")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated attacks, of: {', '.join(SCENARIOS)}")
    args = parser.parse_args()
    only = [name for name in args.only.split(",") if name]
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown attacks: {', '.join(unknown)}")
    quiet_logs()
    result = asyncio.run(run(6.0 if args.quick else args.seconds, only))
    rows = result["rows"]
    print_table(f"attacks, {result['seconds']:g} s each (load {result['load'][0]:.1f})",
                ["attack", "victim CPU %", "RSS +MiB", "honest links ok", "mail median ms",
                 "mails (lost)", "verdict"],
                [[r["attack"], 100 * r["cpu"], r["rss_growth_mib"],
                  f"{100 * r['links_ok']:.0f}% of {r['links_tried']}", r["mail_median_ms"],
                  f"{r['mails']} ({r['mails_lost']})", r["verdict"]] for r in rows])
    for row in rows[1:]:
        print(f"  {row['attack']}: {SCENARIOS[row['attack']][1]}; attacker did {row['attacker']}")
        for failure in row["link_failures"]:
            print(f"    honest link failed: {failure}")
        if row["attack"] in SUMMARIES:
            row["summary"] = SUMMARIES[row["attack"]](row, rows[0], result["seconds"])
            for line in row["summary"]:
                print(f"    {line}")
    write_results("attack", result)


if __name__ == "__main__":
    main()
