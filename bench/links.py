#!/usr/bin/env python3
"""Round trips from connect to the first answer on a new peer link (PROTOCOL.md §5.3).

Two real PeerNets on loopback talk through a relay in this process that delays every chunk
by half the round trip in each direction, and holds the dialer's first bytes one round trip
more (the TCP handshake, which loopback does in no time). Each row: the dialer's
`PeerNet.request` (a FindNode) to the acceptor, timed from the call to the answer, divided by
the round trip:
- known dialer: a new link to a peer we linked with before (its request rides the Hello),
- work demanded: a new link to a peer that does not know us (the request rides the Work),
- open link: a request over the link already open,
- datagram: the same FindNode as a lookup datagram (PROTOCOL.md §16) through a UDP relay with
  the same delays: no link at all.

Usage: python3 bench/links.py [--rtt 0.1] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from fluxchat import messages as m  # noqa: E402
from fluxchat.config import DatagramConfig  # noqa: E402
from fluxchat.datagram_net import Datagrams  # noqa: E402
from fluxchat.link import Link  # noqa: E402
from fluxchat.peer_net import NetLimits, PeerNet  # noqa: E402
from fluxchat.session import SessionConfig  # noqa: E402
from tests.keys import identity  # noqa: E402

LIMITS = NetLimits(auth_timeout=10, request_timeout=10, max_links=64, max_handshakes=32,
                   connections_per_second=1000)


async def relay(target_port: int, rtt: float) -> tuple[asyncio.Server, int]:
    """A TCP relay to 127.0.0.1:target_port that delays each direction by rtt/2."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   extra: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(65536):
                due = loop.time() + rtt / 2 + extra
                extra = 0.0
                loop.call_at(due, writer.write, data)
        finally:
            loop.call_at(loop.time() + rtt / 2, writer.close)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        try:
            await asyncio.gather(pipe(reader, up_writer, rtt), pipe(up_reader, writer, 0.0),
                                 return_exceptions=True)
        except asyncio.CancelledError:
            pass   # the benchmark is over

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


class UdpRelay(asyncio.DatagramProtocol):
    """Datagrams from the asker go on to `target` after rtt/2, answers come back after rtt/2
    from the address the asker used (as a network path would carry them)."""

    def __init__(self, target: tuple[str, int], rtt: float) -> None:
        self.target, self.rtt = target, rtt
        self.asker: tuple[str, int] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.front, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if relay.front is not None and relay.asker is not None:
                    loop.call_later(relay.rtt / 2, relay.front.sendto, data, relay.asker)

        self.back, _ = await loop.create_datagram_endpoint(Back, local_addr=("127.0.0.1", 0))
        return int(self.front.get_extra_info("sockname")[1])

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.asker = addr
        if self.back is not None:
            asyncio.get_running_loop().call_later(self.rtt / 2, self.back.sendto, data, self.target)

    def close(self) -> None:
        for transport in (self.front, self.back):
            if transport is not None:
                transport.close()


async def datagram_queries(rtt: float, runs: int, times: list[float]) -> None:
    """FindNode as a lookup datagram through the relay, answered by a real `Datagrams`."""
    responder = Datagrams(DatagramConfig(), lambda target: [])
    await responder.start("127.0.0.1", 0)
    assert responder.transport is not None
    asker = Datagrams(DatagramConfig(), lambda target: [])
    await asker.start("127.0.0.1", 0)
    relay = UdpRelay(responder.transport.get_extra_info("sockname")[:2], rtt)
    port = await relay.start()
    try:
        for _ in range(runs):
            started = time.perf_counter()
            contacts = await asker.find_node("127.0.0.1", port, os.urandom(32))
            assert contacts is not None, "no answer through the relay"
            times.append(time.perf_counter() - started)
    finally:
        relay.close()
        asker.close()
        responder.close()


def node(index: int, difficulty: int) -> PeerNet:
    config = SessionConfig(identity(index), "private", difficulty=difficulty, max_difficulty=20,
                           handshake_timeout=10, idle_timeout=300, ping_interval=60)

    async def handle(link: Link, message: m.Message) -> m.Message | None:
        return m.Nodes(message.rid, ()) if isinstance(message, m.FindNode) else None
    return PeerNet(config, LIMITS, handle, lambda link: None, lambda link: None)


async def ask(dialer: PeerNet, port: int, target: bytes, times: list[float]) -> None:
    """One FindNode through `dialer.request`, timed from the call to the answer."""
    started = time.perf_counter()
    reply = await dialer.request("127.0.0.1", port, target,
                                 lambda rid: m.FindNode(rid, os.urandom(32)))
    assert isinstance(reply, m.Nodes), reply
    times.append(time.perf_counter() - started)


async def measure(rtt: float, runs: int, difficulty: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"known dialer": [], "work demanded": [], "open link": [],
                                     "datagram": []}
    for run in range(runs):
        dialer, acceptor = node(0, difficulty), node(1 + run, difficulty)
        port = await acceptor.listen("127.0.0.1", 0)
        server, relay_port = await relay(port, rtt)
        target = identity(1 + run).node_id
        await ask(dialer, relay_port, target, times["work demanded"])
        await ask(dialer, relay_port, target, times["open link"])
        dialer.links[target].close(m.ErrorCode.SHUTDOWN, "again")
        while target in acceptor.links or target in dialer.links:
            await asyncio.sleep(0.01)
        await ask(dialer, relay_port, target, times["known dialer"])
        for net in (dialer, acceptor):
            await net.close()
        server.close()
    await datagram_queries(rtt, runs, times["datagram"])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", type=float, default=0.1, help="round trip, seconds")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--difficulty", type=int, default=16, help="bits demanded of newcomers")
    args = parser.parse_args()
    times = asyncio.run(measure(args.rtt, args.runs, args.difficulty))
    print(f"first answer on a new link, RTT {args.rtt * 1000:.0f} ms, {args.runs} runs, "
          f"{args.difficulty}-bit work; load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':<16}{'median s':>10}{'median RTT':>12}{'max s':>8}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"{label:<16}{median:>10.3f}{median / args.rtt:>12.2f}{max(values):>8.3f}")


if __name__ == "__main__":
    main()
