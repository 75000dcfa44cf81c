#!/usr/bin/env python3
"""Memory per peer link end: one node in a child process holds N real TLS links.

`--side accept`: N new peers (this process, pool identities) dial the child's PeerNet, each with
one FindNode; `--side dial`: the child dials N PeerNets of this process, one FindNode each;
`--at-once` links are dialed at a time (default 25, about what a join opened).
The child's anonymous memory (RssAnon) and malloc blocks in use (mallinfo2) are read after 8
warm-up links, with all N links open (after a garbage collection), and after they all closed
and the heap was trimmed. Row: KiB per link end, N links held.

Usage: python3 bench/linkmem.py [--side accept|dial] [--links 50] [--at-once 25] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench import keypool  # noqa: E402
from fluxchat import messages as m  # noqa: E402
from fluxchat.identity import Identity  # noqa: E402
from fluxchat.link import Link  # noqa: E402
from fluxchat.peer_net import NetLimits, PeerNet  # noqa: E402
from fluxchat.session import SessionConfig  # noqa: E402
from tests.keys import identity  # noqa: E402

LIMITS = NetLimits(auth_timeout=20, request_timeout=20, max_links=400, max_handshakes=400,
                   connections_per_second=10_000, handshakes_per_prefix=400,
                   links_per_prefix=400)
WARM_UP = 8


class Node:
    def __init__(self, ident: Identity) -> None:
        self.links: list[Link] = []
        config = SessionConfig(ident, "public:1", difficulty=4, max_difficulty=10,
                               handshake_timeout=20, idle_timeout=600, ping_interval=300)
        self.net = PeerNet(config, LIMITS, self.handle, self.links.append, self.links.remove)

    async def handle(self, link: Link, message: m.Message) -> m.Message | None:
        if isinstance(message, m.FindNode):
            return m.Nodes(message.rid, ())
        return None


async def ask(node: Node, port: int, peer: bytes) -> None:
    await node.net.request("127.0.0.1", port, peer, lambda rid: m.FindNode(rid, bytes(32)))


def memory() -> dict[str, float]:
    gc.collect()
    status = Path("/proc/self/status").read_text()
    anon = next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("RssAnon:"))

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {"anon": anon, "malloc": (info.uordblks + info.hblkhd) / 1024}


def trim() -> None:
    ctypes.CDLL("libc.so.6").malloc_trim(0)


async def child(side: str, count: int, at_once: int) -> None:
    """The measured node: commands on stdin, one JSON line per answer on stdout."""
    node = Node(identity(0))
    port = await node.net.listen("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    print(json.dumps({"port": port}), flush=True)
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = json.loads(line)
        if command["do"] == "dial":   # [port, node id hex] pairs
            pairs = command["peers"]
            for start in range(0, len(pairs), at_once):
                await asyncio.gather(*(ask(node, port, bytes.fromhex(peer))
                                       for port, peer in pairs[start:start + at_once]))
        elif command["do"] == "close":
            for link in list(node.links):
                link.close(0, "bench over")
            while node.links:
                await asyncio.sleep(0.05)
            await asyncio.sleep(LIMITS.output.close_grace + 1)   # the last aborts
            trim()
        print(json.dumps({**memory(), "links": len(node.links)}), flush=True)
    await node.net.close()


class Child:
    def __init__(self, side: str, count: int, at_once: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--child", side, "--links", str(count),
             "--at-once", str(at_once)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.read()["port"])

    def read(self) -> dict[str, float]:
        assert self.proc.stdout is not None
        answer: dict[str, float] = json.loads(self.proc.stdout.readline())
        return answer

    async def command(self, **command: object) -> dict[str, float]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return await asyncio.to_thread(self.read)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def run(side: str, count: int, at_once: int) -> dict[str, float]:
    peers = [Node(keypool.pool_identity(i)) for i in range(WARM_UP + count)]
    own = identity(0).node_id
    measured = Child(side, count, at_once)
    try:
        if side == "accept":
            async def dial(group: list[Node]) -> dict[str, float]:
                for start in range(0, len(group), at_once):
                    await asyncio.gather(*(ask(peer, measured.port, own)
                                           for peer in group[start:start + at_once]))
                return await measured.command(do="measure")
        else:
            ports = [await peer.net.listen("127.0.0.1", 0) for peer in peers]
            pairs = [(port, peer.net.own_id.hex()) for port, peer in zip(ports, peers, strict=True)]

            async def dial(group: list[Node]) -> dict[str, float]:
                chosen = [pairs[peers.index(peer)] for peer in group]
                return await measured.command(do="dial", peers=chosen)

        before = await dial(peers[:WARM_UP])
        held = await dial(peers[WARM_UP:])
        after = await measured.command(do="close")
        links = held["links"] - before["links"]
        return {"links": links,
                "anon": (held["anon"] - before["anon"]) / links,
                "malloc": (held["malloc"] - before["malloc"]) / links,
                "kept": (after["anon"] - before["anon"]) / links}
    finally:
        measured.stop()
        for peer in peers:
            await peer.net.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=("accept", "dial"), default="accept")
    parser.add_argument("--links", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--at-once", type=int, default=25,
                        help="links dialed at once (a joining node opened ~20-25)")
    parser.add_argument("--child", choices=("accept", "dial"))
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.child, args.links, args.at_once))
        return
    keypool.ensure_pool(WARM_UP + args.links)
    import logging
    logging.basicConfig(level=logging.ERROR)
    rows = []
    for _ in range(args.runs):
        start = time.monotonic()
        rows.append(asyncio.run(run(args.side, args.links, args.at_once)))
        print(f"{args.side}: {rows[-1]['links']:.0f} links, {args.at_once} at once, per link end "
              f"{rows[-1]['anon']:.1f} KiB anonymous, {rows[-1]['malloc']:.1f} KiB malloc, "
              f"{rows[-1]['kept']:.1f} KiB kept after close and trim "
              f"({time.monotonic() - start:.0f} s; load {os.getloadavg()[0]:.1f})", flush=True)
    if args.runs > 1:
        print(f"median per link end: {statistics.median(r['anon'] for r in rows):.1f} KiB "
              f"anonymous, {statistics.median(r['malloc'] for r in rows):.1f} KiB malloc")


if __name__ == "__main__":
    main()
