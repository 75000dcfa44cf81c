"""glibc's malloc for a long-running node: big buffers mapped on their own and unmapped when freed.

glibc serves a request of 128 KiB or more with its own mmap, which free() hands straight back
to the system; but the first time it frees such a block it raises that threshold to the
block's size (up to 32 MiB), so from then on big buffers come from the heap, whose free space
goes back only from its top. A mail of 900 kB passes through a dozen such buffers (the local
API's line, the encrypted envelope, frames, SQLite's blob): a node that sent three kept about
9 MiB more for good, the one that received them 7 (bench/rss.py --big). With the threshold
fixed at 128 KiB (glibc's own starting value; fixing it stops the raising) they kept 1.7 and
0.9 MiB.

The threshold is a glibc tunable, read once when a process starts, so `server_app.py` sets it
in its environment and executes itself again before it imports anything heavy: same process
id, about 20 ms more at start, and only when the environment does not name the threshold
already, so it happens once. (ctypes' mallopt would set it in the running process, but
importing ctypes costs every node 0.25 MiB.) Elsewhere than on glibc Linux nothing happens.
Standard library only.
"""

from __future__ import annotations

import os
import sys

TUNABLES = "GLIBC_TUNABLES"
MMAP_THRESHOLD = "glibc.malloc.mmap_threshold"
THRESHOLD_BYTES = 128 * 1024


def with_threshold(tunables: str) -> str | None:
    """GLIBC_TUNABLES with our mmap threshold added; None if it names one already."""
    items = [item for item in tunables.split(":") if item]
    if any(item.partition("=")[0] == MMAP_THRESHOLD for item in items):
        return None
    return ":".join([*items, f"{MMAP_THRESHOLD}={THRESHOLD_BYTES}"])


def on_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):   # not a glibc system
        return False


def map_big_buffers() -> None:
    """Return if the threshold is set (or this is not glibc); else execute this process again
    with it set. Call first thing in an entry point's `__main__`."""
    tunables = with_threshold(os.environ.get(TUNABLES, ""))
    if tunables is None or not on_glibc():
        return
    os.environ[TUNABLES] = tunables
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
