"""Logging for the daemon: one file (or stderr in --dev), a format with time and module.

Peers choose much of what we log (error texts, names, the requests that make us log), so:
- every line is escaped: control characters, line and paragraph separators and bidi
  controls become `\\xNN`/`\\uNNNN`, so a peer can neither forge a log line nor send
  escape sequences to a terminal; traceback lines are indented under their record;
- lines about one peer (`extra=about_peer(id)`) are rate-limited per peer, with a count
  of what was suppressed;
- the file rotates by size (`log.max_bytes`, `log.backups`), each file created 0600.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from .logfile import PrivateRotatingFileHandler
from .ratelimit import RateLimiter

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
PEER_LINES_PER_SECOND = 1.0     # sustained log lines about one peer
PEER_LINES_BURST = 20.0
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}
# Unicode's categories Cc (controls: C0, DEL, C1), Zl and Zp, which its stability policy fixes
# for good: written out, so that no node loads `unicodedata` (0.1 MiB) to look them up.
_SEPARATORS = {0x2028, 0x2029}


def _needs_escape(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or code in _SEPARATORS or code in _BIDI


def escape(text: str) -> str:
    """`text` with every control, separator and bidi character written as an escape."""
    if text.isprintable():
        return text
    return "".join((f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
                   if _needs_escape(c) else c for c in text)


def about_peer(peer: bytes | str) -> dict[str, Any]:
    """`extra=` for a log call about one peer (an ID or an address): rate-limited per peer."""
    return {"peer": peer.hex() if isinstance(peer, bytes) else peer}


class SafeFormatter(logging.Formatter):
    """One record, one line (plus indented traceback lines), nothing a terminal obeys."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        extra = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            extra.append(self.formatStack(record.stack_info))
        for block in extra:
            line += "".join("\n    | " + escape(part) for part in block.splitlines())
        return line


class PeerLineLimit(logging.Filter):
    """Drops lines about a peer beyond its budget; the next line let through says how many
    were dropped. Records without a `peer` attribute always pass."""

    def __init__(self, rate: float = PEER_LINES_PER_SECOND, burst: float = PEER_LINES_BURST
                 ) -> None:
        super().__init__()
        self._limit = RateLimiter(rate, burst)
        self._dropped: dict[str, int] = {}
        self.dropped_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        peer = getattr(record, "peer", None)
        if not isinstance(peer, str):
            return True
        if not self._limit.allow(peer, time.monotonic()):
            if peer in self._dropped or len(self._dropped) < 10_000:
                self._dropped[peer] = self._dropped.get(peer, 0) + 1
            self.dropped_total += 1
            return False
        dropped = self._dropped.pop(peer, 0)
        if dropped:
            record.msg = f"{record.msg} [{dropped} earlier lines about this peer dropped]"
        return True


def setup_logging(level: str, file: Path | None, dev: bool, max_bytes: int = 10 * 1024 * 1024,
                  backups: int = 3) -> None:
    """Route the `fluxchat` loggers to stderr (dev) or to `file` (rotated at `max_bytes`,
    keeping `backups` old files; 0 turns rotation off)."""
    handler: logging.Handler
    if dev or file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = PrivateRotatingFileHandler(file, max_bytes, backups)
    handler.setFormatter(SafeFormatter(FORMAT))
    handler.addFilter(PeerLineLimit())
    root = logging.getLogger("fluxchat")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
