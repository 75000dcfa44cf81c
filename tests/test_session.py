"""The link session state machine, two sessions wired together in memory."""

from __future__ import annotations

import dataclasses
import time
import unittest

from fluxchat import messages as m
from fluxchat import pow as work
from fluxchat.framing import encode_frame, encode_prologue
from fluxchat.handshake import certificate_of
from fluxchat.linkkeys import LinkCredentials
from fluxchat.session import (
    Closed,
    Established,
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

E = m.ErrorCode
NONCE = bytes(range(32))
BINDING = bytes(range(100, 148))     # both ends of one TLS session read the same binding
CTX = LinkContext(BINDING, int(time.time()))


def config(index: int, **overrides: object) -> SessionConfig:
    values: dict[object, object] = dict(identity=identity(index), contact="public:25001",
                                        difficulty=4, max_difficulty=8, handshake_timeout=5,
                                        idle_timeout=30, ping_interval=10,
                                        link=link_credentials(index))
    values.update(overrides)
    return SessionConfig(**values)  # type: ignore[arg-type]


def pump(a: Session, b: Session, now: float = 0.0) -> tuple[list, list]:
    """Carry bytes both ways until both are quiet; solve work when asked."""
    events_a: list = []
    events_b: list = []
    for _ in range(20):
        data_a, data_b = a.data_to_send(), b.data_to_send()
        if not data_a and not data_b:
            break
        new_b = b.receive_data(data_a, now) if data_a else []
        new_a = a.receive_data(data_b, now) if data_b else []
        for event in new_a:
            if isinstance(event, WorkNeeded):
                a.work_done(work.solve(event.nonce, event.dialer_id, event.acceptor_id,
                                       event.difficulty))
        events_a += new_a
        events_b += new_b
    return events_a, events_b


def pair(dialer_cfg: SessionConfig | None = None, acceptor_cfg: SessionConfig | None = None,
         expected: bytes | None = None) -> tuple[Session, Session, list, list]:
    acceptor_cfg = acceptor_cfg or config(1)
    assert acceptor_cfg.link is not None
    dialer = Session.dialer(dialer_cfg or config(0), certificate_of(acceptor_cfg.link), CTX,
                            0.0, expected)
    acceptor = Session.acceptor(acceptor_cfg, NONCE, CTX, 0.0, "192.0.2.7")
    ev_d, ev_a = pump(dialer, acceptor)
    return dialer, acceptor, ev_d, ev_a


def closed_code(events: list) -> int | None:
    codes = [e.code for e in events if isinstance(e, Closed)]
    return codes[0] if codes else None


def hello(dialer: LinkCredentials, acceptor_id: bytes, binding: bytes = BINDING,
          claimed: bytes | None = None, key: bytes | None = None) -> m.Hello:
    """The Hello `dialer` would send, or one claiming another ID or showing another key."""
    claimed = claimed or dialer.node_id
    proof = dialer.prove(binding, claimed, acceptor_id)
    return m.Hello(claimed, acceptor_id, "private", dialer.encoded,
                   key or dialer.identity_der, proof)


def answer(index: int, message: m.Message, **overrides: object) -> list:
    """Events of a fresh acceptor (node `index`) fed the prologue and `message`."""
    acceptor = Session.acceptor(config(index, **overrides), NONCE, CTX, 0.0)
    return acceptor.receive_data(encode_prologue() + frame(message), 0.0)


class HandshakeTest(unittest.TestCase):
    def test_full_handshake_authenticates_both_ends(self) -> None:
        dialer, acceptor, ev_d, ev_a = pair(expected=identity(1).node_id)
        self.assertIs(dialer.state, State.OPEN)
        self.assertIs(acceptor.state, State.OPEN)
        est_d = [e for e in ev_d if isinstance(e, Established)][0]
        est_a = [e for e in ev_a if isinstance(e, Established)][0]
        self.assertEqual(est_d.peer_id, identity(1).node_id)
        self.assertEqual(est_a.peer_id, identity(0).node_id)
        self.assertEqual(est_a.peer_key, identity(0).public_der)
        self.assertEqual(est_d.peer_key, identity(1).public_der)
        self.assertEqual(est_a.link_record, link_credentials(0).encoded)
        self.assertEqual(est_d.observed_host, "192.0.2.7")
        self.assertEqual(est_a.contact, "public:25001")
        self.assertEqual(est_d.contact, "public:25001")

    def test_known_dialer_pays_no_work_and_opens_in_one_round_trip(self) -> None:
        asked: list[tuple[bytes, bytes]] = []

        def work_for(peer_id: bytes, record: bytes) -> int:
            asked.append((peer_id, record))
            return 0
        dialer = Session.dialer(config(0), certificate_of(link_credentials(1)), CTX, 0.0)
        acceptor = Session.acceptor(config(1, work_for=work_for), NONCE, CTX, 0.0)
        hello_bytes = dialer.data_to_send()
        events_a = acceptor.receive_data(hello_bytes, 0.0)
        self.assertIs(acceptor.state, State.OPEN)      # no Challenge: Welcome at once
        events_d = dialer.receive_data(acceptor.data_to_send(), 0.0)
        self.assertIs(dialer.state, State.OPEN)
        self.assertEqual(asked, [(identity(0).node_id, link_credentials(0).encoded)])
        self.assertFalse(any(isinstance(e, WorkNeeded) for e in events_a + events_d))

    def test_wrong_pinned_id_is_refused_before_sending_anything_useful(self) -> None:
        dialer = Session.dialer(config(0), certificate_of(link_credentials(1)), CTX, 0.0,
                                identity(2).node_id)
        self.assertIs(dialer.state, State.CLOSED)
        self.assertEqual(dialer.closed_code, E.WRONG_ID)

    def test_certificate_key_must_be_the_certified_link_key(self) -> None:
        # Node 1's record and identity key, but a TLS key that is node 2's link key.
        shown = certificate_of(link_credentials(1))
        forged = dataclasses.replace(shown, link_key=link_credentials(2).record.link_key)
        dialer = Session.dialer(config(0), forged, CTX, 0.0)
        self.assertEqual(dialer.closed_code, E.AUTH_FAILED)
        # Node 1's link key and record, claimed under node 2's identity key.
        other = dataclasses.replace(shown, identity_der=identity(2).public_der)
        self.assertEqual(Session.dialer(config(0), other, CTX, 0.0).closed_code,
                         E.AUTH_FAILED)

    def test_expired_or_foreign_records_are_refused(self) -> None:
        now = int(time.time())
        old = LinkCredentials.issue(identity(0), bytes(32), now - 3 * 86400, 86400)
        events = answer(1, hello(old, identity(1).node_id), difficulty=0)
        self.assertEqual(closed_code(events), E.AUTH_FAILED)
        future = LinkCredentials.issue(identity(0), bytes(32), now + 3600)
        events = answer(1, hello(future, identity(1).node_id), difficulty=0)
        self.assertEqual(closed_code(events), E.AUTH_FAILED)
        # Node 2's record shown with node 0's identity key: it names another node.
        mixed = dataclasses.replace(link_credentials(2), identity_der=identity(0).public_der,
                                    node_id=identity(0).node_id)
        events = answer(1, hello(mixed, identity(1).node_id), difficulty=0)
        self.assertEqual(closed_code(events), E.AUTH_FAILED)
        # A tampered record (one byte of its link key changed) does not verify.
        raw = bytearray(link_credentials(0).encoded)
        raw[raw.index(link_credentials(0).record.link_key)] ^= 1
        tampered = m.Hello(identity(0).node_id, identity(1).node_id, "", bytes(raw),
                           identity(0).public_der, bytes(64))
        self.assertEqual(closed_code(answer(1, tampered, difficulty=0)), E.AUTH_FAILED)

    def test_dialer_claiming_an_id_without_its_key(self) -> None:
        # Node 0 claims node 2's ID, showing its own record or node 2's public material.
        mine = hello(link_credentials(0), identity(1).node_id, claimed=identity(2).node_id)
        theirs = dataclasses.replace(mine, link_record=link_credentials(2).encoded,
                                     public_key=identity(2).public_der)
        for message in (mine, theirs):
            counter = work.solve(NONCE, identity(2).node_id, identity(1).node_id, 4)
            acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
            acceptor.receive_data(encode_prologue() + frame(message), 0.0)
            events = acceptor.receive_data(frame(m.Work(counter)), 0.0)
            self.assertEqual(closed_code(events), E.AUTH_FAILED)

    def test_proof_made_on_another_tls_session_or_for_another_acceptor_is_useless(self) -> None:
        elsewhere = hello(link_credentials(0), identity(1).node_id, binding=bytes(48))
        self.assertEqual(closed_code(answer(1, elsewhere, difficulty=0)), E.AUTH_FAILED)
        me, other = identity(0).node_id, identity(2).node_id
        for_other = dataclasses.replace(
            hello(link_credentials(0), identity(1).node_id),
            signature=link_credentials(0).prove(BINDING, me, other))
        self.assertEqual(closed_code(answer(1, for_other, difficulty=0)), E.AUTH_FAILED)

    def test_unknown_dialer_pays_work_before_anything_is_verified(self) -> None:
        # A Hello whose record and signature are garbage: with work demanded, the acceptor
        # answers with a Challenge and checks nothing until the work arrives.
        junk = m.Hello(identity(0).node_id, identity(1).node_id, "", b"\x00", b"\x00",
                       bytes(64))
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
        events = acceptor.receive_data(encode_prologue() + frame(junk), 0.0)
        self.assertEqual(events, [])
        challenge = m.decode_message(0x02, acceptor.data_to_send()[10 + 5:])
        self.assertEqual(challenge, m.Challenge(NONCE, 4))
        bad = next(c for c in range(100)
                   if not work.verify(NONCE, identity(0).node_id, identity(1).node_id, c, 4))
        events = acceptor.receive_data(frame(m.Work(bad)), 0.0)
        self.assertEqual(closed_code(events), E.WORK_INSUFFICIENT)

    def test_too_little_work(self) -> None:
        dialer, acceptor, _, ev_a = pair(acceptor_cfg=config(1, difficulty=8),
                                         dialer_cfg=config(0, max_difficulty=8))
        self.assertIs(acceptor.state, State.OPEN)
        me = identity(0).node_id
        fresh = Session.acceptor(config(1, difficulty=12), NONCE, CTX, 0.0)
        fresh.receive_data(encode_prologue() + frame(hello(link_credentials(0),
                                                            identity(1).node_id)), 0.0)
        weak = next(c for c in range(10**6)
                    if work.verify(NONCE, me, identity(1).node_id, c, 4)
                    and not work.verify(NONCE, me, identity(1).node_id, c, 12))
        events = fresh.receive_data(frame(m.Work(weak)), 0.0)
        self.assertEqual(closed_code(events), E.WORK_INSUFFICIENT)

    def test_too_much_work_demanded_is_refused(self) -> None:
        dialer, _, ev_d, _ = pair(acceptor_cfg=config(1, difficulty=20))
        self.assertEqual(closed_code(ev_d), E.WORK_TOO_HARD)
        self.assertFalse(any(isinstance(e, WorkNeeded) for e in ev_d))

    def test_unsupported_version_names_the_supported_ones(self) -> None:
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
        events = acceptor.receive_data(encode_prologue(7), 0.0)
        closed = [e for e in events if isinstance(e, Closed)][0]
        self.assertEqual(closed.code, E.UNSUPPORTED_VERSION)
        self.assertIn("supported versions: 2", closed.message)
        self.assertIn(b"supported versions: 2", acceptor.data_to_send())

    def test_oversize_frame_closes_at_the_header(self) -> None:
        acceptor = Session.acceptor(config(1, max_payload=1024), NONCE, CTX, 0.0)
        header = (10**6).to_bytes(4, "big") + bytes([0x01])
        events = acceptor.receive_data(encode_prologue() + header, 0.0)
        self.assertEqual(closed_code(events), E.TOO_LARGE)

    def test_unknown_type_and_garbage(self) -> None:
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
        events = acceptor.receive_data(encode_prologue() + encode_frame(0x7F, b"", 64), 0.0)
        self.assertEqual(closed_code(events), E.UNKNOWN_TYPE)
        garbage = Session.acceptor(config(1), NONCE, CTX, 0.0)
        self.assertEqual(closed_code(garbage.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)),
                         E.MALFORMED)

    def test_message_out_of_order_is_unexpected(self) -> None:
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
        events = acceptor.receive_data(encode_prologue() + frame(m.Ping(1)), 0.0)
        self.assertEqual(closed_code(events), E.UNEXPECTED)

    def test_truncated_input_waits_then_times_out(self) -> None:
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
        data = encode_prologue() + frame(hello(link_credentials(0), identity(1).node_id))
        self.assertEqual(acceptor.receive_data(data[:-3], 1.0), [])
        self.assertEqual(acceptor.tick(4.0), [])
        self.assertEqual(closed_code(acceptor.tick(5.0)), E.TIMEOUT)


class OpenLinkTest(unittest.TestCase):
    def setUp(self) -> None:
        self.dialer, self.acceptor, _, _ = pair()

    def test_an_open_link_keeps_nothing_of_its_handshake(self) -> None:
        def admit(peer_id: bytes) -> None:
            return None
        dialer, acceptor, _, _ = pair(acceptor_cfg=config(1, admit=admit,
                                                          work_for=lambda peer, record: 0))
        for session in (dialer, acceptor):
            self.assertIsNone(session.handshake)
            self.assertIsNone(session.config.admit)
            self.assertIsNone(session.config.work_for)
        self.assertEqual(dialer.claimed_id, identity(1).node_id)
        self.assertEqual(acceptor.claimed_id, identity(0).node_id)
        self.assertEqual(acceptor.config.max_inflight, config(1).max_inflight)

    def test_requests_match_responses_with_several_in_flight(self) -> None:
        target = bytes(32)
        rids = [self.dialer.send_request(lambda rid: m.FindNode(rid, target), 0.0, 5)
                for _ in range(3)]
        received = self.acceptor.receive_data(self.dialer.data_to_send(), 0.0)
        self.assertEqual([e.message.rid for e in received if isinstance(e, RequestReceived)], rids)
        for rid in reversed(rids):
            self.acceptor.respond(m.Nodes(rid, ()))
        answers = self.dialer.receive_data(self.acceptor.data_to_send(), 0.0)
        self.assertEqual([e.rid for e in answers if isinstance(e, ResponseReceived)],
                         list(reversed(rids)))

    def test_request_timeout_and_late_answer_ignored(self) -> None:
        rid = self.dialer.send_request(lambda r: m.Fetch(r, 10), 0.0, 2)
        self.acceptor.receive_data(self.dialer.data_to_send(), 0.0)
        self.assertEqual(self.dialer.tick(1.0), [])
        self.assertEqual(self.dialer.tick(2.0), [RequestFailed(rid, "timeout")])
        self.acceptor.respond(m.Ok(rid))
        self.assertEqual(self.dialer.receive_data(self.acceptor.data_to_send(), 2.5), [])
        self.assertIs(self.dialer.state, State.OPEN)

    def test_keepalive_ping_and_idle_timeout(self) -> None:
        self.assertEqual(self.dialer.tick(10.0), [])
        ping = self.dialer.data_to_send()
        self.assertTrue(ping)
        self.acceptor.receive_data(ping, 10.0)
        self.assertEqual(self.dialer.receive_data(self.acceptor.data_to_send(), 10.1), [])
        # Pings keep the peer known alive, but an unused link closes after idle_timeout.
        self.assertEqual(closed_code(self.acceptor.tick(30.0)), E.SHUTDOWN)
        self.assertEqual(self.dialer.tick(20.2), [])     # second ping goes out
        self.dialer.data_to_send()
        self.assertEqual(closed_code(self.dialer.tick(30.2)), E.TIMEOUT)  # never answered

    def test_next_deadline_names_the_next_timer(self) -> None:
        fresh = Session.acceptor(config(1), NONCE, CTX, 100.0)
        self.assertEqual(fresh.next_deadline(), 105.0)           # handshake_timeout 5
        self.assertEqual(self.dialer.next_deadline(), 10.0)      # keepalive: ping_interval 10
        rid = self.dialer.send_request(lambda r: m.Fetch(r, 1), 1.0, 2)
        self.assertEqual(self.dialer.next_deadline(), 3.0)       # the request's deadline
        self.dialer.tick(3.0)
        self.assertNotIn(rid, self.dialer.timers.pending)
        self.dialer.tick(11.0)                                   # sends the ping at 11
        self.assertEqual(self.dialer.next_deadline(), 21.0)      # ping deadline
        self.dialer.close()
        self.assertEqual(self.dialer.next_deadline(), float("inf"))

    def test_notice_and_inflight_limit(self) -> None:
        self.dialer.notify(m.Notify())
        events = self.acceptor.receive_data(self.dialer.data_to_send(), 0.0)
        self.assertIsInstance(events[0], NoticeReceived)
        small, other, _, _ = pair(acceptor_cfg=config(1, max_inflight=2))
        for _ in range(3):
            small.send_request(lambda r: m.Fetch(r, 1), 0.0, 5)
        got = other.receive_data(small.data_to_send(), 0.0)
        self.assertEqual(len([e for e in got if isinstance(e, RequestReceived)]), 2)
        answers = small.receive_data(other.data_to_send(), 0.0)
        fail = [e.message for e in answers if isinstance(e, ResponseReceived)][0]
        self.assertEqual(fail.code, E.RATE_LIMITED)

    def test_every_frame_spends_the_budget_and_debt_delays_reading(self) -> None:
        dialer, acceptor, _, _ = pair(acceptor_cfg=config(1, frame_rate=10.0, frame_burst=20.0))
        handshake = acceptor.frames_received
        self.assertEqual(acceptor.read_delay(0.0), 0.0)
        for _ in range(40):
            dialer.notify(m.Notify())
        dialer.send_request(m.Ping, 0.0, 5)
        events = acceptor.receive_data(dialer.data_to_send(), 0.0)
        # What was read is handled (nothing is lost), and the debt is paid in time.
        self.assertEqual(len([e for e in events if isinstance(e, NoticeReceived)]), 40)
        self.assertEqual(acceptor.frames_received, handshake + 41)
        debt = 41 + handshake - 20
        self.assertAlmostEqual(acceptor.read_delay(0.0), debt / 10.0)
        self.assertAlmostEqual(acceptor.read_delay(1.0), debt / 10.0 - 1.0)
        self.assertAlmostEqual(acceptor.read_delay(debt / 10.0), 0.0)
        self.assertEqual(acceptor.read_delay(debt / 10.0 + 1), 0.0)
        self.assertIs(acceptor.state, State.OPEN)

    def test_big_frames_cost_more(self) -> None:
        dialer, acceptor, _, _ = pair(acceptor_cfg=config(1, frame_rate=1.0, frame_burst=100.0))
        before = acceptor.read_delay(0.0)
        dialer.send_request(lambda r: m.Store(r, bytes(5 * 65536)), 0.0, 5)
        acceptor.receive_data(dialer.data_to_send(), 0.0)
        self.assertEqual(before, 0.0)
        self.assertEqual(acceptor._budget.tokens, 100.0 - acceptor.frames_received - 5)  # noqa: SLF001

    def test_close_fails_pending_requests_and_tells_the_peer(self) -> None:
        rid = self.dialer.send_request(lambda r: m.Fetch(r, 1), 0.0, 5)
        events = self.dialer.close(E.SHUTDOWN, "bye")
        self.assertIn(RequestFailed(rid, "closed"), events)
        peer_events = self.acceptor.receive_data(self.dialer.data_to_send(), 0.0)
        self.assertEqual([e for e in peer_events if isinstance(e, Closed)],
                         [Closed(E.SHUTDOWN, "bye", True)])


def frame(message: m.Message) -> bytes:
    ftype, payload = m.encode_message(message)
    return encode_frame(ftype, payload, 1 << 21)


def find(rid: int) -> m.FindNode:
    return m.FindNode(rid, bytes(32))


def raw(message_type: type[m.Message], payload: bytes) -> bytes:
    return encode_frame(m.TYPE_CODES[message_type], payload, 1 << 22)


class EarlyRequestTest(unittest.TestCase):
    """A request in the Hello's flight (PROTOCOL.md §5.3)."""

    def dialer(self, **overrides: object) -> Session:
        return Session.dialer(config(0, **overrides), certificate_of(link_credentials(1)),
                              CTX, 0.0)

    def test_known_dialer_is_answered_in_the_welcome_flight(self) -> None:
        dialer = self.dialer()
        rid = dialer.send_early(find, 0.0, 5.0)
        assert rid is not None
        acceptor = Session.acceptor(config(1, work_for=lambda *_: 0), NONCE, CTX, 0.0)
        events_a = acceptor.receive_data(dialer.data_to_send(), 0.0)     # flight 1
        self.assertEqual([type(e) for e in events_a], [Established, RequestReceived])
        self.assertEqual(events_a[1].message, find(rid))
        self.assertEqual(acceptor.early, "served")
        acceptor.respond(m.Nodes(rid, ()))
        events_d = dialer.receive_data(acceptor.data_to_send(), 0.0)     # flight 2
        self.assertEqual([type(e) for e in events_d], [Established, ResponseReceived])
        self.assertEqual(events_d[1].message, m.Nodes(rid, ()))
        self.assertEqual((dialer.early, dialer.data_to_send()), ("sent", b""))

    def test_challenged_dialers_request_is_dropped_unread_and_goes_behind_work(self) -> None:
        dialer = self.dialer()
        rid = dialer.send_early(find, 0.0, 5.0)
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)      # unknown: work
        self.assertEqual(acceptor.receive_data(dialer.data_to_send(), 0.0), [])
        self.assertEqual(acceptor.early, "dropped")
        [need] = dialer.receive_data(acceptor.data_to_send(), 0.0)   # the Challenge
        assert isinstance(need, WorkNeeded)
        self.assertEqual(dialer.early, "resend")
        dialer.work_done(work.solve(need.nonce, need.dialer_id, need.acceptor_id,
                                    need.difficulty))
        events_a = acceptor.receive_data(dialer.data_to_send(), 0.0)     # Work + request
        self.assertEqual(events_a[1:], [RequestReceived(find(rid))])
        self.assertEqual((acceptor.early, dialer.early), ("served", "with-work"))
        # Unread means undecoded: a garbled request behind a challenged Hello is no error.
        hello_only = self.dialer()
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
        events = acceptor.receive_data(hello_only.data_to_send()
                                       + raw(m.FindNode, b"\xff garbage"), 0.0)
        self.assertEqual((events, acceptor.state, acceptor.early),
                         ([], State.HANDSHAKE, "dropped"))

    def test_held_request_goes_behind_work_or_after_welcome(self) -> None:
        for work_for, status in ((None, "with-work"), (lambda *_: 0, "after-welcome")):
            dialer = self.dialer()
            rid = dialer.send_early(find, 0.0, 5.0, with_hello=False)
            acceptor = Session.acceptor(config(1, work_for=work_for), NONCE, CTX, 0.0)
            _, events_a = pump(dialer, acceptor)
            self.assertEqual([e for e in events_a if isinstance(e, RequestReceived)],
                             [RequestReceived(find(rid))])
            self.assertEqual(dialer.early, status)
            self.assertEqual(acceptor.early, "served" if work_for is None else "")

    def test_unauthenticated_dialers_early_request_is_never_read(self) -> None:
        bad = hello(link_credentials(0), identity(1).node_id, binding=bytes(48))
        for work_for in (lambda *_: 0, None):    # claims to be known / pays work
            acceptor = Session.acceptor(config(1, work_for=work_for, difficulty=0), NONCE, CTX,
                                        0.0)
            events = acceptor.receive_data(encode_prologue() + frame(bad) + frame(find(1)), 0.0)
            self.assertEqual(closed_code(events), E.AUTH_FAILED)
            self.assertFalse([e for e in events if isinstance(e, RequestReceived)])
        acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
        events = acceptor.receive_data(encode_prologue() + frame(find(1)), 0.0)
        self.assertEqual(closed_code(events), E.UNEXPECTED)    # a request before Hello

    def test_second_or_oversized_early_request_closes_the_link(self) -> None:
        for extra, code in ((frame(find(1)) + frame(find(2)), E.UNEXPECTED),
                            (raw(m.Store, bytes(4097)), E.TOO_LARGE)):
            dialer = self.dialer()
            acceptor = Session.acceptor(config(1), NONCE, CTX, 0.0)
            events = acceptor.receive_data(dialer.data_to_send() + extra, 0.0)
            self.assertEqual(closed_code(events), code)
            self.assertFalse([e for e in events if isinstance(e, RequestReceived)])
        # An honest dialer never sends one: too big to go early, or a second one.
        dialer = self.dialer(max_early_request=40)
        self.assertIsNone(dialer.send_early(lambda rid: m.Store(rid, bytes(64)), 0.0, 5.0))
        self.assertIsNotNone(dialer.send_early(find, 0.0, 5.0))
        self.assertIsNone(dialer.send_early(find, 0.0, 5.0))


if __name__ == "__main__":
    unittest.main()
