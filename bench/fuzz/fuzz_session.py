#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of everything that reads a peer's bytes.

The first input byte picks the target, the second the chunk size the bytes arrive in:

  0-4  a link Session (acceptor: fresh, waiting for Auth, open; dialer: fresh, open), fed
       the rest in chunks. Nothing may escape receive_data/tick, the frame buffer stays
       within one header plus the payload limit, and what the session sends back is a
       well-formed frame stream.
  5    messages.decode_message(type = third byte, payload = the rest): only ProtocolError,
       and whatever decodes re-encodes to the same bytes.
  6    cbor.loads: only CborError; whatever decodes re-encodes to the same bytes.
  7    envelope.parse_header: only EnvelopeError.
  8    ipc_protocol.parse_request: only IpcError.

Run it as bench/fuzz/README.md says. An escaped exception or a failed assert is a crash:
libFuzzer stops and writes the input to crash-<sha1>.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import atheris  # noqa: E402

from tests.keys import identity, link_credentials  # noqa: E402  (cryptography uninstrumented)

with atheris.instrument_imports(include=["fluxchat"]):
    from fluxchat import cbor
    from fluxchat import messages as m
    from fluxchat import pow as work
    from fluxchat.envelope import parse_header
    from fluxchat.errors import EnvelopeError, IpcError, ProtocolError
    from fluxchat.framing import HEADER_SIZE, Frame, FrameDecoder, Prologue, encode_frame
    from fluxchat.handshake import certificate_of
    from fluxchat.ipc_protocol import make_request, parse_request
    from fluxchat.session import Closed, LinkContext, RequestReceived, Session, SessionConfig, WorkNeeded

MAX_PAYLOAD = 4096
NONCE = bytes(range(32))
CTX = LinkContext(bytes(range(48)), int(time.time()))
SESSION_TARGETS = 5
TARGETS = 9


def config(index: int) -> SessionConfig:
    return SessionConfig(identity(index), "public:25001", difficulty=4,
                         max_difficulty=8, handshake_timeout=5, idle_timeout=30,
                         ping_interval=10, max_payload=MAX_PAYLOAD, max_inflight=4,
                         link=link_credentials(index))


@functools.cache
def handshake() -> tuple[bytes, bytes, bytes, bytes, int]:
    """(dialer's prologue+Hello, Work; acceptor's prologue+Challenge, Welcome; work)."""
    dialer = Session.dialer(config(0), certificate_of(link_credentials(1)), CTX, 0.0)
    acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0, "192.0.2.7")
    hello = dialer.data_to_send()
    acceptor.receive_data(hello, 0.0)
    challenge = acceptor.data_to_send()
    needed = dialer.receive_data(challenge, 0.0)[0]
    assert isinstance(needed, WorkNeeded)
    counter = work.solve(needed.nonce, needed.dialer_id, needed.acceptor_id, needed.difficulty)
    dialer.work_done(counter)
    auth = dialer.data_to_send()
    acceptor.receive_data(auth, 0.0)
    welcome = acceptor.data_to_send()
    return hello, auth, challenge, welcome, counter


def build(target: int) -> tuple[Session, bytes]:
    """A session in the state `target` names, and what it has sent so far."""
    hello, auth, challenge, welcome, counter = handshake()
    if target < 3:
        session = Session.acceptor(config(1), NONCE, CTX, 0.0, "192.0.2.7")
        for data in (hello, auth)[:target]:
            session.receive_data(data, 0.0)
    else:
        session = Session.dialer(config(0), certificate_of(link_credentials(1)), CTX, 0.0)
        if target == 4:
            session.receive_data(challenge, 0.0)
            session.work_done(counter)
            session.receive_data(welcome, 0.0)
    if session.state.value == "open":
        for _ in range(3):   # requests in flight, so responses have rids to match
            session.send_request(lambda rid: m.Fetch(rid, 10), 0.0, 30)
    return session, session.data_to_send()


def check_output(sent: bytes) -> None:
    items = FrameDecoder(MAX_PAYLOAD).feed(sent)
    assert isinstance(items[0], Prologue)
    messages = [m.decode_message(f.type, f.payload) for f in items[1:] if isinstance(f, Frame)]
    errors = [i for i, msg in enumerate(messages) if isinstance(msg, m.Error)]
    assert errors in ([], [len(messages) - 1]), messages


def fuzz_session(target: int, chunk: int, data: bytes) -> None:
    session, sent = build(target)
    for pos in range(0, len(data), chunk):
        for event in session.receive_data(data[pos:pos + chunk], 1.0):
            if isinstance(event, RequestReceived):
                session.respond(m.Ok(event.message.rid))  # type: ignore[attr-defined]
        assert session._decoder.buffered <= HEADER_SIZE + MAX_PAYLOAD
        sent += session.data_to_send()
    closed = [e for e in session.tick(float(chunk)) if isinstance(e, Closed)]
    assert not closed or session.state.value == "closed"
    check_output(sent + session.data_to_send())


def fuzz_decode_message(data: bytes) -> None:
    if not data:
        return
    try:
        message = m.decode_message(data[0], data[1:])
    except ProtocolError:
        return
    assert m.encode_message(message) == (data[0], data[1:]), message


def fuzz_cbor(data: bytes) -> None:
    try:
        value = cbor.loads(data)
    except cbor.CborError:
        return
    assert cbor.dumps(value) == data, value


def fuzz_envelope(data: bytes) -> None:
    try:
        parse_header(data, 1 << 20)
    except EnvelopeError:
        pass


def fuzz_ipc(data: bytes) -> None:
    try:
        parse_request(data)
    except IpcError:
        pass


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    target, chunk, rest = data[0] % TARGETS, data[1] or 1, data[2:]
    if target < SESSION_TARGETS:
        fuzz_session(target, chunk, rest)
    elif target == 5:
        fuzz_decode_message(rest)
    elif target == 6:
        fuzz_cbor(rest)
    elif target == 7:
        fuzz_envelope(rest)
    else:
        fuzz_ipc(rest)


def seeds() -> list[bytes]:
    """Real traffic for every target: the recorded handshake, golden frames, a request line."""
    hello, auth, challenge, welcome, _ = handshake()
    node = m.NodeInfo(identity(2).node_id, "127.0.0.1", 25001)
    frames = [encode_frame(*m.encode_message(msg), MAX_PAYLOAD) for msg in (
        m.Ping(7), m.Pong(1), m.FindNode(8, bytes(32)), m.Nodes(2, (node,)),
        m.KeyReply(3, identity(2).public_der, ()), m.StoreKey(9, identity(2).public_der),
        m.Deliver(10, b"\x84" + bytes(40)), m.Fetch(11, 64), m.MailBatch(1, (b"e",), True),
        m.Delete(12, (bytes(16),)), m.Notify(), m.Ok(2), m.Fail(3, 21, "no"),
        m.Error(12, "bye"))]
    open_stream = b"".join(frames)
    streams = {0: hello + auth, 1: auth, 2: open_stream, 3: challenge, 4: open_stream}
    corpus = [bytes((target, 64)) + stream for target, stream in streams.items()]
    corpus += [bytes((5, 0)) + f[4:5] + f[HEADER_SIZE:] for f in frames]
    corpus += [bytes((6, 0)) + f[HEADER_SIZE:] for f in frames]
    kat = json.loads((ROOT / "tests" / "data" / "envelope_kat.json").read_text(encoding="utf-8"))
    corpus.append(bytes((7, 0)) + bytes.fromhex(kat["envelope"]))
    corpus.append(bytes((8, 0)) + make_request(1, "list", {"folder": "inbox"}, "t" * 64))
    return corpus


def write_seeds(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (directory / f"seed-{i:03d}").write_bytes(seed)
    print(f"wrote {len(seeds())} seeds to {directory}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--seed-corpus":
        write_seeds(Path(sys.argv[2]))
        return
    handshake()   # RSA and proof of work once, before libFuzzer starts timing
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
