"""What a link session needs to know: our identity and link key, what we demand of
dialers and what we will pay, timers and per-link budgets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, replace

from .framing import DEFAULT_MAX_PAYLOAD
from .identity import Identity
from .linkkeys import LinkCredentials, RecordCheck
from .records import record


@record
class SessionConfig:
    identity: Identity
    contact: str
    difficulty: int            # bits we demand of dialers we do not know (see work_for)
    max_difficulty: int        # bits we are willing to solve
    handshake_timeout: float = 10.0
    idle_timeout: float = 300.0
    ping_interval: float = 60.0
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_inflight: int = 64     # peer requests we have not answered yet
    max_early_request: int = 4096   # payload bytes of the one request sent with Hello
    # Every frame the peer sends, notices and pings included, spends from this budget
    # (one token, plus one per FRAME_BYTES_PER_TOKEN of payload). A peer in debt is not
    # read from until the budget has refilled: flooding only slows the flooder's own link.
    frame_rate: float = 250.0
    frame_burst: float = 1000.0
    # Acceptor: asked once the dialer has proved its ID, before Welcome; a refusal reason
    # closes the handshake with BUSY, so a dialer never gets a link we would close at once.
    admit: Callable[[bytes], str | None] | None = None
    # Our link key record and its private key (linkkeys.py); needed to dial or accept.
    link: LinkCredentials | None = None
    # Link key records already verified (shared by the sessions of one node).
    records: RecordCheck = field(default_factory=RecordCheck)
    # Acceptor: the difficulty to demand of a dialer claiming (ID, link record), asked
    # before anything of the dialer's is verified. None: always `difficulty`.
    work_for: Callable[[bytes, bytes], int] | None = None

    def opened(self) -> SessionConfig:
        """What an open link still needs: without the acceptor's callbacks, which hold the
        handshake's context (the dialer's address, the node's admission state)."""
        if self.admit is None and self.work_for is None:
            return self
        return replace(self, admit=None, work_for=None)
