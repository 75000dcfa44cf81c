"""Logging for the daemon: one file (or stderr in --dev), a format with time and module."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str, file: Path | None, dev: bool) -> None:
    """Route the `fluxchat` loggers to stderr (dev) or to `file`, created 0600."""
    handler: logging.Handler
    if dev or file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        # Logs hold peer addresses and IDs: keep them private like the rest of the data dir.
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        handler = logging.FileHandler(file, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger("fluxchat")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
