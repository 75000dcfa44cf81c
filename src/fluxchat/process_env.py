"""How a node process runs: glibc's malloc, the interpreter's options, cryptography's providers.

A node is one long-running process, and a machine may run hundreds of them (bench/procnet.py),
so every MiB a process keeps counts many times. Three settings that can only be made before
the interpreter starts (or before a library loads) are made here, by `server_app.py` (and
`fluxchat node`), which executes itself again with them before it imports anything heavy: same process id, about
20 ms more at start, and only once (the second start finds them made).

- glibc's mmap threshold, fixed at 128 KiB (`GLIBC_TUNABLES`). glibc serves a request of
  128 KiB or more with its own mmap, which free() hands straight back to the system; but the
  first time it frees such a block it raises that threshold to the block's size (up to
  32 MiB), so from then on big buffers come from the heap, whose free space goes back only
  from its top. A mail of 900 kB passes through a dozen such buffers (the local API's line,
  the encrypted envelope, frames, SQLite's blob): a node that sent three kept about 9 MiB
  more for good, the one that received them 7 (bench/rss.py --big); with the threshold fixed
  (glibc's own starting value; fixing it stops the raising) 1.7 and 0.9 MiB. (ctypes'
  mallopt would set it in the running process, but importing ctypes costs 0.25 MiB.)
- `-OO`: no docstrings in memory (and no `assert`s, which in our code only narrow types for
  mypy). `-X no_debug_ranges`: code objects keep line numbers but not the column ranges
  that mark the failing expression under a traceback's source line. Together 0.9 MiB of the
  Python objects every node holds (bench/README.md, "Memory per node").
- `CRYPTOGRAPHY_OPENSSL_NO_LEGACY`: cryptography loads OpenSSL's legacy provider (Blowfish,
  CAST5, RC4, ...) unless this is set; a node uses none of them (0.16 MiB).

And one thing is done while it runs: `return_free_heap`, after SQLite gave back its page cache
(Store.release_memory), hands the heap's free pages back to the system.

A setting already made by the user stays as it is (another mmap threshold, the variable set
to something else). The malloc tunable applies on glibc Linux only. Standard library only, but for
the trim (cffi's C module, which cryptography loads anyway).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

TUNABLES = "GLIBC_TUNABLES"
MMAP_THRESHOLD = "glibc.malloc.mmap_threshold"
THRESHOLD_BYTES = 128 * 1024
INTERPRETER_OPTIONS = ("-OO", "-X", "no_debug_ranges")
NO_LEGACY = "CRYPTOGRAPHY_OPENSSL_NO_LEGACY"


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


def has_lean_options() -> bool:
    """Does this interpreter run without docstrings and without column ranges?"""
    no_ranges = "no_debug_ranges" in sys._xoptions or bool(os.environ.get("PYTHONNODEBUGRANGES"))
    return sys.flags.optimize >= 2 and no_ranges


def run_as_node() -> None:
    """Return if this process runs with the settings above; else make them and execute it
    again. Call first thing in an entry point's `__main__`."""
    os.environ.setdefault(NO_LEGACY, "1")   # read when cryptography loads: no restart needed
    tunables = with_threshold(os.environ.get(TUNABLES, "")) if on_glibc() else None
    # The options count as made once we have asked for them: an interpreter that takes them
    # but does not show them must not start itself again and again.
    asked = sys.orig_argv[1:1 + len(INTERPRETER_OPTIONS)] == list(INTERPRETER_OPTIONS)
    if tunables is None and (asked or has_lean_options()):
        return
    if tunables is not None:
        os.environ[TUNABLES] = tunables
    os.execv(sys.executable, [sys.executable, *INTERPRETER_OPTIONS, *sys.orig_argv[1:]])


def return_free_heap() -> None:
    """Hand the free pages inside glibc's heaps back to the system (malloc_trim).

    free() gives memory back only from the top of the heap; a burst of mail leaves SQLite's
    page cache and the frames' and envelopes' buffers interleaved in it, so what they free
    stays resident until this. Not glibc: nothing to do."""
    if on_glibc():
        _malloc_trim()(0)


_trim: Callable[[int], object] | None = None


def _malloc_trim() -> Callable[[int], object]:
    """glibc's malloc_trim, looked up the first time (not at start: an idle node never
    calls it). Through cffi's C module, which `cryptography` has loaded already (its Rust
    bindings import it), at the ABI level: one function type, no C compiler, no parser.
    The `ctypes` package instead costs 0.32 MiB RSS, its C module `_ctypes` alone 0.18
    (their code pages and classes); this, 12 KiB (bench/README.md, "Memory after work").
    Without cffi (or should its backend ever change under us), ctypes does the same."""
    global _trim
    if _trim is None:
        try:
            import _cffi_backend as cffi  # type: ignore[import-untyped]  # no stubs (types-cffi)

            size_t = cffi.new_primitive_type("size_t")
            signature = cffi.new_function_type((size_t,), cffi.new_primitive_type("int"), False)
            _trim = cffi.load_library(None).load_function(signature, "malloc_trim")
        except (ImportError, AttributeError, TypeError, OSError):
            import ctypes

            _trim = ctypes.CDLL(None).malloc_trim
    return _trim
