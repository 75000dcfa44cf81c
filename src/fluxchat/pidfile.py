"""A pid file that doubles as an instance lock for one data directory."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import FluxError


class AlreadyRunning(FluxError):
    """Another node process holds the data directory."""


class PidFile:
    """Holds an exclusive flock on `path` while the node runs.

    The lock, not the pid inside, decides: the kernel drops it when the process dies, so
    a pid file left by a crash is simply taken over.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise AlreadyRunning(
                f"another node (pid {other}) is running on {self.path.parent}; "
                "stop it first (bin/stop.sh) or use another config") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None
