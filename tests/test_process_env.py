"""How a node process runs (fluxchat/process_env.py): the GLIBC_TUNABLES value, and the
restart with the interpreter options, checked in real child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
from pathlib import Path

from fluxchat.process_env import NO_LEGACY, TUNABLES, on_glibc, with_threshold

SRC = Path(__file__).resolve().parent.parent / "src"
# What a process that called run_as_node() runs with, as JSON on stdout.
REPORT = """
import json, os, sys
from fluxchat.process_env import run_as_node
run_as_node()
def documented():
    "a docstring"
print(json.dumps({"argv": sys.orig_argv, "optimize": sys.flags.optimize, "doc": documented.__doc__,
                  "xoptions": sorted(sys._xoptions), "tunables": os.environ.get("GLIBC_TUNABLES"),
                  "no_legacy": os.environ.get("CRYPTOGRAPHY_OPENSSL_NO_LEGACY"),
                  "columns": next(iter(documented.__code__.co_positions()))[2]}))
"""


def run_report(env: dict[str, str], *options: str) -> dict[str, object]:
    env = dict(env, PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, *options, "-c", REPORT], env=env, capture_output=True,
                          text=True, timeout=30, check=True)
    report: dict[str, object] = json.loads(done.stdout)
    return report


class WithThresholdTest(unittest.TestCase):
    def test_added_to_nothing_or_beside_other_tunables(self) -> None:
        self.assertEqual(with_threshold(""), "glibc.malloc.mmap_threshold=131072")
        self.assertEqual(with_threshold("glibc.malloc.arena_max=2"),
                         "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072")

    def test_a_threshold_set_by_the_user_stays(self) -> None:
        self.assertIsNone(with_threshold("glibc.malloc.mmap_threshold=65536"))
        self.assertIsNone(with_threshold("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=0"))


class RunAsNodeTest(unittest.TestCase):
    def setUp(self) -> None:
        self.env = {name: value for name, value in os.environ.items()
                    if name not in (TUNABLES, NO_LEGACY, "PYTHONOPTIMIZE", "PYTHONNODEBUGRANGES")}

    def test_restarts_once_without_docstrings_or_column_ranges(self) -> None:
        report = run_report(self.env)
        self.assertEqual(report["optimize"], 2)
        self.assertEqual(report["argv"][1:4], ["-OO", "-X", "no_debug_ranges"])   # type: ignore[index]
        self.assertEqual(report["argv"].count("-OO"), 1)   # type: ignore[attr-defined]
        self.assertIsNone(report["doc"])
        self.assertIn("no_debug_ranges", report["xoptions"])   # type: ignore[operator]
        self.assertIsNone(report["columns"])
        self.assertEqual(report["no_legacy"], "1")
        if on_glibc():
            self.assertEqual(report["tunables"], "glibc.malloc.mmap_threshold=131072")

    def test_what_the_user_set_stays(self) -> None:
        env = dict(self.env, **{TUNABLES: "glibc.malloc.mmap_threshold=65536", NO_LEGACY: "0"})
        report = run_report(env, "-OO", "-X", "no_debug_ranges")
        self.assertEqual((report["tunables"], report["no_legacy"]),
                         ("glibc.malloc.mmap_threshold=65536", "0"))
        self.assertEqual(report["optimize"], 2)

    def test_options_given_by_the_environment_count(self) -> None:
        """Started as a node should run already: no second start (the options stay once)."""
        env = dict(self.env, PYTHONOPTIMIZE="2", PYTHONNODEBUGRANGES="1",
                   **{TUNABLES: "glibc.malloc.mmap_threshold=131072"})
        report = run_report(env)
        self.assertEqual(report["optimize"], 2)
        self.assertNotIn("-OO", report["argv"])   # type: ignore[operator]


# Frees 38 of 40 MB of blocks on the heap (under the mmap threshold), keeping one in 20 so the
# free pages lie between blocks in use: free() alone cannot give them back, the trim can.
TRIM = """
import json, sys
from fluxchat.process_env import return_free_heap
def rss():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1])
blocks = [bytes(2000) for _ in range(20_000)]
kept = blocks[::20]
del blocks
before = rss()
return_free_heap()
return_free_heap()
print(json.dumps({"kib_back": before - rss(), "ctypes": "_ctypes" in sys.modules}))
"""


def run_trim(first: str = "") -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", first + TRIM], env=dict(os.environ, PYTHONPATH=str(SRC)),
                          capture_output=True, text=True, timeout=30, check=True)
    report: dict[str, int] = json.loads(done.stdout)
    return report


@unittest.skipUnless(on_glibc(), "malloc_trim is glibc's")
class ReturnFreeHeapTest(unittest.TestCase):
    def test_free_pages_between_live_blocks_go_back_without_ctypes(self) -> None:
        report = run_trim()
        self.assertGreater(report["kib_back"], 20_000)
        self.assertFalse(report["ctypes"])

    def test_without_cffi_ctypes_does_it(self) -> None:
        report = run_trim("import sys; sys.modules['_cffi_backend'] = None\n")   # import fails
        self.assertGreater(report["kib_back"], 20_000)
        self.assertTrue(report["ctypes"])

if __name__ == "__main__":
    unittest.main()
