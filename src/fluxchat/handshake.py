"""The link handshake (protocol version 2): who proves what, in which order, before a link
opens. Pure: the session feeds messages in and sends what the handshake hands it.

    dialer                                                   acceptor
      TLS 1.3: the acceptor's certificate holds its Ed25519 link key and link key record
      (checked against the acceptor's identity key in the same certificate)
      Hello(ID_D, ID_A, contact, record_D, key_D, sig_D) -->   sig_D: link key over the TLS
                                                               channel binding and both IDs
                                        [<-- Challenge(nonce, difficulty)   only if work is
      Work(counter) -->]                                        demanded of this dialer
                                         <-- Welcome(observed host, contact)

The acceptor decides whether to demand work before it checks anything that costs more than a
hash, so an unknown dialer pays its work before its RSA-certified record is verified.
"""

from __future__ import annotations

from collections.abc import Callable

from . import messages as m
from . import pow as work
from .errors import ProtocolError
from .ids import id_from_spki
from .linkkeys import LinkCredentials, LinkKeyError, LinkKeyRecord, RecordCheck, verify_proof
from .records import record
from .session_config import SessionConfig
from .session_events import Established, Event, WorkNeeded

E = m.ErrorCode
Send = Callable[[m.Message], None]


@record
class PeerCertificate:
    """What an acceptor's TLS certificate shows (the TLS handshake proved `link_key`)."""

    link_key: bytes       # Ed25519 public key, raw
    link_record: bytes    # its link key record, encoded
    identity_der: bytes   # the acceptor's RSA identity key (SPKI DER)


def certificate_of(link: LinkCredentials) -> PeerCertificate:
    """What our own certificate shows a dialer (tls.link_certificate carries the same)."""
    return PeerCertificate(link.record.link_key, link.encoded, link.identity_der)


@record
class LinkContext:
    """The TLS session a handshake runs in, and the wall clock (for record validity)."""

    binding: bytes        # TLS channel binding ("tls-unique"), the same at both ends
    unix_time: int


def _check_record(records: RecordCheck, data: bytes, identity_der: bytes,
                  now: int) -> LinkKeyRecord:
    try:
        return records.check(data, identity_der, now)
    except LinkKeyError as exc:
        raise ProtocolError(E.AUTH_FAILED, str(exc)) from None


class DialerHandshake:
    def __init__(self, config: SessionConfig, send: Send, context: LinkContext,
                 certificate: PeerCertificate, version: int) -> None:
        self.config, self.send, self.context = config, send, context
        self.certificate, self.version = certificate, version
        self.peer_id = id_from_spki(certificate.identity_der)
        self.contact = ""
        self._nonce = b""
        self._solving = False

    def start(self, expected_id: bytes | None) -> None:
        """Check the acceptor's certificate, then prove who we are."""
        if expected_id is not None and expected_id != self.peer_id:
            raise ProtocolError(E.WRONG_ID, "the certificate does not belong to the expected node")
        cert, link = self.certificate, self.config.link
        record = _check_record(self.config.records, cert.link_record, cert.identity_der,
                               self.context.unix_time)
        if record.link_key != cert.link_key:
            raise ProtocolError(E.AUTH_FAILED, "the TLS key is not the certified link key")
        if link is None:
            raise ValueError("a session needs link credentials to dial")
        proof = link.prove(self.context.binding, link.node_id, self.peer_id)
        self.send(m.Hello(link.node_id, self.peer_id, self.config.contact, link.encoded,
                          link.identity_der, proof))

    def on_message(self, message: m.Message) -> list[Event]:
        if isinstance(message, m.Challenge) and not self._nonce:
            if message.difficulty > self.config.max_difficulty:
                raise ProtocolError(E.WORK_TOO_HARD, f"difficulty {message.difficulty} is above"
                                                     f" our limit {self.config.max_difficulty}")
            self._nonce, self._solving = message.nonce, True
            me = self.config.identity.node_id
            return [WorkNeeded(message.nonce, message.difficulty, me, self.peer_id)]
        if isinstance(message, m.Welcome) and not self._solving:
            self.contact = message.contact
            return [Established(self.peer_id, self.certificate.identity_der, message.contact,
                                message.observed_host, self.version,
                                self.certificate.link_record)]
        raise ProtocolError(E.UNEXPECTED, f"{type(message).__name__} not expected now")

    def work_done(self, counter: int) -> None:
        if self._solving:
            self._solving = False
            self.send(m.Work(counter))


class AcceptorHandshake:
    def __init__(self, config: SessionConfig, send: Send, context: LinkContext, nonce: bytes,
                 observed_host: str, version: int) -> None:
        self.config, self.send, self.context = config, send, context
        self.nonce, self.observed_host, self.version = nonce, observed_host, version
        self.hello: m.Hello | None = None
        self.difficulty = 0

    @property
    def peer_id(self) -> bytes:
        return self.hello.dialer_id if self.hello is not None else b""

    def on_message(self, message: m.Message) -> list[Event]:
        if isinstance(message, m.Hello) and self.hello is None:
            return self._on_hello(message)
        if isinstance(message, m.Work) and self.hello is not None and self.difficulty:
            # Cheapest check first: the proof of work costs us one hash.
            if not work.verify(self.nonce, self.hello.dialer_id, self.config.identity.node_id,
                               message.work, self.difficulty):
                raise ProtocolError(E.WORK_INSUFFICIENT,
                                    "proof of work does not meet the difficulty")
            self.difficulty = 0
            return self._authenticate(self.hello)
        raise ProtocolError(E.UNEXPECTED, f"{type(message).__name__} not expected now")

    def _on_hello(self, hello: m.Hello) -> list[Event]:
        me = self.config.identity.node_id
        if hello.acceptor_id != me:
            raise ProtocolError(E.WRONG_ID, "this node is not the one you asked for")
        if hello.dialer_id == me:
            raise ProtocolError(E.AUTH_FAILED, "a node cannot link to itself")
        self.hello = hello
        demand = self.config.work_for
        self.difficulty = (demand(hello.dialer_id, hello.link_record) if demand is not None
                           else self.config.difficulty)
        if self.difficulty:
            self.send(m.Challenge(self.nonce, self.difficulty))
            return []
        return self._authenticate(hello)

    def _authenticate(self, hello: m.Hello) -> list[Event]:
        if id_from_spki(hello.public_key) != hello.dialer_id:
            raise ProtocolError(E.AUTH_FAILED, "public key does not hash to the claimed ID")
        record = _check_record(self.config.records, hello.link_record, hello.public_key,
                               self.context.unix_time)
        if not verify_proof(record, hello.signature, self.context.binding, hello.dialer_id,
                            self.config.identity.node_id):
            raise ProtocolError(E.AUTH_FAILED, "bad signature")
        refusal = self.config.admit(hello.dialer_id) if self.config.admit else None
        if refusal is not None:
            raise ProtocolError(E.BUSY, refusal)
        self.send(m.Welcome(self.observed_host[:255], self.config.contact))
        return [Established(hello.dialer_id, hello.public_key, hello.contact, "", self.version,
                            hello.link_record)]
