"""Iterative Kademlia lookup as a pure state machine.

The node asks `next_queries()` whom to send FIND_NODE / FIND_VALUE to, performs the RPCs, and
feeds each outcome back with `on_reply`, `on_failure` or `on_value`, until `done`. A query that
takes longer than usual (`QueryTimes.slow_after`) is reported with `on_slow`: it gives up its
place among the alpha in flight, so a dead or distant peer no longer holds the lookup back,
while its answer, should it come, still counts.
"""

from __future__ import annotations

import bisect
import enum

from .ids import ID_BYTES
from .records import mutable_record
from .routing import K, Peer

ALPHA = 3


class _State(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in_flight"
    SLOW = "slow"            # still awaited, but no longer counted against alpha
    ANSWERED = "answered"
    FAILED = "failed"


@mutable_record
class _Candidate:
    peer: Peer
    depth: int  # hop count: seeds are 1, a peer learned from a depth-d reply is d + 1
    state: _State = _State.NEW


class Lookup:
    def __init__(
        self,
        target: bytes,
        own_id: bytes,
        seeds: list[Peer],
        k: int = K,
        alpha: int = ALPHA,
        want_value: bool = False,
    ) -> None:
        if len(target) != ID_BYTES:
            raise ValueError(f"target must have {ID_BYTES} bytes")
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be >= 1")
        self.target = target
        self.own_id = own_id
        self.k = k
        self.alpha = alpha
        self.want_value = want_value
        self._goal = int.from_bytes(target, "big")
        self._candidates: dict[bytes, _Candidate] = {}
        self._order: list[tuple[int, bytes]] = []  # (distance, id), closest first
        self._found = False
        self._value: object = None
        self._rpc_count = 0
        self._rounds = 0
        for seed in seeds:
            self._learn(seed, depth=1)

    # ---- candidate bookkeeping ------------------------------------------------------

    def _learn(self, peer: Peer, depth: int) -> None:
        node_id = peer.node_id
        if not isinstance(node_id, bytes) or len(node_id) != ID_BYTES or node_id == self.own_id:
            return
        if node_id in self._candidates:
            return  # first address wins: the TLS pin, not the reply, decides who is real
        self._candidates[node_id] = _Candidate(peer, depth)
        bisect.insort(self._order, (int.from_bytes(node_id, "big") ^ self._goal, node_id))

    def _window(self) -> list[_Candidate]:
        """The k closest candidates that have not failed: the set the lookup must settle."""
        window = []
        for _, node_id in self._order:
            candidate = self._candidates[node_id]
            if candidate.state is not _State.FAILED:
                window.append(candidate)
                if len(window) == self.k:
                    break
        return window

    def _in_flight(self) -> int:
        return sum(1 for c in self._candidates.values() if c.state is _State.IN_FLIGHT)

    # ---- driving the lookup ---------------------------------------------------------

    @property
    def done(self) -> bool:
        if self._found:
            return True
        settled = (_State.ANSWERED, _State.FAILED)
        return all(c.state in settled for c in self._window())

    def next_queries(self) -> list[Peer]:
        """Peers to query now, closest first, keeping at most alpha RPCs in flight."""
        if self.done:
            return []
        slots = self.alpha - self._in_flight()
        chosen: list[Peer] = []
        for candidate in self._window():
            if len(chosen) >= slots:
                break
            if candidate.state is _State.NEW:
                candidate.state = _State.IN_FLIGHT
                self._rpc_count += 1
                self._rounds = max(self._rounds, candidate.depth)
                chosen.append(candidate.peer)
        return chosen

    def _settle(self, node_id: bytes, state: _State) -> _Candidate | None:
        """Record the outcome of an RPC we sent; anything else (unsolicited, repeated) is ignored."""
        candidate = self._candidates.get(node_id)
        if candidate is None or candidate.state not in (_State.IN_FLIGHT, _State.SLOW):
            return None
        candidate.state = state
        return candidate

    def on_reply(self, node_id: bytes, peers: list[Peer]) -> None:
        was_done = self.done
        candidate = self._settle(node_id, _State.ANSWERED)
        if candidate is None or was_done:
            return  # a late reply must not reopen a finished lookup
        for peer in peers[: self.k]:  # a reply longer than k is padding an attacker chose
            self._learn(peer, candidate.depth + 1)

    def on_slow(self, node_id: bytes) -> None:
        """The query to node_id is taking long: another candidate may be asked meanwhile."""
        candidate = self._candidates.get(node_id)
        if candidate is not None and candidate.state is _State.IN_FLIGHT:
            candidate.state = _State.SLOW

    def on_failure(self, node_id: bytes) -> None:
        """Timeout or error: the node drops out and the next closest takes its place."""
        self._settle(node_id, _State.FAILED)

    def on_value(self, node_id: bytes, value: object) -> None:
        """A queried node returned the value; the caller has already verified it (e.g. the
        key hashes to the ID), otherwise it should report `on_failure` instead."""
        if self._settle(node_id, _State.ANSWERED) is None:
            return
        if self.want_value and not self._found:
            self._found = True
            self._value = value

    # ---- outcome --------------------------------------------------------------------

    def result(self) -> list[Peer]:
        """The k closest nodes that answered, closest first."""
        answered = (self._candidates[i] for _, i in self._order)
        return [c.peer for c in answered if c.state is _State.ANSWERED][: self.k]

    @property
    def value(self) -> object:
        return self._value

    @property
    def found(self) -> bool:
        return self._found

    @property
    def queried(self) -> frozenset[bytes]:
        return frozenset(i for i, c in self._candidates.items() if c.state is not _State.NEW)

    @property
    def rpc_count(self) -> int:
        return self._rpc_count

    @property
    def rounds(self) -> int:
        return self._rounds


class QueryTimes:
    """How long lookup queries take here (pure: the caller measures and reports them), and
    from that, when one counts as slow: `factor` times the median of the last `window` that
    answered, kept between `floor` and `cap` (the hard per-query timeout). Queries over an
    open link and those that must set a link up first are timed apart: the second pay the
    link's handshake round trips."""

    def __init__(self, cap: float, floor: float = 0.25, factor: float = 2.0,
                 window: int = 32) -> None:
        self.cap, self.floor, self.factor, self.window = cap, floor, factor, window
        self._recent: dict[bool, list[float]] = {True: [], False: []}

    def record(self, linked: bool, seconds: float) -> None:
        recent = self._recent[linked]
        recent.append(seconds)
        if len(recent) > self.window:
            del recent[0]

    def slow_after(self, linked: bool) -> float:
        recent = sorted(self._recent[linked])
        if not recent:
            return self.cap      # nothing measured yet: wait as long as the timeout
        median = recent[len(recent) // 2]
        return min(self.cap, max(self.floor, self.factor * median))
