"""The UDP adapter for lookup datagrams (docs/PROTOCOL.md §16): one socket on the peer port
that answers other nodes' FindNode requests and carries our own.

Decisions live in datagram.py (bytes) and datagram_guard.py (budgets, transactions); this
module only moves datagrams and wakes the waiting query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable

from . import datagram as d
from .config import DatagramConfig
from .datagram_guard import Address, AnswerBudget, Pending, Silent
from .lookup import QueryTimes

log = logging.getLogger("fluxchat.datagrams")
# How long to wait for an answer before the query goes over a link: WAIT_FACTOR times the
# median of our recent datagram round trips, within WAIT_FLOOR..DATAGRAM_WAIT (at first the
# cap). At an 80 ms median that is 0.64 s (beyond the 99th percentile of round trips); on a
# LAN 0.25 s, so a contact that does not take datagrams costs little before its link.
DATAGRAM_WAIT = 1.0
WAIT_FLOOR = 0.25
WAIT_FACTOR = 8.0
MAX_PENDING = 256        # our transactions in flight


def datagram_times() -> QueryTimes:
    return QueryTimes(DATAGRAM_WAIT, WAIT_FLOOR, WAIT_FACTOR)

Closest = Callable[[bytes], list[d.Contact]]   # target -> our closest contacts


def _address(host: str, port: int) -> Address:
    """host:port as the socket reports a source (compressed literal, IPv4 for mapped)."""
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.compressed, port


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self, config: DatagramConfig, closest: Closest,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.closest, self.clock = closest, clock
        self.budget = AnswerBudget(config.per_source, config.total, clock())
        self.pending = Pending(MAX_PENDING)
        self.silent = Silent()
        self.times = datagram_times()
        self._waiters: dict[bytes, asyncio.Future[d.NodesAnswer]] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.family = socket.AF_INET
        self.stats = {"answered": 0, "refused": 0, "dropped": 0, "asked": 0, "answers": 0,
                      "fell_back": 0}

    async def start(self, host: str, port: int) -> None:
        """Bind host:port (the peer listener's address and port number)."""
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(host, port), family=self.family)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        for future in self._waiters.values():
            future.cancel()

    # ----- answering ------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        kind = d.kind_of(data)
        try:
            source = _address(str(addr[0]), int(addr[1]))
        except ValueError:   # e.g. a scoped link-local address: not one we ask or answer
            self.stats["dropped"] += 1
            return
        if kind == d.FIND_NODE:
            self._answer(data, source)
        elif kind == d.NODES:
            self._take(data, source)
        else:
            self.stats["dropped"] += 1

    def _answer(self, data: bytes, source: Address) -> None:
        request = d.decode_request(data)
        if request is None or self.transport is None:
            self.stats["dropped"] += 1
            return
        if not self.budget.allow(source[0], self.clock()):
            self.stats["refused"] += 1
            return
        answer = d.encode_answer(request.txid, self.closest(request.target), len(data))
        self.transport.sendto(answer, source)
        self.stats["answered"] += 1

    def _take(self, data: bytes, source: Address) -> None:
        answer = d.decode_answer(data)
        if answer is None or not self.pending.claim(answer.txid, source, self.clock()):
            self.stats["dropped"] += 1
            return
        future = self._waiters.pop(answer.txid, None)
        if future is not None and not future.done():
            self.stats["answers"] += 1
            future.set_result(answer)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and the like: the waiting query falls back after its wait.
        log.debug("datagram socket: %s", exc)

    # ----- asking ---------------------------------------------------------------------

    def usable(self, host: str, port: int) -> bool:
        """Whether to try a datagram to host:port (not remembered as silent, same family)."""
        if self.transport is None:
            return False
        try:
            address = _address(host, port)
        except ValueError:
            return False
        v6 = ":" in address[0]
        return v6 == (self.family == socket.AF_INET6) and \
            not self.silent.skip(address, self.clock())

    async def find_node(self, host: str, port: int, target: bytes) -> list[d.Contact] | None:
        """The contacts host:port answers for target, or None: no answer in time (see
        DATAGRAM_WAIT) or no room for the transaction, so the caller asks over a link."""
        if self.transport is None:
            return None
        address, txid, now = _address(host, port), os.urandom(d.TXID_BYTES), self.clock()
        wait = self.times.slow_after(True)
        if not self.pending.open(txid, address, now + wait, now):
            return None
        future: asyncio.Future[d.NodesAnswer] = asyncio.get_running_loop().create_future()
        self._waiters[txid] = future
        self.stats["asked"] += 1
        try:
            self.transport.sendto(d.encode_request(txid, target), address)
            async with asyncio.timeout(wait):
                answer = await future
        except (TimeoutError, OSError):
            return None
        finally:
            self._waiters.pop(txid, None)
            self.pending.close(txid)
        self.times.record(True, self.clock() - now)
        return list(answer.contacts)

    def fell_back(self, host: str, port: int) -> None:
        """host:port answered over a link after ignoring our datagram: links only, a while."""
        self.stats["fell_back"] += 1
        self.silent.mark(_address(host, port), self.clock())
