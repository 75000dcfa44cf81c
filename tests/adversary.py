"""The adversary kit: scripted peers that speak the real protocol and misbehave on purpose.

An `Attacker` is one connection to a victim node. It opens TCP (optionally from a chosen
loopback source address, so a test can play several hosts or prefixes), does TLS and the
real handshake through our own `Session` (proof of work and signature included), and then
does what the test asks: stall at any stage, flood frames, pipeline requests, withhold
reads, replay frames, send raw bytes. `hostile_net` builds an acceptor-side adversary: a
real `PeerNet` whose request handler lies as the test scripts it.

Regression tests use the kit to exceed a bound and then assert the bound itself (slots,
bytes, operations, links), not a duration. `bench/attack.py` drives the same kit for a
fixed period against a real node to measure what an attack costs the victim.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

from fluxchat import messages as m
from fluxchat import pow as work
from fluxchat.framing import Frame, FrameDecoder, encode_frame, encode_prologue
from fluxchat.identity import Identity
from fluxchat.link import Link
from fluxchat.peer_net import NetLimits, PeerNet
from fluxchat.session import (
    Closed,
    Event,
    LinkContext,
    ResponseReceived,
    Session,
    SessionConfig,
    State,
    WorkNeeded,
)
from fluxchat.tls import channel_binding, client_context, peer_certificate
from tests.keys import identity, link_credentials

READ_CHUNK = 65536
# Smallest receive buffer the kernel grants: a peer that withholds reads makes the victim
# queue output after a few KiB instead of after megabytes of socket buffer.
SMALL_RCVBUF = 4096


def frame(message: m.Message, max_payload: int = 1 << 22) -> bytes:
    return encode_frame(*m.encode_message(message), max_payload)


async def tcp(host: str, port: int, source: str = "127.0.0.1", *, rcvbuf: int | None = None,
              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A plain TCP connection from `source` (any 127.x.y.z works on loopback)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


class Attacker:
    """One scripted connection to a victim. Build with `Attacker.connect(...)`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 me: Identity) -> None:
        self.reader, self.writer, self.me = reader, writer, me
        self.session: Session | None = None
        self.events: list[Event] = []
        self.received_bytes = 0
        self.sent = bytearray()   # everything written, for replays on another connection

    # ----- getting in, as far as the script wants ------------------------------------

    @classmethod
    async def connect(cls, host: str, port: int, index: int = 20, *, source: str = "127.0.0.1",
                      stage: str = "open", withhold_reads: bool = False,
                      max_difficulty: int = 24) -> Attacker:
        """Connect as test identity `index` and stop at `stage`: "tcp" (silent socket),
        "tls" (TLS done, no prologue), "hello" (Hello sent, challenge never answered; a victim that knows this identity
        asks for no work and opens the link) or
        "open" (fully authenticated link)."""
        me = identity(index)
        reader, writer = await tcp(host, port, source,
                                   rcvbuf=SMALL_RCVBUF if withhold_reads else None)
        attacker = cls(reader, writer, me)
        if stage == "tcp":
            return attacker
        await writer.start_tls(client_context())
        if stage == "tls":
            return attacker
        ssl_object = writer.get_extra_info("ssl_object")
        config = SessionConfig(me, "private", difficulty=0, max_difficulty=max_difficulty,
                               handshake_timeout=3600, idle_timeout=3600, ping_interval=3600,
                               link=link_credentials(index))
        context = LinkContext(channel_binding(ssl_object), int(time.time()))
        attacker.session = Session.dialer(config, peer_certificate(ssl_object), context,
                                          time.monotonic())
        attacker.flush()
        if stage == "hello":
            return attacker
        await attacker._finish_handshake()
        return attacker

    async def _finish_handshake(self) -> None:
        session = self.session
        assert session is not None
        while session.state is not State.OPEN:
            for event in await self._read_events():
                if isinstance(event, WorkNeeded):
                    counter = await asyncio.get_running_loop().run_in_executor(
                        None, work.solve, event.nonce, event.dialer_id, event.acceptor_id,
                        event.difficulty)
                    session.work_done(counter)
                elif isinstance(event, Closed):
                    raise ConnectionError(f"victim refused the link: {event.code} "
                                          f"{event.message}")
            self.flush()

    @property
    def peer_id(self) -> bytes:
        assert self.session is not None and self.session.established is not None
        return self.session.established.peer_id

    # ----- misbehaving ----------------------------------------------------------------

    def flush(self) -> None:
        if self.session is not None:
            self.send_raw(self.session.data_to_send())

    def send_raw(self, data: bytes) -> None:
        if data and not self.writer.is_closing():
            self.sent += data
            self.writer.write(data)

    def send(self, message: m.Message) -> None:
        """One frame as is, whatever the session thinks of it (lies, replays, notices)."""
        self.send_raw(frame(message))

    def request(self, build: Callable[[int], m.Message]) -> int:
        """Send a request through the session (so its answer is recognised); its rid."""
        assert self.session is not None
        rid = self.session.send_request(build, time.monotonic(), 3600)
        self.flush()
        return rid

    def flood(self, message: m.Message, count: int) -> None:
        self.send_raw(frame(message) * count)

    async def drain(self) -> None:
        await self.writer.drain()

    # ----- watching the victim ----------------------------------------------------------

    async def _read_events(self) -> list[Event]:
        data = await self.reader.read(READ_CHUNK)
        if not data:
            raise ConnectionError("victim closed the connection")
        self.received_bytes += len(data)
        assert self.session is not None
        events = self.session.receive_data(data, time.monotonic())
        self.flush()   # pongs and the like
        self.events += events
        return events

    async def response(self, rid: int) -> m.Message:
        """Read until the answer to `rid` arrives."""
        while True:
            for event in list(self.events):
                if isinstance(event, ResponseReceived) and event.rid == rid:
                    self.events.remove(event)
                    return event.message
            await self._read_events()

    async def closed_by_victim(self) -> int | None:
        """Read (and discard) until the victim ends the connection; the Error code it sent."""
        code = None
        raw = FrameDecoder(1 << 22) if self.session is None else None
        while True:
            try:
                data = await self.reader.read(READ_CHUNK)
            except (ConnectionError, OSError):
                return code
            if not data:
                return code
            self.received_bytes += len(data)
            if raw is not None:   # no session of ours (e.g. a replay): decode frames as such
                for item in raw.feed(data):
                    if isinstance(item, Frame) and item.type == m.TYPE_CODES[m.Error]:
                        code = m.decode_message(item.type, item.payload).code  # type: ignore
            elif self.session is not None:
                for event in self.session.receive_data(data, time.monotonic()):
                    if isinstance(event, Closed) and event.by_peer:
                        code = event.code

    def close(self) -> None:
        self.writer.transport.abort()


async def crowd(count: int, connect: Callable[[], Awaitable[Attacker]]) -> list[Attacker]:
    """`count` attackers made concurrently; those the victim refused are left out."""
    results = await asyncio.gather(*(connect() for _ in range(count)), return_exceptions=True)
    return [r for r in results if isinstance(r, Attacker)]


Handler = Callable[[Link, m.Message], Awaitable[m.Message | None]]


def hostile_net(index: int, handler: Handler, limits: NetLimits | None = None,
                difficulty: int = 4) -> PeerNet:
    """An acceptor-side adversary: a real PeerNet as test node `index`, answering every
    request with `handler` (which lies as the test scripts it). Listen on it as usual."""
    me = identity(index)
    config = SessionConfig(me, "public:1", difficulty=difficulty, max_difficulty=16,
                           handshake_timeout=5, idle_timeout=60, ping_interval=30)
    limits = limits or NetLimits(auth_timeout=5, request_timeout=5, max_links=64,
                                 max_handshakes=32, connections_per_second=1000)
    return PeerNet(config, limits, handler, lambda link: None, lambda link: None)


__all__ = ["Attacker", "crowd", "frame", "hostile_net", "tcp", "encode_prologue"]


NODE_BUDGET_TEXT = "too much mail work for this node; try again later"
PEER_BUDGET_TEXT = "too much mail work for this peer; try again later"


def junk_outcomes(reply: m.Message) -> list[str]:
    """The victim's answer to junk (envelopes that parse but do not open), one word per
    envelope: "opened" (it did the private-key work), "node" or "peer" (that budget refused
    it), "burst" (refused in a DeliverMany answer, which names no budget), or "other"."""
    if isinstance(reply, m.Delivered):
        return ["opened" if code == m.ErrorCode.INVALID else
                "burst" if code == m.ErrorCode.RATE_LIMITED else "other" for code in reply.codes]
    if isinstance(reply, m.Fail):
        return ["opened" if reply.code == m.ErrorCode.INVALID else
                {NODE_BUDGET_TEXT: "node", PEER_BUDGET_TEXT: "peer"}.get(reply.message, "other")]
    return ["other"]
