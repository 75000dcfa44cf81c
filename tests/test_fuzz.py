"""Hypothesis fuzzing of every decoder that reads hostile bytes.

- The link Session, as acceptor and dialer in every handshake state and on an open link,
  fed arbitrary bytes and mutated real traffic (a recorded handshake, golden frames of every
  message type) in random chunks: nothing escapes (a ProtocolError becomes a Closed event),
  the frame buffer stays within one header plus the payload limit, and what the session
  sends back is always well-formed.
- The local API parser: only IpcError. Envelope headers: only EnvelopeError. CBOR: only
  CborError, and whatever decodes re-encodes to the same bytes (one encoding per value).
"""

from __future__ import annotations

import functools
import json
import time
import unittest
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fluxchat import cbor
from fluxchat import messages as m
from fluxchat import pow as work
from fluxchat.envelope import open_envelope, parse_header
from fluxchat.errors import EnvelopeError, IpcError, ProtocolError
from fluxchat.framing import HEADER_SIZE, Frame, FrameDecoder, Prologue, encode_frame, encode_prologue
from fluxchat.handshake import certificate_of
from fluxchat.ids import format_id
from fluxchat.ipc_commands import COMMANDS
from fluxchat.ipc_protocol import MAX_LINE, LineSplitter, make_request, parse_request
from fluxchat.session import (
    Closed,
    Established,
    Event,
    LinkContext,
    NoticeReceived,
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    Session,
    SessionConfig,
    State,
    WorkNeeded,
)
from tests.keys import identity, link_credentials

MAX_PAYLOAD = 4096      # small, so inputs larger than the limit are easy to generate
NONCE = bytes(range(32))
CTX = LinkContext(bytes(range(48)), int(time.time()))
KAT = Path(__file__).resolve().parent / "data" / "envelope_kat.json"
EVENT_TYPES = (WorkNeeded, Established, RequestReceived, NoticeReceived, ResponseReceived,
               RequestFailed, Closed)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DIALER, ACCEPTOR = 0, 1


def session_config(index: int) -> SessionConfig:
    return SessionConfig(identity(index), "public:25001", difficulty=4, max_difficulty=8,
                         handshake_timeout=5, idle_timeout=30, ping_interval=10,
                         max_payload=MAX_PAYLOAD, max_inflight=4,
                         link=link_credentials(index))


def frame(message: m.Message) -> bytes:
    return encode_frame(*m.encode_message(message), MAX_PAYLOAD)


@functools.cache
def kat_envelope() -> bytes:
    return bytes.fromhex(json.loads(KAT.read_text(encoding="utf-8"))["envelope"])


# ----- real traffic to start from -----------------------------------------------------------


@dataclass(frozen=True)
class Transcript:
    """The bytes each side sent in one real handshake (acceptor nonce fixed to NONCE)."""

    hello: bytes       # dialer: prologue + Hello
    work: bytes        # dialer: Work
    challenge: bytes   # acceptor: prologue + Challenge
    welcome: bytes     # acceptor: Welcome
    counter: int       # the dialer's proof of work


@functools.cache
def transcript() -> Transcript:
    dialer = Session.dialer(session_config(DIALER), certificate_of(link_credentials(ACCEPTOR)),
                            CTX, 0.0)
    acceptor = Session.acceptor(session_config(ACCEPTOR), NONCE, CTX, 0.0, "192.0.2.7")
    hello = dialer.data_to_send()
    acceptor.receive_data(hello, 0.0)
    challenge = acceptor.data_to_send()
    [needed] = dialer.receive_data(challenge, 0.0)
    assert isinstance(needed, WorkNeeded)
    counter = work.solve(needed.nonce, needed.dialer_id, needed.acceptor_id, needed.difficulty)
    dialer.work_done(counter)
    sent_work = dialer.data_to_send()
    acceptor.receive_data(sent_work, 0.0)
    welcome = acceptor.data_to_send()
    dialer.receive_data(welcome, 0.0)
    assert dialer.state is State.OPEN and acceptor.state is State.OPEN
    return Transcript(hello, sent_work, challenge, welcome, counter)


@functools.cache
def open_link_frames() -> tuple[bytes, ...]:
    """One golden frame of every message type an open link may carry, with real contents."""
    node = m.NodeInfo(identity(2).node_id, "127.0.0.1", 25001)
    key, envelope, uuid = identity(2).public_der, kat_envelope(), bytes(range(16))
    messages = [
        m.Ping(7), m.Pong(1), m.FindNode(8, identity(3).node_id), m.Nodes(2, (node, node)),
        m.FindKey(9, identity(2).node_id), m.KeyReply(3, key, ()), m.KeyReply(1, b"", (node,)),
        m.StoreKey(10, key), m.Deliver(11, envelope), m.Store(12, envelope), m.Fetch(13, 64),
        m.MailBatch(2, (envelope,), False), m.Delete(14, (uuid,)), m.Notify(), m.Ok(3),
        m.Fail(1, 21, "not found"), m.Error(12, "closing"),
    ]
    return tuple(frame(message) for message in messages)


@functools.cache
def handshake_frames() -> tuple[bytes, ...]:
    t = transcript()
    prologue = len(encode_prologue())
    return (t.hello[prologue:], t.work, t.challenge[prologue:], t.welcome)


# ----- sessions in every state --------------------------------------------------------------


Built = tuple[Session, bytes]   # a session and everything it has sent so far


def _acceptor(steps: int) -> Built:
    t = transcript()
    session = Session.acceptor(session_config(ACCEPTOR), NONCE, CTX, 0.0, "192.0.2.7")
    for data in (encode_prologue(), t.hello[len(encode_prologue()):], t.work)[:steps]:
        session.receive_data(data, 0.0)
    return session, session.data_to_send()


def _dialer(steps: int) -> Built:
    t = transcript()
    session = Session.dialer(session_config(DIALER), certificate_of(link_credentials(ACCEPTOR)),
                             CTX, 0.0)
    if steps >= 1:
        session.receive_data(encode_prologue(), 0.0)
    if steps >= 2:
        session.receive_data(t.challenge[len(encode_prologue()):], 0.0)
    if steps >= 3:
        session.work_done(t.counter)
    if steps >= 4:
        session.receive_data(t.welcome, 0.0)
    return session, session.data_to_send()


def _with_pending(built: Built) -> Built:
    """An open session waiting for answers to rids 1..3, as a busy link is."""
    session, sent = built
    for _ in range(3):
        session.send_request(lambda rid: m.Fetch(rid, 10), 0.0, 30)
    return session, sent + session.data_to_send()


# name -> (builder, state it must reach, the bytes a well-behaved peer would send next)
STATES: dict[str, tuple[Callable[[], Built], State, Callable[[], bytes]]] = {
    "acceptor-prologue": (lambda: _acceptor(0), State.AWAIT_PROLOGUE,
                          lambda: transcript().hello + transcript().work),
    "acceptor-hello": (lambda: _acceptor(1), State.HANDSHAKE,
                       lambda: handshake_frames()[0] + transcript().work),
    "acceptor-work": (lambda: _acceptor(2), State.HANDSHAKE, lambda: transcript().work),
    "acceptor-open": (lambda: _with_pending(_acceptor(3)), State.OPEN,
                      lambda: b"".join(open_link_frames())),
    "dialer-prologue": (lambda: _dialer(0), State.AWAIT_PROLOGUE,
                        lambda: transcript().challenge),
    "dialer-challenge": (lambda: _dialer(1), State.HANDSHAKE,
                         lambda: handshake_frames()[2]),
    "dialer-solving": (lambda: _dialer(2), State.HANDSHAKE, lambda: transcript().welcome),
    "dialer-welcome": (lambda: _dialer(3), State.HANDSHAKE, lambda: transcript().welcome),
    "dialer-open": (lambda: _with_pending(_dialer(4)), State.OPEN,
                    lambda: b"".join(open_link_frames())),
}


# ----- mutations --------------------------------------------------------------------------

BOUNDARY_LENGTHS = (0, 1, MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1, 2**31, 2**32 - 1)

# Positions are fractions of the current length, so edits land anywhere in a long stream.
where = st.floats(0, 1)
mutations = st.lists(st.one_of(
    st.tuples(st.just("flip"), where, st.integers(0, 7)),
    st.tuples(st.just("set"), where, st.integers(0, 255)),
    st.tuples(st.just("insert"), where, st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("delete"), where, st.integers(1, 32)),
    st.tuples(st.just("truncate"), where),
    st.tuples(st.just("repeat"), where, st.integers(1, 600)),
    st.tuples(st.just("u32"), where, st.sampled_from(BOUNDARY_LENGTHS)),
), min_size=1, max_size=4)


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    """Apply byte-level edits in order."""
    buf = bytearray(data)
    for op in ops:
        kind, pos = op[0], min(int(op[1] * len(buf)), len(buf))
        if kind == "flip" and pos < len(buf):
            buf[pos] ^= 1 << op[2]
        elif kind == "set" and pos < len(buf):
            buf[pos] = op[2]
        elif kind == "insert":
            buf[pos:pos] = op[2]
        elif kind == "delete":
            del buf[pos:pos + op[2]]
        elif kind == "truncate":
            del buf[pos:]
        elif kind == "repeat":
            buf[pos:pos] = buf[pos:pos + op[2]]
        elif kind == "u32":
            buf[pos:pos + 4] = op[2].to_bytes(4, "big")
    return bytes(buf)


def split_frames(stream: bytes) -> tuple[bytes, list[bytes]]:
    """(prologue or b"", the frames) of a well-formed stream."""
    prefix = stream[:len(encode_prologue())] if stream.startswith(b"FLUXCHAT") else b""
    frames, pos = [], len(prefix)
    while pos < len(stream):
        end = pos + HEADER_SIZE + int.from_bytes(stream[pos:pos + 4], "big")
        frames.append(stream[pos:end])
        pos = end
    return prefix, frames


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    """Split data into chunks of the given sizes (cycled), as TCP might deliver it."""
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)] if sizes else len(data)
        chunks.append(data[pos:pos + size])
        pos, i = pos + size, i + 1
    return chunks


# ----- the session oracle -----------------------------------------------------------------


class SessionOracle:
    """Feeds one session and checks its invariants after every step."""

    def __init__(self, test: unittest.TestCase, built: Built) -> None:
        self.test, (self.session, sent) = test, built
        self.sent = bytearray(sent)
        self.closed: Closed | None = None

    def feed(self, data: bytes, now: float) -> None:
        events = self.session.receive_data(data, now)   # nothing may escape
        self.check(events)

    def tick(self, now: float) -> None:
        self.check(self.session.tick(now))

    def check(self, events: list[Event]) -> None:
        session = self.session
        for event in events:
            self.test.assertIsInstance(event, EVENT_TYPES)
            # Act as the adapter would: answer requests, hand in the proof of work.
            if isinstance(event, RequestReceived):
                session.respond(m.Ok(event.message.rid))  # type: ignore[attr-defined]
            if isinstance(event, WorkNeeded):
                session.work_done(transcript().counter)
            if isinstance(event, Closed):
                self.test.assertIsNone(self.closed, "closed twice")
                self.closed = event
        self.test.assertLessEqual(session._decoder.buffered, HEADER_SIZE + MAX_PAYLOAD)
        if self.closed is not None:
            self.test.assertIs(session.state, State.CLOSED)
        self.sent += session.data_to_send()

    def check_output(self) -> None:
        """Everything the session sent is a well-formed stream that ends with our Error."""
        decoder = FrameDecoder(MAX_PAYLOAD)
        items = decoder.feed(bytes(self.sent))
        self.test.assertEqual(decoder.buffered, 0)
        self.test.assertIsInstance(items[0], Prologue)
        messages = [m.decode_message(f.type, f.payload) for f in items[1:]
                    if isinstance(f, Frame)]
        errors = [i for i, msg in enumerate(messages) if isinstance(msg, m.Error)]
        if self.closed is not None and not self.closed.by_peer:
            self.test.assertEqual(errors, [len(messages) - 1])
            self.test.assertEqual(messages[-1].code, self.closed.code)  # type: ignore
        else:
            self.test.assertEqual(errors, [])


class SessionFuzzTest(unittest.TestCase):
    def test_states_are_reached_and_well_behaved_traffic_works(self) -> None:
        for name, (build, state, _) in STATES.items():
            with self.subTest(name):
                self.assertIs(build()[0].state, state)
        acceptor = SessionOracle(self, STATES["acceptor-prologue"][0]())
        acceptor.feed(STATES["acceptor-prologue"][2](), 0.0)
        self.assertIs(acceptor.session.state, State.OPEN)
        dialer = SessionOracle(self, STATES["dialer-prologue"][0]())
        dialer.feed(STATES["dialer-prologue"][2](), 0.0)
        dialer.session.work_done(transcript().counter)   # work is solved outside the session
        dialer.feed(transcript().welcome, 0.0)
        self.assertIs(dialer.session.state, State.OPEN)
        for oracle in (acceptor, dialer):
            oracle.check_output()

    def run_case(self, name: str, data: bytes, sizes: list[int], tick_at: int) -> None:
        oracle = SessionOracle(self, STATES[name][0]())
        for chunk in chunked(data, sizes):
            oracle.feed(chunk, 1.0)
        oracle.tick(float(tick_at))
        oracle.feed(b"\x00" * 8, float(tick_at))   # after a close: ignored, no exception
        oracle.check_output()

    @FUZZ
    @given(st.sampled_from(sorted(STATES)), st.binary(max_size=2 * MAX_PAYLOAD),
           st.lists(st.integers(1, 700), max_size=4), st.integers(0, 120))
    def test_arbitrary_bytes(self, name: str, data: bytes, sizes: list[int],
                             tick_at: int) -> None:
        self.run_case(name, data, sizes, tick_at)

    @FUZZ
    @given(st.sampled_from(sorted(STATES)), st.sampled_from(["expected", "frames", "payload"]),
           st.data(), mutations, st.lists(st.integers(1, 700), max_size=4), st.integers(0, 120))
    def test_mutated_traffic(self, name: str, mode: str, data: st.DataObject,
                             ops: list[tuple], sizes: list[int], tick_at: int) -> None:
        """expected: what this state expects next (e.g. the recorded Auth), edited anywhere;
        frames: a few golden frames of any type in any order, edited anywhere;
        payload: the expected frames with one payload edited (and maybe retyped) and its
        length header fixed up, so the edit reaches the message decoder and the state machine."""
        if mode == "frames":
            pool = open_link_frames() + handshake_frames()
            seed = b"".join(data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=4)))
            stream = mutate(seed, ops)
        elif mode == "expected":
            stream = mutate(STATES[name][2](), ops)
        else:
            prefix, frames = split_frames(STATES[name][2]())
            index = data.draw(st.integers(0, len(frames) - 1))
            ftype = data.draw(st.sampled_from(sorted(m.MESSAGE_TYPES)) | st.just(frames[index][4]))
            payload = mutate(frames[index][HEADER_SIZE:], ops)
            frames[index] = encode_frame(ftype, payload, 1 << 30)
            stream = prefix + b"".join(frames)
        self.run_case(name, stream, sizes, tick_at)

    @FUZZ
    @given(st.sampled_from(sorted(m.MESSAGE_TYPES)), st.data(), mutations)
    def test_payload_decoding_is_strict_and_canonical(self, ftype: int, data: st.DataObject,
                                                       ops: list[tuple]) -> None:
        seeds = [f[HEADER_SIZE:] for f in open_link_frames() + handshake_frames()
                 if f[4] == ftype] or [b"\x80"]
        payload = mutate(data.draw(st.sampled_from(seeds)), ops)
        try:
            message = m.decode_message(ftype, payload)
        except ProtocolError:
            return
        self.assertEqual(m.encode_message(message), (ftype, payload))


# ----- the local API parser ---------------------------------------------------------------

ARG_NAMES = sorted({arg.name for command in COMMANDS.values() for arg in command.args})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
request_objects = st.fixed_dictionaries({}, optional={
    "id": st.integers() | st.text(max_size=140) | json_values,
    "cmd": st.sampled_from(sorted(COMMANDS)) | st.text(max_size=10) | json_values,
    "args": st.dictionaries(st.sampled_from(ARG_NAMES) | st.text(max_size=6),
                            json_values | st.sampled_from(["inbox", "outbox", "add", "list",
                                                           format_id(bytes(32)), "FC_1",
                                                           "123e4567-e89b-12d3-a456-426614174000"]),
                            max_size=4) | json_values,
    "token": st.text(max_size=70) | json_values,
    "extra": json_values,
})
GOOD_LINES = [
    make_request(1, "mail", {"to": format_id(bytes(32)), "subject": "s", "body": "b"}, "t" * 64),
    make_request("x", "list", {"folder": "outbox", "limit": 10, "offset": 0}, "t"),
    make_request(3, "contacts", {"action": "add", "alias": "bob", "id": format_id(bytes(32))},
                 "t"),
    make_request(4, "read", {"uuid": "123e4567-e89b-12d3-a456-426614174000"}, "t"),
]


class IpcParserFuzzTest(unittest.TestCase):
    def assert_only_ipc_errors(self, line: bytes, max_line: int = MAX_LINE) -> None:
        try:
            request = parse_request(line, max_line)
        except IpcError:
            return
        declared = {arg.name for arg in COMMANDS[request.cmd].args}
        self.assertEqual(set(request.args), declared)

    @FUZZ
    @given(st.binary(max_size=300), st.sampled_from([MAX_LINE, 64]))
    @example(b"[" * 100_000, MAX_LINE)
    @example(b'{"id": 1' + b"9" * 5000 + b', "cmd": "info", "token": "t"}', MAX_LINE)
    @example(b'{"id": NaN, "cmd": "info", "token": "t"}', MAX_LINE)
    @example(b'{"id": 1, "cmd": "info", "token": "\\ud800"}', MAX_LINE)
    def test_arbitrary_lines(self, line: bytes, max_line: int) -> None:
        self.assert_only_ipc_errors(line, max_line)

    @FUZZ
    @given(request_objects)
    def test_arbitrary_requests(self, obj: dict) -> None:
        self.assert_only_ipc_errors(json.dumps(obj).encode("utf-8"))

    @FUZZ
    @given(st.sampled_from(GOOD_LINES), mutations)
    def test_mutated_requests(self, line: bytes, ops: list[tuple]) -> None:
        self.assert_only_ipc_errors(mutate(line.rstrip(b"\n"), ops))

    @FUZZ
    @given(st.lists(st.binary(max_size=50) | st.just(b"\n"), max_size=20),
           st.integers(1, 40))
    def test_line_splitter_stays_bounded(self, chunks: list[bytes], max_line: int) -> None:
        splitter = LineSplitter(max_line)
        for chunk in chunks:
            for line in splitter.feed(chunk):
                self.assertTrue(line is None or len(line) <= max_line)
            self.assertLessEqual(len(splitter._buf), max_line)


# ----- envelopes and CBOR -----------------------------------------------------------------

cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=20)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.integers(-100, 100) | st.text(max_size=5), inner, max_size=4),
    max_leaves=10)


class EnvelopeAndCborFuzzTest(unittest.TestCase):
    @FUZZ
    @given(st.binary(max_size=1200))
    def test_arbitrary_envelope_headers(self, data: bytes) -> None:
        try:
            parse_header(data, 1 << 20)
        except EnvelopeError:
            pass

    @settings(max_examples=60, deadline=None)
    @given(mutations)
    def test_mutated_envelopes_never_open(self, ops: list[tuple]) -> None:
        original = kat_envelope()
        data = mutate(original, ops)
        try:
            parse_header(data, 1 << 20)
        except EnvelopeError:
            pass
        if data != original:
            with self.assertRaises(EnvelopeError):
                open_envelope(data, identity(1))

    @FUZZ
    @given(st.binary(max_size=200), st.integers(0, 4), st.integers(0, 40))
    def test_arbitrary_cbor(self, data: bytes, depth: int, items: int) -> None:
        for decode in (lambda: cbor.loads(data), lambda: cbor.loads(data, depth, items)):
            try:
                value = decode()
            except cbor.CborError:
                continue
            self.assertEqual(cbor.dumps(value), data)   # exactly one encoding per value

    @FUZZ
    @given(cbor_values, mutations)
    def test_mutated_cbor(self, value: object, ops: list[tuple]) -> None:
        data = mutate(cbor.dumps(value), ops)
        try:
            decoded = cbor.loads(data)
        except cbor.CborError:
            return
        self.assertEqual(cbor.dumps(decoded), data)


if __name__ == "__main__":
    unittest.main()
