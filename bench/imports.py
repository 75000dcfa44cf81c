#!/usr/bin/env python3
"""Memory each module imported by server_app.py holds, exclusive of the modules it imports.

A fresh interpreter, started as a node starts (`-OO -X no_debug_ranges`, the variables of
`process_env.py`), puts a finder in front of `sys.meta_path` that wraps each module's loader: from
the moment the loader creates the module (an extension module's shared library is mapped then)
to the end of its execution, it reads the process's RSS and, in a second interpreter run with
`tracemalloc` on, the bytes of Python objects allocated and still alive. What the modules a
module imports during its own execution add is subtracted, so each figure is the module's own:
its code objects, functions, classes, tables, and, for an extension, the library pages its
loading touched. `by` is the module whose execution imported it first (who to ask why it is
there).

RSS counts whole pages, and Python's allocator takes memory in 256 KiB arenas whose pages are
touched as objects fill them, so a module's RSS figure is rounded to pages and may carry a
neighbour's crumbs; the traced bytes are exact but leave out what C code mallocs (OpenSSL,
SQLite) and the pages of shared libraries. Read both. The modules are compiled first (`-OO`
bytecode in `__pycache__`, as `bin/setup.sh` leaves it), so no compiler garbage counts.

Usage: python3 bench/imports.py [--top N] [--entry MODULE] [--sort rss|traced] [--json]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from bench.lablib import print_table  # noqa: E402
from fluxchat.process_env import INTERPRETER_OPTIONS, NO_LEGACY  # noqa: E402

# Runs in the measured interpreter: nothing imported before the entry point but what every
# interpreter has loaded already (os, sys, and the C part of tracemalloc).
_CHILD = r"""
import os, sys, _tracemalloc
TRACE = sys.argv[1] == "traced"
if TRACE:
    _tracemalloc.start()

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE

PAGE = os.sysconf("SC_PAGE_SIZE")
def now():
    return _tracemalloc.get_traced_memory()[0] if TRACE else rss()

records, stack = {}, []
# Interned strings live in one table that doubles as it fills: hundreds of KiB charged to whichever
# module happens to add the string that tips it. Filled up front, it does not grow while measured.
PADDING = [sys.intern(f"_padding_{n}") for n in range(150_000)]

class Measured:
    def __init__(self, loader, name):
        self._loader, self._name = loader, name
    def __getattr__(self, attr):
        return getattr(self._loader, attr)
    def create_module(self, spec):
        stack.append([self._name, now(), 0])   # name, start, children's inclusive total
        return self._loader.create_module(spec)
    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        finally:
            name, start, children = stack.pop()
            total = now() - start
            records[name] = {"total": total, "own": total - children,
                             "by": stack[-1][0] if stack else None}
            if stack:
                stack[-1][2] += total

class Finder:
    @staticmethod
    def find_spec(name, path=None, target=None):
        for finder in sys.meta_path:
            if finder is Finder or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = Measured(spec.loader, name)
                return spec
        return None

sys.meta_path.insert(0, Finder)
base = now()
__import__(sys.argv[2])
total = now() - base
import json
print(json.dumps({"records": records, "total": total}))
"""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    env[NO_LEGACY] = "1"
    return env


def measure(entry: str, how: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, *INTERPRETER_OPTIONS, "-c", _CHILD, how, entry], env=child_env(),
                          check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=40, help="modules to print (default 40)")
    parser.add_argument("--entry", default="server_app", help="module imported (default server_app)")
    parser.add_argument("--sort", choices=["rss", "traced"], default="rss", help="order of the table")
    parser.add_argument("--json", action="store_true", help="print every module as JSON instead")
    args = parser.parse_args()
    compileall.compile_dir(str(ROOT / "src"), quiet=1, optimize=2)
    measure(args.entry, "rss")   # once unmeasured: any bytecode not yet cached is written now
    rss, traced = measure(args.entry, "rss"), measure(args.entry, "traced")
    names = sorted(set(rss["records"]) | set(traced["records"]))
    rows = {name: {"rss": rss["records"].get(name, {}).get("own", 0) / 1024,
                   "traced": traced["records"].get(name, {}).get("own", 0) / 1024,
                   "rss_total": rss["records"].get(name, {}).get("total", 0) / 1024,
                   "by": rss["records"].get(name, {}).get("by") or ""} for name in names}
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    ours = [row for name, row in rows.items() if name.startswith("fluxchat") or name == args.entry]
    print(f"{len(rows)} modules imported by {args.entry} ({len(ours)} ours) under "
          f"{' '.join(INTERPRETER_OPTIONS)}: RSS +{rss['total'] / 2**20:.2f} MiB, Python objects "
          f"+{traced['total'] / 2**20:.2f} MiB (ours: {sum(r['rss'] for r in ours) / 1024:.2f} MiB RSS, "
          f"{sum(r['traced'] for r in ours) / 1024:.2f} MiB objects)")
    top = sorted(rows.items(), key=lambda item: -item[1][args.sort])[:args.top]
    if not top:
        return
    print_table(f"Top {len(top)} modules by their own {args.sort} (KiB; without the modules they import)",
                ["module", "RSS KiB", "objects KiB", "RSS with imports", "imported by"],
                [[name, round(r["rss"]), round(r["traced"]), round(r["rss_total"]), r["by"]] for name, r in top])


if __name__ == "__main__":
    main()
