"""How much work a peer can make our mail handling do: pure decisions, the caller passes `now`.

Opening an envelope costs an RSA private-key operation, so everything a peer can make us
open is bounded: a drain of one storer takes at most `FETCH_ROUNDS` batches and
`FETCH_BYTES` bytes and stops after a batch without new valid mail; Notify frames coalesce
into at most one fetch per peer per `NOTICE_INTERVAL`; and each peer has a budget of
private-key operations (`PRIVATE_OPS_RATE` per second, bursts of `PRIVATE_OPS_BURST`),
shared by its Deliver requests and the mail we fetch from it; all peers together share the
node's budgets (`NODE_PRIVATE_OPS_RATE`, `NODE_V2_OPENS_RATE`), fairly (fairshare.py).
And the mail a peer hands us is held only so much at a time: `InHand`.
"""

from __future__ import annotations

from dataclasses import field

from .framing import DEFAULT_MAX_PAYLOAD
from .records import mutable_record

FETCH_ROUNDS = 8                   # Fetch requests in one drain of one storer
FETCH_BYTES = 32 * 1024 * 1024     # envelope bytes taken in one drain
NOTICE_INTERVAL = 5.0              # seconds between Notify-triggered fetches from one peer
# RSA-4096 opening takes about 7 ms: 8/s from one peer is under 6% of a core; the burst
# lets an honest peer hand over a burst of 128 mails (or their receipts) at once.
PRIVATE_OPS_RATE = 8.0             # private-key operations per second one peer may cause
PRIVATE_OPS_BURST = 128.0          # ... in a burst
# Envelope v2 costs no RSA work: an HPKE open and an Ed25519 verification, about 0.2 ms
# (0.1 ms when it fails at decryption). Its own budget, so mail keys keep their throughput:
# one peer can make us spend at most about 30% of a core this way.
V2_OPENS_RATE = 2000.0
V2_OPENS_BURST = 4096.0
MAX_REMEMBERED = 4096              # peers whose last notice time we keep
# Envelope bytes of one peer's Deliver and DeliverMany requests we hold between reading and
# answering them: an honest sender has at most two bursts to us in flight (outbox_worker's
# PER_RECIPIENT), each one frame; past this a request is refused unread (InHand).
MAIL_BYTES_IN_HAND = 2 * DEFAULT_MAX_PAYLOAD
# All peers together (fairshare.py), however many identities a crowd uses: v1 opens at most
# 24/s (~17% of a core; the burst takes 256 mails at once), v2 opens no more than one peer
# may cause (a peer alone keeps its full throughput). Under contention the peers that used
# the most wait first, so a newcomer still gets through.
NODE_PRIVATE_OPS_RATE = 24.0
NODE_PRIVATE_OPS_BURST = 256.0
NODE_V2_OPENS_RATE = V2_OPENS_RATE
NODE_V2_OPENS_BURST = V2_OPENS_BURST


@mutable_record
class Drain:
    """One drain of the mail a storer holds for us."""

    limit: int                      # envelopes asked for per Fetch
    max_rounds: int = FETCH_ROUNDS
    max_bytes: int = FETCH_BYTES
    rounds: int = 0
    taken_bytes: int = 0
    out_of_bytes: bool = False

    def admit(self, envelopes: tuple[bytes, ...]) -> tuple[bytes, ...]:
        """The envelopes of one batch we will look at: never more than we asked for, and
        none past the byte budget."""
        self.rounds += 1
        taken: list[bytes] = []
        for envelope in envelopes[: self.limit]:
            if self.taken_bytes + len(envelope) > self.max_bytes:
                self.out_of_bytes = True
                break
            self.taken_bytes += len(envelope)
            taken.append(envelope)
        return tuple(taken)

    def go_on(self, more: bool, new_mail: int, complete: bool) -> bool:
        """Whether to ask for another batch: the storer says there is more, this batch
        brought new valid mail and was handled completely, and the budgets allow it."""
        return (more and new_mail > 0 and complete and self.rounds < self.max_rounds
                and not self.out_of_bytes)


@mutable_record
class NoticeGate:
    """Coalesces Notify frames per peer into at most one fetch per `interval`.

    `notice` says whether the caller must start a fetch worker for the peer; while one is
    waiting, notices add nothing; one arriving while it fetches asks for exactly one more
    round (`finished` returns True), so no notice is lost and none costs more than a flag.
    """

    interval: float = NOTICE_INTERVAL
    _last: dict[bytes, float] = field(default_factory=dict)
    _waiting: set[bytes] = field(default_factory=set)
    _fetching: set[bytes] = field(default_factory=set)
    _again: set[bytes] = field(default_factory=set)

    def notice(self, peer: bytes) -> bool:
        if peer in self._waiting:
            return False
        if peer in self._fetching:
            self._again.add(peer)
            return False
        self._waiting.add(peer)
        return True

    def delay(self, peer: bytes, now: float) -> float:
        """Seconds the worker waits before its fetch."""
        last = self._last.get(peer)
        return 0.0 if last is None else max(0.0, last + self.interval - now)

    def started(self, peer: bytes, now: float) -> None:
        self._waiting.discard(peer)
        self._fetching.add(peer)
        self._last[peer] = now
        if len(self._last) > MAX_REMEMBERED:
            self._last = {p: t for p, t in self._last.items() if now - t < self.interval}

    def finished(self, peer: bytes) -> bool:
        """True when a notice came during the fetch: the worker goes round once more."""
        self._fetching.discard(peer)
        if peer in self._again:
            self._again.discard(peer)
            self._waiting.add(peer)
            return True
        return False

    def abandoned(self, peer: bytes) -> None:
        """The worker ended early (cancelled): forget that it was active."""
        self._waiting.discard(peer)
        self._fetching.discard(peer)
        self._again.discard(peer)


@mutable_record
class InHand:
    """Envelope bytes each peer has in our hands: requests for mail work read but not yet
    answered. A request that waits (an RSA open in a worker thread, a budget) keeps its
    envelopes in memory, and a peer may pipeline up to the link's requests in flight, each
    a frame of up to 2 MiB; this bounds what one peer can make us hold that way. One
    request is always taken, however large, when the peer has none in hand."""

    limit: int = MAIL_BYTES_IN_HAND
    peak: int = 0                    # the most one peer had in hand (for tests)
    _bytes: dict[bytes, int] = field(default_factory=dict)

    def take(self, peer: bytes, size: int) -> bool:
        """Whether a request of `size` envelope bytes from `peer` may be handled now;
        if so it is counted until `release`."""
        held = self._bytes.get(peer, 0)
        if held and held + size > self.limit:
            return False
        self._bytes[peer] = held + size
        self.peak = max(self.peak, held + size)
        return True

    def release(self, peer: bytes, size: int) -> None:
        held = self._bytes.get(peer, 0) - size
        if held > 0:
            self._bytes[peer] = held
        else:
            self._bytes.pop(peer, None)

    def held(self, peer: bytes) -> int:
        return self._bytes.get(peer, 0)
