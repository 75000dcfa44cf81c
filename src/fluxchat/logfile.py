"""The log file: rotated by size, every file created 0600 (logs hold peer addresses and IDs).

It rotates like `logging.handlers.RotatingFileHandler` (at `max_bytes` the file becomes NAME.1,
NAME.1 becomes NAME.2, ... up to `backups`; either one 0 means the file only grows), but is
built on `logging.FileHandler`: the `logging.handlers` module brings `pickle` and `queue` with
their C modules, 0.6 MiB in every node process for good (bench/rss.py), for a few lines.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any


class PrivateRotatingFileHandler(logging.FileHandler):
    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.max_bytes, self.backups = max_bytes, backups

    def _open(self) -> Any:
        os.close(os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        return super()._open()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._full_with(record):
                self._rotate()
        except Exception:   # as logging does: a failing log never takes the caller down
            self.handleError(record)
            return
        super().emit(record)

    def _full_with(self, record: logging.LogRecord) -> bool:
        if self.max_bytes <= 0 or self.backups <= 0:
            return False
        if self.stream is None:
            self.stream = self._open()
        self.stream.seek(0, os.SEEK_END)
        return bool(self.stream.tell() + len(self.format(record)) + 1 >= self.max_bytes)

    def _rotate(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None
        base = self.baseFilename
        for index in range(self.backups - 1, 0, -1):
            if os.path.exists(f"{base}.{index}"):
                os.replace(f"{base}.{index}", f"{base}.{index + 1}")
        if os.path.exists(base):
            os.replace(base, f"{base}.1")
        self.stream = self._open()
